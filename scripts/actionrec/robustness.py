"""The final model under the conditions that break action recognisers.

The test split is classified again with every corruption of
:mod:`.corruptions` at each severity, applied to the frames the model sees
through the evaluation's one frame hook (:data:`.pipeline.Transform`), with
the evaluation's views and crops. As in Mini Kinetics-C (Yi et al., 2021):

- mPC, the mean accuracy under corruption (over corruptions and severities);
- rPC = mPC / clean accuracy, the share of its accuracy a model keeps;

overall and per family (light, noise, blur, digital, temporal, camera,
occlusion), and the classes whose accuracy falls most.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from .tables import write_tsv

log = logging.getLogger(__name__)

TABLE_COLUMNS = [
    "corruption",
    "family",
    "severity",
    "accuracy",
    "macro_f1",
    "test_clips",
    "seconds",
]
SEVERITIES = (1, 2, 3, 4, 5)


def check_settings(corruptions: Sequence[str], severities: Sequence[int]) -> None:
    """Unknown corruptions and severities outside 1..5 stop, naming the allowed ones."""
    from .corruptions import CORRUPTIONS

    unknown = [c for c in corruptions if c not in CORRUPTIONS]
    if unknown:
        raise ValueError(
            f"robustness.corruptions: {unknown} unknown; choose from {list(CORRUPTIONS)}"
        )
    bad = [s for s in severities if s not in SEVERITIES]
    if bad or not severities:
        raise ValueError(f"robustness.severities must be among {list(SEVERITIES)}, not {bad}")


def conditions(corruptions: Sequence[str], severities: Sequence[int]) -> list[tuple[str, int]]:
    """('clean', 0) first, then every corruption at every severity."""
    return [("clean", 0)] + [(c, s) for c in corruptions for s in sorted(severities)]


def classify_under(
    predict: Callable[[Callable | None], tuple[pd.DataFrame, np.ndarray]],
    corruptions: Sequence[str],
    severities: Sequence[int],
    seed: int,
) -> tuple[np.ndarray, pd.DataFrame, dict[tuple[str, int], np.ndarray]]:
    """The test clips' labels, one table row per condition, and each
    condition's predicted labels. ``predict(transform)`` classifies the test
    split through the evaluation with that frame transform (None: clean)."""
    from .corruptions import CORRUPTIONS, transform_for

    check_settings(corruptions, severities)
    rows, predicted, true = [], {}, None
    todo = conditions(corruptions, severities)
    for k, (name, severity) in enumerate(todo, 1):
        transform = None if name == "clean" else transform_for(name, severity, seed)
        if name == "clean":
            # The first pass also builds and traces the model: the clean pass that the
            # stage's cost is measured against is a second one, as every later pass is.
            predict(transform)
        start = time.perf_counter()
        clips, probs = predict(transform)
        seconds = time.perf_counter() - start
        true = clips["label"].to_numpy()
        pred = probs.argmax(axis=1)
        predicted[(name, severity)] = pred
        rows.append(
            {
                "corruption": name,
                "family": "none" if name == "clean" else CORRUPTIONS[name][0],
                "severity": severity,
                "accuracy": round(float((pred == true).mean()), 4),
                "macro_f1": round(float(f1_score(true, pred, average="macro", zero_division=0)), 4),
                "test_clips": int(len(true)),
                "seconds": round(seconds, 2),
            }
        )
        log.info(
            "[%d/%d] %s severity %d: accuracy %.4f (%.1f s)",
            k,
            len(todo),
            name,
            severity,
            rows[-1]["accuracy"],
            seconds,
        )
    return true, pd.DataFrame(rows, columns=TABLE_COLUMNS), predicted


def summarise(
    table: pd.DataFrame,
    true: np.ndarray,
    predicted: dict[tuple[str, int], np.ndarray],
    names: Sequence[str],
    shown: int = 5,
) -> dict:
    """Clean accuracy, mPC and rPC overall and per family, the cost of a
    corrupted pass against the clean one, and the classes that lose most."""
    clean = table[table["corruption"] == "clean"].iloc[0]
    corrupted = table[table["corruption"] != "clean"]

    def scores(part: pd.DataFrame) -> dict:
        mpc = float(part["accuracy"].mean())
        rpc = mpc / clean["accuracy"] if clean["accuracy"] > 0 else float("nan")
        return {"mPC": round(mpc, 4), "rPC": round(rpc, 4)}

    by_class = {}
    for label, name in enumerate(names):
        mine = true == label
        if not mine.any():
            continue
        under = [predicted[k][mine] == label for k in predicted if k[0] != "clean"]
        before = float((predicted[("clean", 0)][mine] == label).mean())
        after = float(np.mean([u.mean() for u in under]))
        by_class[name] = {"clean": round(before, 4), "corrupted": round(after, 4)}
    losses = sorted(by_class.items(), key=lambda kv: kv[1]["corrupted"] - kv[1]["clean"])
    return {
        "clean_accuracy": float(clean["accuracy"]),
        "clean_macro_f1": float(clean["macro_f1"]),
        "test_clips": int(clean["test_clips"]),
        **scores(corrupted),
        "families": {f: scores(p) for f, p in corrupted.groupby("family", sort=False)},
        "corruptions": {c: scores(p) for c, p in corrupted.groupby("corruption", sort=False)},
        "cost": round(float(corrupted["seconds"].mean() / max(clean["seconds"], 1e-9)), 2),
        "losing_classes": [{"class": n, **v} for n, v in losses[:shown]],
    }


def evaluate_robustness(
    model_path: str | os.PathLike,
    data,
    names: Sequence[str],
    *,
    corruptions: Sequence[str],
    severities: Sequence[int],
    seed: int,
    out_table: str | os.PathLike,
    out_summary: str | os.PathLike,
    views: int = 1,
    crops: int = 1,
    batch_size: int = 8,
) -> dict:
    """Classify the test split clean and under every corruption x severity
    with the saved model; write robustness.tsv and its summary (JSON)."""
    import keras

    from .evaluate import predict_split

    model = keras.saving.load_model(model_path)

    def predict(transform):
        return predict_split(
            model, data, "test", batch_size, views=views, crops=crops, transform=transform
        )

    true, table, predicted = classify_under(predict, corruptions, severities, seed)
    summary = summarise(table, true, predicted, names)
    summary.update(views=views, crops=crops, seed=seed, severities=sorted(severities))
    write_tsv(table, out_table)
    with open(out_summary, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    log.info(
        "clean accuracy %.4f; mPC %.4f, rPC %.4f over %d corruptions x %d severities",
        summary["clean_accuracy"],
        summary["mPC"],
        summary["rPC"],
        len(corruptions),
        len(severities),
    )
    return summary


def corruption_examples(
    data, corruptions: list[str], seed: int, path: str | os.PathLike, severities=(1, 3, 5)
) -> None:
    """The first test clip's middle frame, clean and under each corruption at
    ``severities``, as the robustness evaluation applies them."""
    import h5py

    from .corruptions import corrupt
    from .figures import _save, plt  # pyplot on the figures' non-interactive backend
    from .pipeline import _shard_file, clip_table

    first = clip_table(data.split, "test").iloc[0]
    shard = _shard_file(data.shards, first["shard"], "shard")
    with h5py.File(shard, "r") as f:
        stored = f["frames"][int(first["index"])]
    middle = len(stored) // 2
    fig, axes = plt.subplots(
        len(corruptions),
        len(severities) + 1,
        figsize=(1.6 * (len(severities) + 1), 1.6 * len(corruptions)),
        squeeze=False,
    )
    for row, name in zip(axes, corruptions, strict=True):
        row[0].imshow(stored[middle])
        row[0].set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
        for ax, severity in zip(row[1:], severities, strict=True):
            # position 0: the first test clip's draw, as in the evaluation
            ax.imshow(corrupt(stored, name, severity, seed, 0)[middle])
        for ax in row:
            ax.set_xticks([]), ax.set_yticks([])
    for ax, title in zip(axes[0], ["clean", *[f"severity {s}" for s in severities]], strict=True):
        ax.set_title(title, fontsize=8)
    _save(fig, path)
