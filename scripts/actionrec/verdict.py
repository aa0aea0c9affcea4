"""The backbone comparison in one table, and what it says about the original
claim that EfficientNetB0 trains faster than ResNet50 at similar accuracy."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd

from .tables import read_tsv

# Two backbones count as similarly accurate within this test-accuracy gap.
SIMILAR_ACCURACY = 0.05


SUMMARY_COLUMNS = [
    "backbone",
    "head",
    "val_accuracy",
    "test_accuracy",
    "test_macro_f1",
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


def claim_sentence(summary: pd.DataFrame) -> str:
    """What this run shows about the original claim that EfficientNetB0
    trains faster than ResNet50 at similar accuracy."""
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
    accuracies = f"{eff['test_accuracy']:.3f} against {res['test_accuracy']:.3f}"
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


def markdown(summary: pd.DataFrame, sentence: str) -> str:
    table = summary[[c for c in SUMMARY_COLUMNS if c in summary]]
    return f"# Backbone comparison\n\n{table.to_markdown(index=False, intfmt=',')}\n\n{sentence}\n"


def histories(metric_files, history_files) -> dict[str, pd.DataFrame]:
    out = {}
    for m, h in zip(metric_files, history_files, strict=True):
        with open(m, encoding="utf-8") as f:
            meta = json.load(f)
        out[f"{meta['backbone']}/{meta['head']}"] = read_tsv(h)
    return out
