"""Learning-rate search: one trial function, a Bayesian search with
scikit-optimize and a grid (one Snakemake job per point), and the choice.

A trial trains a fresh model at one learning rate for a short budget (epochs,
share of the train split) with the final training's own code, and scores it
by its lowest val loss. The test split is never read here.

The Bayesian search writes each finished trial to a table as it goes; rerun
after an interruption, it replays those trials into the optimizer, in order,
and asks only for the missing ones. Because skopt's initial points come from
a seeded design (``lhs``, ``sobol``, ...) and every later proposal follows from
the trials told so far, a resumed search proposes what an uninterrupted one
would have.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .intervals import group_codes
from .provenance import read_json_state, write_json_atomic
from .settings import with_defaults
from .tables import read_tsv, write_tsv

log = logging.getLogger(__name__)

TRIAL_COLUMNS = ["trial", "lr", "val_loss", "val_accuracy", "epoch", "seconds"]
# The score a diverged trial (NaN loss) reports to the optimizer.
DIVERGED_SCORE = 1e3


@dataclass(frozen=True)
class SearchSettings:
    """The ``search`` section of the config, as the trials and the Bayesian
    search use it."""

    low: float
    high: float
    epochs: int
    train_fraction: float
    n_calls: int
    n_initial_points: int
    acq_func: str
    initial_point_generator: str

    @classmethod
    def from_config(cls, section: dict) -> SearchSettings:
        """From a (partial) search section; defaults from config/schema.yaml."""
        values = with_defaults("search", section)
        settings = cls(
            low=float(values["low"]),
            high=float(values["high"]),
            epochs=int(values["epochs"]),
            train_fraction=float(values["train_fraction"]),
            **values["bayes"],
        )
        if not 0 < settings.low < settings.high:
            raise ValueError(
                f"search.low ({settings.low}) must be positive and below search.high "
                f"({settings.high})"
            )
        if settings.n_initial_points > settings.n_calls:
            raise ValueError(
                f"search.bayes n_initial_points ({settings.n_initial_points}) exceeds "
                f"n_calls ({settings.n_calls})"
            )
        return settings


Trial = Callable[[float], dict]


def score(row: dict) -> float:
    """What the optimizer minimises: the trial's lowest val loss."""
    value = float(row["val_loss"])
    return value if math.isfinite(value) else DIVERGED_SCORE


def make_optimizer(settings: SearchSettings, seed: int):
    from skopt import Optimizer
    from skopt.space import Real

    return Optimizer(
        [Real(settings.low, settings.high, prior="log-uniform", name="lr")],
        base_estimator="GP",
        n_initial_points=settings.n_initial_points,
        initial_point_generator=settings.initial_point_generator,
        acq_func=settings.acq_func,
        random_state=seed,
    )


def _fingerprint(settings: SearchSettings, seed: int, context: dict) -> dict:
    return {"seed": seed, **asdict(settings), **context}


def bayes_search(
    trial: Trial,
    settings: SearchSettings,
    seed: int,
    work_dir: str | os.PathLike,
    context: dict | None = None,
) -> pd.DataFrame:
    """Bayesian optimisation of the learning rate over [low, high] (log-uniform).

    ``work_dir/trials.tsv`` collects finished trials as they finish; with a
    matching ``work_dir/trials.json`` (settings, seed and ``context``: what
    the trials depend on) an interrupted search continues from them. The
    folder is removed once the search has finished.
    """
    work_dir = Path(work_dir)
    trials_tsv, state = work_dir / "trials.tsv", work_dir / "trials.json"
    fingerprint = json.loads(json.dumps(_fingerprint(settings, seed, context or {}), default=str))
    done = _finished_trials(trials_tsv) if read_json_state(state) == fingerprint else None
    if done is not None:
        log.info("resuming the Bayesian search after %d finished trials", len(done))
    else:
        if work_dir.exists():
            log.warning("%s holds a search of other settings or data: starting afresh", work_dir)
            shutil.rmtree(work_dir)
        work_dir.mkdir(parents=True)
        write_json_atomic(state, fingerprint)
        done = pd.DataFrame(columns=TRIAL_COLUMNS)
        write_tsv(done, trials_tsv)
    opt = make_optimizer(settings, seed)
    # Replay one at a time, in order: the optimizer ends in the state it had.
    for row in done.to_dict("records"):
        opt.tell([float(row["lr"])], score(row))
    rows = done.to_dict("records")
    while len(rows) < settings.n_calls:
        (lr,) = opt.ask()
        k = len(rows) + 1
        log.info("trial %d/%d: lr %.3g", k, settings.n_calls, lr)
        result = {"trial": k, **trial(float(lr))}
        opt.tell([float(lr)], score(result))
        rows.append(result)
        write_tsv(pd.DataFrame(rows, columns=TRIAL_COLUMNS), trials_tsv)
        log.info(
            "trial %d: val loss %.4f, val accuracy %.4f, %.0f s",
            k,
            result["val_loss"],
            result["val_accuracy"],
            result["seconds"],
        )
    shutil.rmtree(work_dir)
    return pd.DataFrame(rows, columns=TRIAL_COLUMNS)


