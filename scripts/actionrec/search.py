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
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .tables import read_tsv, write_tsv

log = logging.getLogger(__name__)

TRIAL_COLUMNS = ["trial", "lr", "val_loss", "val_accuracy", "epoch", "seconds"]
# The score a diverged trial (NaN loss) reports to the optimizer.
DIVERGED_SCORE = 1e3


@dataclass
class SearchSettings:
    """The ``search`` section of the config."""

    low: float = 1e-4
    high: float = 1e-2
    epochs: int = 2
    train_fraction: float = 1.0
    n_calls: int = 8
    n_initial_points: int = 3
    acq_func: str = "gp_hedge"
    initial_point_generator: str = "lhs"
    grid: list[float] = field(default_factory=lambda: [3e-4, 1e-3, 3e-3])
    methods: list[str] = field(default_factory=lambda: ["bayes", "grid"])

    def check(self) -> SearchSettings:
        if not 0 < self.low < self.high:
            raise ValueError(
                f"search.low ({self.low}) must be positive and below search.high ({self.high})"
            )
        if self.n_initial_points > self.n_calls:
            raise ValueError(
                f"search.bayes n_initial_points ({self.n_initial_points}) exceeds "
                f"n_calls ({self.n_calls})"
            )
        return self


def settings_from_config(section: dict) -> SearchSettings:
    """SearchSettings from the config's ``search`` section."""
    bayes = section.get("bayes", {})
    return SearchSettings(
        low=float(section["low"]),
        high=float(section["high"]),
        epochs=int(section["epochs"]),
        train_fraction=float(section["train_fraction"]),
        n_calls=int(bayes["n_calls"]),
        n_initial_points=int(bayes["n_initial_points"]),
        acq_func=bayes["acq_func"],
        initial_point_generator=bayes["initial_point_generator"],
        grid=[float(v) for v in section["grid"]],
        methods=list(section["methods"]),
    ).check()


Trial = Callable[[float], dict]


def score(row: dict) -> float:
    """What the optimizer minimises: the trial's lowest val loss."""
    value = float(row["val_loss"])
    return value if math.isfinite(value) else DIVERGED_SCORE


def run_trial(
    lr: float,
    split_tsv: str | os.PathLike,
    shard_dir: str | os.PathLike,
    num_classes: int,
    train_section: dict,
    seed: int,
    settings: SearchSettings,
    work_dir: str | os.PathLike,
    threads: int | None = None,
) -> dict:
    """Train a fresh model at ``lr`` for the search budget; its best val loss
    and the val accuracy of that epoch. A diverged trial scores NaN."""
    from .train import TrainConfig, train

    cfg = TrainConfig.from_config(
        {**train_section, "lr": float(lr), "max_epochs": settings.epochs,
         "patience": settings.epochs, "evaluate_test": False,
         "train_fraction": settings.train_fraction},
        seed=seed,
    )  # fmt: skip
    work_dir = Path(work_dir)
    start = time.perf_counter()
    try:
        history = train(
            split_tsv, shard_dir, num_classes, None, work_dir / "history.tsv",
            work_dir / "state", cfg, threads,
        )  # fmt: skip
    except FloatingPointError:
        log.warning("lr %g: the loss diverged", lr)
        return {"lr": float(lr), "val_loss": float("nan"), "val_accuracy": float("nan"),
                "epoch": 0, "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
    best = history.loc[history["val_loss"].idxmin()]
    return {
        "lr": float(lr),
        "val_loss": float(best["val_loss"]),
        "val_accuracy": float(best["val_accuracy"]),
        "epoch": int(best["epoch"]),
        "seconds": round(time.perf_counter() - start, 1),
    }


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


def _fingerprint(settings: SearchSettings, seed: int, extra: dict) -> dict:
    keys = ("low", "high", "epochs", "train_fraction", "n_calls", "n_initial_points",
            "acq_func", "initial_point_generator")  # fmt: skip
    return {"seed": seed, **{k: asdict(settings)[k] for k in keys}, **extra}


def bayes_search(
    trial: Trial,
    settings: SearchSettings,
    seed: int,
    trials_tsv: str | os.PathLike,
    context: dict | None = None,
) -> pd.DataFrame:
    """Bayesian optimisation of the learning rate over [low, high] (log-uniform).

    ``trials_tsv`` collects finished trials as they finish; with a matching
    ``<trials_tsv>.json`` (settings, seed and ``context``) an interrupted
    search continues from them.
    """
    trials_tsv = Path(trials_tsv)
    state = trials_tsv.with_suffix(".json")
    fingerprint = _fingerprint(settings, seed, context or {})
    done = pd.DataFrame(columns=TRIAL_COLUMNS)
    if trials_tsv.exists() and state.exists() and json.loads(state.read_text()) == fingerprint:
        done = read_tsv(trials_tsv)
        log.info("resuming the Bayesian search after %d finished trials", len(done))
    else:
        if trials_tsv.exists():
            log.warning("%s was made with other settings: starting afresh", trials_tsv)
        trials_tsv.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps(fingerprint, indent=1))
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
        log.info("trial %d: val loss %.4f, val accuracy %.4f, %.0f s", k,
                 result["val_loss"], result["val_accuracy"], result["seconds"])  # fmt: skip
    return pd.DataFrame(rows, columns=TRIAL_COLUMNS)


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
                candidates.append((float(row["val_loss"]), -float(row["val_accuracy"]),
                                   float(row["lr"]), search, row))  # fmt: skip
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


def resolve_lr(train_section: dict, best_lr_json: str | os.PathLike | None) -> dict:
    """The train section with ``lr: auto`` replaced by the searches' choice."""
    if train_section["lr"] != "auto":
        return dict(train_section)
    with open(best_lr_json, encoding="utf-8") as f:
        chosen = json.load(f)
    log.info("lr auto: %g, chosen by the %s search (val loss %.4f)",
             chosen["lr"], chosen["search"], chosen["val_loss"])  # fmt: skip
    return {**train_section, "lr": chosen["lr"]}


def grid_label(lr: float) -> str:
    """A grid point's name in file names: ``0.0003`` -> ``0.0003``, 1e-05 -> ``1e-05``."""
    return f"{float(lr):g}"
