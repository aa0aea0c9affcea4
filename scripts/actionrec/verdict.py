"""The backbone comparison in one table, every two models paired on the same
test clips, and what it says about the original claim that EfficientNetB0
trains faster than ResNet50 at similar accuracy."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd

from .intervals import paired_difference
from .tables import read_tsv

# Two backbones count as similarly accurate within this test-accuracy gap.
SIMILAR_ACCURACY = 0.05


SUMMARY_COLUMNS = [
    "backbone",
    "head",
    "val_accuracy",
    "test_accuracy",
    "test_accuracy_ci",
    "test_macro_f1",
    "test_macro_f1_ci",
    "backbone_input",
    "parameters",
    "flops_per_clip",
    "feature_seconds_per_clip",
    "backbone_training",
    "train_seconds_per_epoch",
    "train_seconds_total",
    "inference_clips_per_second",
    "peak_memory_mb",
    "epochs",
    "lr",
]


def summarise(metric_files: list[str | os.PathLike]) -> pd.DataFrame:
    rows = []
    for path in metric_files:
        with open(path, encoding="utf-8") as f:
            rows.append(json.load(f))
    return pd.DataFrame(rows)


def paired_comparisons(
    metric_files: list[str | os.PathLike], prediction_files: list[str | os.PathLike]
) -> pd.DataFrame:
    """Every two compared models on the same test clips: accuracies, the
    difference (a - b) with its 95% interval and p-value from a paired
    bootstrap over source videos, and the verdict (:func:`.intervals.paired_difference`)
    with the better model's name, or ``not distinguishable``."""
    models = {}
    for m, p in zip(metric_files, prediction_files, strict=True):
        with open(m, encoding="utf-8") as f:
            meta = json.load(f)
        models[f"{meta['backbone']}/{meta['head']}"] = read_tsv(p)
    rows = []
    names = list(models)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            both = models[a].merge(models[b], on="clip_id", suffixes=("_a", "_b"))
            if len(both) != len(models[a]) or len(both) != len(models[b]):
                raise ValueError(f"{a} and {b} were not scored on the same test clips")
            test = paired_difference(both["correct_a"], both["correct_b"], both["group_a"])
            verdict = {"A better": f"{a} better", "B better": f"{b} better"}
            rows.append(
                {
                    "model_a": a,
                    "model_b": b,
                    "accuracy_a": round(float(both["correct_a"].mean()), 4),
                    "accuracy_b": round(float(both["correct_b"].mean()), 4),
                    "difference": test["difference"],
                    "difference_ci": test["difference_ci"],
                    "p": test["p"],
                    "significant": test["verdict"] != "not distinguishable",
                    "verdict": verdict.get(test["verdict"], test["verdict"]),
                    "clips": test["clips"],
                    "groups": test["groups"],
                }
            )
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


PAIR_COLUMNS = [
    "model_a",
    "model_b",
    "accuracy_a",
    "accuracy_b",
    "difference",
    "difference_ci",
    "p",
    "significant",
    "verdict",
    "clips",
    "groups",
]


def _noise_clause(pairs: pd.DataFrame | None, eff: str, res: str) -> str:
    """The EfficientNetB0 - ResNet50 difference against the noise, or ''."""
    if pairs is None or pairs.empty:
        return ""
    hit = pairs[(pairs["model_a"] == eff) & (pairs["model_b"] == res)]
    sign = 1
    if hit.empty:
        hit, sign = pairs[(pairs["model_a"] == res) & (pairs["model_b"] == eff)], -1
    if hit.empty:
        return ""
    row = hit.iloc[0]
    low, high = sorted(sign * float(x) for x in row["difference_ci"])
    verdict = "significant" if row["significant"] else "not distinguishable"
    return (
        f" (difference {sign * row['difference']:+.3f}, 95% interval {low:+.3f} to {high:+.3f} "
        f"over {row['groups']} source videos: {verdict})"
    )


def claim_sentence(summary: pd.DataFrame, pairs: pd.DataFrame | None = None) -> str:
    """What this run shows about the original claim that EfficientNetB0
    trains faster than ResNet50 at similar accuracy; with ``pairs``
    (:func:`paired_comparisons`), whether their accuracy difference is
    larger than the noise of the test split's source videos."""
    first = summary.iloc[0]
    where = f"{first['split_method']} split, {first['hardware']}, {first['epochs']} epoch(s)"
    # The claim is about the original architecture: compare the average head.
    original = summary[summary["head"] == "average"]
    by = (original if len(original) else summary).drop_duplicates("backbone").set_index("backbone")
    if not {"efficientnetb0", "resnet50"} <= set(by.index):
        return (
            f"This run ({where}) does not include both efficientnetb0 and resnet50, so it says "
            "nothing about the original claim."
        )
    eff, res = by.loc["efficientnetb0"], by.loc["resnet50"]
    how = eff.get("backbone_training", "from scratch")
    if how == "frozen":
        # Neither backbone trained here: their forward pass is what differs.
        speed = eff["inference_clips_per_second"] / res["inference_clips_per_second"]
        pace = (
            f"classified test clips {speed:.1f}x {'faster' if speed > 1 else 'slower'} than "
            "ResNet50 (both backbones frozen: this run did not train them)"
        )
    else:
        speed = res["train_seconds_per_epoch"] / eff["train_seconds_per_epoch"]
        pace = (
            f"trained {speed:.1f}x {'faster' if speed > 1 else 'slower'} per epoch "
            f"({how}) than ResNet50"
        )
    gap = eff["test_accuracy"] - res["test_accuracy"]
    similar = gap >= -SIMILAR_ACCURACY
    chance = 1 / float(first.get("classes", np.nan))
    accuracies = f"{eff['test_accuracy']:.3f} against {res['test_accuracy']:.3f}" + _noise_clause(
        pairs, f"efficientnetb0/{eff['head']}", f"resnet50/{res['head']}"
    )
    if min(eff["test_accuracy"], res["test_accuracy"]) <= 2 * chance:
        return (
            f"On this run ({where}), EfficientNetB0 {pace}, but not both got beyond twice "
            f"chance ({2 * chance:.3f}) on the test split ({accuracies}), so this budget cannot "
            "test the accuracy half of the original claim that EfficientNetB0 trains faster at "
            "similar accuracy; give the comparison more epochs."
        )
    verdict = "supports" if speed > 1 and similar else "does not support"
    return (
        f"On this run ({where}), EfficientNetB0 {pace} and reached test accuracy {accuracies}: "
        f"it {verdict} the original claim that EfficientNetB0 trains faster at similar accuracy."
    )


def markdown(summary: pd.DataFrame, sentence: str, pairs: pd.DataFrame | None = None) -> str:
    table = summary[[c for c in SUMMARY_COLUMNS if c in summary]]
    text = f"# Backbone comparison\n\n{table.to_markdown(index=False, intfmt=',')}\n\n{sentence}\n"
    if pairs is not None and not pairs.empty:
        text += (
            "\n## Paired on the same test clips\n\n"
            "Accuracy difference a - b with its 95% interval from a paired bootstrap over source "
            "videos; `not distinguishable` when the interval holds 0.\n\n"
            f"{pairs.to_markdown(index=False)}\n"
        )
    return text


def histories(metric_files, history_files) -> dict[str, pd.DataFrame]:
    out = {}
    for m, h in zip(metric_files, history_files, strict=True):
        with open(m, encoding="utf-8") as f:
            meta = json.load(f)
        out[f"{meta['backbone']}/{meta['head']}"] = read_tsv(h)
    return out