def _finished_trials(path: Path) -> pd.DataFrame | None:
    """The trials an interrupted search finished, or None (with a warning)
    when the table is missing or not one this search wrote."""
    try:
        table = read_tsv(path)
    except (OSError, ValueError) as err:
        log.warning("%s cannot be read (%s): the search starts afresh", path, err)
        return None
    if list(table.columns) != TRIAL_COLUMNS:
        log.warning("%s is not a table of finished trials: the search starts afresh", path)
        return None
    # A diverged trial's loss is empty (NaN); every other field is a number.
    table = table.apply(pd.to_numeric, errors="coerce")
    whole = table[["trial", "lr", "epoch", "seconds"]].notna().all(axis=1)
    if not whole.all() or table["trial"].tolist() != list(range(1, len(table) + 1)):
        log.warning("%s holds a trial cut short: the search starts afresh", path)
        return None
    return table


def gather_grid(point_files: list[str | os.PathLike]) -> pd.DataFrame:
    rows = []
    for path in point_files:
        with open(path, encoding="utf-8") as f:
            rows.append(json.load(f))
    table = pd.DataFrame(rows).sort_values("lr").reset_index(drop=True)
    table.insert(0, "trial", np.arange(1, len(table) + 1))
    return table[TRIAL_COLUMNS]


def choose(tables: dict[str, pd.DataFrame]) -> dict:
    """The trial with the lowest val loss over every search (ties: higher
    val accuracy, then the smaller rate)."""
    candidates = []
    for search, table in tables.items():
        for row in table.to_dict("records"):
            if math.isfinite(float(row["val_loss"])):
                candidates.append(
                    (
                        float(row["val_loss"]),
                        -float(row["val_accuracy"]),
                        float(row["lr"]),
                        search,
                        row,
                    )
                )
    if not candidates:
        raise ValueError(
            "every learning-rate trial diverged (NaN loss); lower search.high or search.low"
        )
    val_loss, _, lr, search, row = min(candidates, key=lambda c: c[:3])
    return {
        "lr": lr,
        "search": search,
        "val_loss": val_loss,
        "val_accuracy": float(row["val_accuracy"]),
        "trial": int(row["trial"]),
        "trials": {name: len(t) for name, t in tables.items()},
        "scored_on": "val",
    }


# How many of the best trials the noise check compares, and the z of a 95% interval.
NOISE_TRIALS = 3
Z95 = 1.96


def validation_noise(tables: dict[str, pd.DataFrame], val_groups, best: int = NOISE_TRIALS) -> dict:
    """How far apart the ``best`` trials (lowest val loss, over every search)
    are, against the noise of the val split they were scored on.

    A trial keeps no per-clip results, so the noise is the standard error of
    a val accuracy p: sqrt(p(1-p)/n) with n the val clips if clips were
    independent, and with n the val source videos (``val_groups``: one entry
    per val clip) if a video's clips are right or wrong together, as they
    largely are. The latter, the larger, is the one used: two trials' val
    accuracies differ by chance by up to 1.96 x sqrt(2) of it (95%). p is
    the best trials' mean accuracy, shrunk as (x + 2) / (n + 4) so that a
    perfect or a zero score does not give a noise of 0."""
    rows = [
        {"search": name, **row}
        for name, table in tables.items()
        for row in table.to_dict("records")
        if math.isfinite(float(row["val_loss"]))
    ]
    rows.sort(key=lambda r: (float(r["val_loss"]), -float(r["val_accuracy"]), float(r["lr"])))
    top = rows[:best]
    clips = len(val_groups)
    videos = int(group_codes(val_groups, clips).max() + 1)
    accuracy = np.array([float(r["val_accuracy"]) for r in top])

    def se(n: int) -> float:
        p = (accuracy.mean() * n + 2) / (n + 4)
        return float(np.sqrt(p * (1 - p) / n))

    margin = Z95 * np.sqrt(2) * se(videos)
    spread = float(accuracy.max() - accuracy.min())
    within = spread < margin
    rates = ", ".join(f"{float(r['lr']):.3g}" for r in top)
    if len(top) < 2:
        sentence = "Only one trial finished: there is nothing to compare it with."
    elif within:
        sentence = (
            f"The best {len(top)} rates ({rates}) are within the validation noise: their val "
            f"accuracies span {spread:.3f}, less than the {margin:.3f} by which two accuracies "
            f"on these {videos} val source videos differ by chance (95%)."
        )
    else:
        sentence = (
            f"The best {len(top)} rates ({rates}) are not all within the validation noise: "
            f"their val accuracies span {spread:.3f}, more than the {margin:.3f} by which two "
            f"accuracies on these {videos} val source videos differ by chance (95%)."
        )
    return {
        "val_clips": clips,
        "val_groups": videos,
        "accuracy_se": round(se(videos), 4),
        "accuracy_se_clips": round(se(clips), 4),
        "chance_difference": round(float(margin), 4),
        "best": [
            {
                "lr": float(r["lr"]),
                "search": r["search"],
                "val_loss": float(r["val_loss"]),
                "val_accuracy": float(r["val_accuracy"]),
            }
            for r in top
        ],
        "accuracy_spread": round(spread, 4),
        "spread_in_se": round(spread / se(videos), 2),
        "within_noise": bool(within and len(top) > 1),
        "sentence": sentence,
    }


def resolve_lr(train_section: dict, best_lr_json: str | os.PathLike | None) -> dict:
    """The train section with ``lr: auto`` replaced by the searches' choice."""
    if train_section["lr"] != "auto":
        return dict(train_section)
    with open(best_lr_json, encoding="utf-8") as f:
        chosen = json.load(f)
    log.info(
        "lr auto: %g, chosen by the %s search (val loss %.4f)",
        chosen["lr"],
        chosen["search"],
        chosen["val_loss"],
    )
    return {**train_section, "lr": chosen["lr"]}
