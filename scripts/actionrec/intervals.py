"""How sure a test score is: bootstrap intervals over source videos, a paired
comparison of two models on the same clips, and the mistakes by source video.

Clips of one source video (a group) share actor, scene and camera: they tend
to be right or wrong together, so the clips of a test split are not
independent draws, its source videos are. Every interval here resamples
groups with replacement and takes all the clips of each group drawn (a
cluster bootstrap), and reads the 2.5th and 97.5th percentiles of the
resampled scores. 2000 resamples put the Monte Carlo error of those
percentiles well under the width of the interval; the statistics are
computed from per-group sums, so that costs milliseconds. Plain numpy and
pandas: no TensorFlow here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0
METHOD = "bootstrap over source videos"
# Below this many groups a percentile interval is too short more often than
# its level says: it is still given, with a note.
FEW_GROUPS = 10


def _named(groups) -> np.ndarray:
    """Which clips have a group (not None, NaN or '')."""
    values = pd.Series(np.asarray(groups, dtype=object))
    return (values.notna() & (values.astype(str) != "")).to_numpy()


def group_codes(groups, n: int) -> np.ndarray:
    """Integer codes 0..g-1 of each clip's group; a clip without one (None,
    NaN, '') is a group of its own. Without any groups, every clip is one."""
    if groups is None:
        return np.arange(n)
    values = pd.Series(np.asarray(groups, dtype=object))
    missing = ~_named(groups)
    values[missing] = [f"\0clip-{i}" for i in np.flatnonzero(missing)]
    codes, _ = pd.factorize(values)
    return codes


def resample_counts(n_groups: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """How often each group is drawn in each resample: [resamples, n_groups]."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_groups, size=(resamples, n_groups))
    flat = draws + n_groups * np.arange(resamples)[:, None]
    return np.bincount(flat.ravel(), minlength=resamples * n_groups).reshape(resamples, n_groups)


def _group_sums(codes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per-group sums of ``values`` ([n] or [n, k]) -> [g] or [g, k]."""
    out = np.zeros((codes.max() + 1, *values.shape[1:]))
    np.add.at(out, codes, values)
    return out


def _percentiles(stats: np.ndarray, level: float) -> list[float]:
    tail = (1 - level) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return [round(float(low), 4), round(float(high), 4)]


def accuracy_resamples(correct, groups=None, resamples=RESAMPLES, seed=SEED) -> np.ndarray:
    """The share of correct clips in each resample of the groups ([resamples])."""
    correct = np.asarray(correct, dtype=float)
    codes = group_codes(groups, len(correct))
    counts = resample_counts(codes.max() + 1, resamples, seed)
    return (counts @ _group_sums(codes, correct)) / (counts @ np.bincount(codes))


def macro_f1_resamples(true, pred, groups=None, resamples=RESAMPLES, seed=SEED) -> np.ndarray:
    """Macro F1 in each resample of the groups, as scikit-learn's ``f1_score``
    computes it there: the mean over the classes that are true or predicted
    in that resample, a class never predicted scoring 0."""
    true, pred = np.asarray(true), np.asarray(pred)
    classes = np.union1d(true, pred)
    t = (true[:, None] == classes).astype(float)
    p = (pred[:, None] == classes).astype(float)
    codes = group_codes(groups, len(true))
    counts = resample_counts(codes.max() + 1, resamples, seed)
    tp = counts @ _group_sums(codes, t * p)
    both = counts @ _group_sums(codes, t + p)  # true + predicted counts per class
    present = both > 0
    f1 = np.divide(2 * tp, both, out=np.zeros_like(tp), where=present)
    return f1.sum(axis=1) / present.sum(axis=1)


def score_intervals(
    true,
    pred,
    groups=None,
    hits: dict[str, np.ndarray] | None = None,
    *,
    prefix: str = "",
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = SEED,
) -> dict:
    """``<prefix>accuracy_ci``, ``<prefix>macro_f1_ci`` and ``<name>_ci`` for
    each per-clip hit vector of ``hits`` (e.g. ``{"top5_accuracy": in_top5}``),
    each ``[low, high]``, and ``interval``, which says how they were drawn.
    Without groups, or with one, there is nothing to resample: ``interval``
    says so and no ``_ci`` field is written."""
    true, pred = np.asarray(true), np.asarray(pred)
    if groups is None or not len(true) or not _named(groups).any():
        return {"interval": {"method": None, "reason": "the clips' source videos are unknown"}}
    codes = group_codes(groups, len(true))
    n_groups = int(codes.max() + 1)
    if n_groups < 2:
        return {
            "interval": {
                "method": None,
                "groups": n_groups,
                "reason": "the test clips come from one source video: no interval",
            }
        }
    out = {
        f"{prefix}accuracy_ci": _percentiles(
            accuracy_resamples(true == pred, codes, resamples, seed), level
        ),
        f"{prefix}macro_f1_ci": _percentiles(
            macro_f1_resamples(true, pred, codes, resamples, seed), level
        ),
        **{
            f"{name}_ci": _percentiles(accuracy_resamples(hit, codes, resamples, seed), level)
            for name, hit in (hits or {}).items()
        },
    }
    interval = {"method": METHOD, "groups": n_groups, "resamples": resamples, "level": level}
    if n_groups < FEW_GROUPS:
        interval["note"] = f"only {n_groups} source videos: the interval is rough"
    return {**out, "interval": interval}


def paired_difference(
    correct_a,
    correct_b,
    groups=None,
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = SEED,
) -> dict:
    """Whether model A's accuracy differs from model B's on the same clips.

    A paired bootstrap over groups: each resample draws source videos with
    replacement and takes, for both models, the same clips, so the
    difference keeps the pairing (both models see the easy and the hard
    videos together) and the clustering (a video's clips move together).
    McNemar's exact test would keep the pairing but count every clip as an
    independent draw, and clips of one video are right or wrong together:
    it would call differences significant that one video makes.

    ``verdict`` is ``"A better"`` or ``"B better"`` when the ``level``
    interval of accuracy(A) - accuracy(B) excludes 0, else
    ``"not distinguishable"``. ``p`` is the two-sided bootstrap p-value
    (twice the share of resamples on the far side of 0)."""
    a = np.asarray(correct_a, dtype=float)
    b = np.asarray(correct_b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"the two models scored {len(a)} and {len(b)} clips, not the same ones")
    codes = group_codes(groups, len(a))
    n_groups = int(codes.max() + 1)
    diffs = accuracy_resamples(a - b, codes, resamples, seed)
    low, high = _percentiles(diffs, level)
    if low > 0:
        verdict = "A better"
    elif high < 0:
        verdict = "B better"
    else:
        verdict = "not distinguishable"
    p = min(1.0, 2 * min(float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0))))
    return {
        "difference": round(float(a.mean() - b.mean()), 4),
        "difference_ci": [low, high],
        "p": round(p, 4),
        "verdict": verdict,
        "clips": len(a),
        "groups": n_groups,
    }


def mistakes_by_group(predictions: pd.DataFrame) -> pd.DataFrame:
    """The wrong clips of a predictions table by source video, most first:
    ``group``, its true ``class``, ``clips`` (of the split), ``wrong``,
    ``share`` (wrong / clips), ``of_mistakes`` (its share of all wrong clips)
    and ``predicted`` (the classes its wrong clips were given, with counts).
    A table without a ``group`` column counts every clip as its own video."""
    keys = predictions["group"] if "group" in predictions else predictions["clip_id"]
    table = predictions.assign(group=keys.astype(str), wrong=~predictions["correct"].astype(bool))
    total = int(table["wrong"].sum())

    def given(rows: pd.DataFrame) -> str:
        counts = rows.loc[rows["wrong"], "predicted"].value_counts()
        return "; ".join(f"{name} x{n}" for name, n in sorted(counts.items(), key=lambda c: -c[1]))

    per = table.groupby("group", sort=False)
    out = pd.DataFrame(
        {
            "class": per["true"].agg(lambda s: ", ".join(sorted(set(s)))),
            "clips": per.size(),
            "wrong": per["wrong"].sum().astype(int),
        }
    )
    out["share"] = (out["wrong"] / out["clips"]).round(4)
    out["of_mistakes"] = (out["wrong"] / total).round(4) if total else 0.0
    out["predicted"] = pd.Series({g: given(rows) for g, rows in per})
    out = out[out["wrong"] > 0].rename_axis("group").reset_index()
    return out.sort_values(["wrong", "share", "group"], ascending=[False, False, True]).reset_index(
        drop=True
    )


def mistakes_summary(predictions: pd.DataFrame) -> dict:
    """How the wrong clips spread over source videos: their count, the
    videos they come from (of how many), and the most wrong in one video."""
    table = mistakes_by_group(predictions)
    keys = predictions["group"] if "group" in predictions else predictions["clip_id"]
    worst = table.iloc[0] if len(table) else None
    return {
        "wrong": int(table["wrong"].sum()),
        "groups": int(len(table)),
        "of_groups": int(keys.nunique()),
        "most_in_one_group": int(worst["wrong"]) if worst is not None else 0,
        **({"worst_group": str(worst["group"])} if worst is not None else {}),
    }
