"""Evaluation tables, figures and the model card, from hand-made predictions."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from actionrec import figures
from actionrec.manifest import class_names
from actionrec.model_card import write_model_card
from actionrec.scores import (
    confused_pairs,
    confusion,
    per_class_table,
    prediction_table,
    summary_metrics,
)
from actionrec.tables import write_tsv

NAMES = ["Bounce", "Grow", "Shrink"]


def hand_made():
    clips = pd.DataFrame({"clip_id": [f"v{i}" for i in range(6)], "label": [0, 0, 1, 1, 2, 2]})
    probs = np.array(
        [
            [0.7, 0.2, 0.1],
            [0.6, 0.3, 0.1],  # Bounce right twice
            [0.1, 0.5, 0.4],
            [0.1, 0.3, 0.6],  # Grow once right, once taken for Shrink
            [0.2, 0.5, 0.3],
            [0.5, 0.1, 0.4],  # Shrink wrong twice, in the top 2 both times
        ]
    )
    return clips, probs


def test_class_names_follow_the_labels():
    manifest = pd.DataFrame(
        {"label": [2, 0, 1, 0], "class": ["Shrink", "Bounce", "Grow", "Bounce"]}
    )
    assert class_names(manifest) == NAMES


def test_prediction_table_and_metrics():
    clips, probs = hand_made()
    table = prediction_table(clips, probs, NAMES, top=2)
    assert table["predicted"].tolist() == ["Bounce", "Bounce", "Grow", "Shrink", "Grow", "Bounce"]
    assert table["correct"].tolist() == [True, True, True, False, False, False]
    assert table["in_top2"].tolist() == [True, True, True, True, True, True]
    assert table["top2"][3] == "Shrink=0.6000;Grow=0.3000"
    true, pred = clips["label"].to_numpy(), probs.argmax(axis=1)
    metrics = summary_metrics(table, true, pred, {"method": "group", "leakage": {"test": 0.0}})
    assert metrics["accuracy"] == 0.5 and metrics["top2_accuracy"] == 1.0
    assert metrics["macro_f1"] == round(f1_score(true, pred, average="macro"), 4)
    assert metrics["split_method"] == "group" and metrics["leakage_share"] == 0.0
    per_class = per_class_table(true, pred, NAMES)
    assert per_class["support"].tolist() == [2, 2, 2]
    assert per_class.set_index("class").loc["Bounce", "recall"] == 1.0
    assert per_class.set_index("class").loc["Shrink", "f1"] == 0.0


def test_most_confused_pairs():
    clips, probs = hand_made()
    cm = confusion(prediction_table(clips, probs, NAMES), NAMES)
    assert cm.tolist() == [[2, 0, 0], [0, 1, 1], [1, 1, 0]]
    pairs = confused_pairs(cm, NAMES)
    assert len(pairs) == 3 and set(pairs["count"]) == {1}
    assert set(zip(pairs["true"], pairs["predicted"], strict=True)) == {
        ("Grow", "Shrink"),
        ("Shrink", "Bounce"),
        ("Shrink", "Grow"),
    }


@pytest.mark.parametrize("n_classes", [3, 101])
def test_figures_scale_with_the_number_of_classes(tmp_path, n_classes):
    from PIL import Image

    rng = np.random.default_rng(0)
    names = [f"Class{i:03d}" for i in range(n_classes)]
    true = np.repeat(np.arange(n_classes), 4)
    pred = np.where(rng.random(len(true)) < 0.6, true, rng.integers(0, n_classes, len(true)))
    predictions = pd.DataFrame(
        {"true": [names[i] for i in true], "predicted": [names[i] for i in pred]}
    )
    cm = confusion(predictions, names)
    figures.per_class_f1(per_class_table(true, pred, names), tmp_path / "f1.png")
    figures.confusion_matrix(cm, names, tmp_path / "cm.png")
    figures.confused_pairs(confused_pairs(cm, names), tmp_path / "pairs.png")
    history = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "loss": [2.0, 1.5, 1.2],
            "accuracy": [0.2, 0.4, 0.5],
            "val_loss": [2.1, 1.7, 1.8],
            "val_accuracy": [0.2, 0.3, 0.3],
            "test_loss": [2.2, 1.8, 1.9],
            "test_accuracy": [0.1, 0.3, 0.3],
        }
    )
    figures.learning_curves(history, tmp_path / "curves.png")
    f1_height = Image.open(tmp_path / "f1.png").size[1]
    cm_side = Image.open(tmp_path / "cm.png").size[0]
    # One bar and one matrix row per class, with room for a label each (>= 12 px at 120 dpi).
    assert f1_height >= 12 * n_classes
    assert cm_side >= 12 * n_classes
    assert Image.open(tmp_path / "curves.png").size[0] > 800


def test_model_card_reports_the_measured_numbers(tmp_path):
    clips, probs = hand_made()
    true, pred = clips["label"].to_numpy(), probs.argmax(axis=1)
    table = prediction_table(clips, probs, NAMES, top=2)
    split_info = {
        "method": "group",
        "seed": 3,
        "fractions": {"train": 0.6, "val": 0.2, "test": 0.2},
        "clips": {"train": 18, "val": 6, "test": 6},
        "leakage": {"test": 0.0},
    }
    (tmp_path / "leakage.json").write_text(json.dumps(split_info))
    (tmp_path / "metrics.json").write_text(
        json.dumps(summary_metrics(table, true, pred, split_info))
    )
    write_tsv(per_class_table(true, pred, NAMES), tmp_path / "per_class.tsv")
    history = {
        "epoch": [1, 2, 3],
        "stage": ["frozen", "frozen", "finetune"],
        "loss": [1.0, 0.9, 0.8],
        "accuracy": [0.4, 0.5, 0.6],
        "val_loss": [1.1, 1.2, 1.3],
        "val_accuracy": [0.3, 0.4, 0.5],
        "kept": [True, False, False],
    }
    write_tsv(pd.DataFrame(history), tmp_path / "history.tsv")
    manifest = pd.DataFrame(
        {"clip_id": ["a", "b"], "class": ["Grow", "Bounce"], "group": ["1", "2"]}
    )
    write_tsv(manifest, tmp_path / "manifest.tsv")
    config = {
        "data": {"root": None},
        "extract": {"frames": 8, "size": 64, "resize": "crop"},
        "train": {
            "backbone": "efficientnetb0",
            "head": "average",
            "weights": "imagenet",
            "lr": 0.0015,
            "batch_size": 2,
            "max_epochs": 15,
            "patience": 2,
            "loss": "crossentropy",
            "class_weights": False,
            "dropout": 0.0,
            "augment": {"crop": 0.2, "flip": False},
            "finetune": {"blocks": "all", "lr_factor": 0.1, "batch_norm": "frozen"},
        },
    }

    def card() -> str:
        return write_model_card(
            tmp_path / "card.md",
            metrics_json=tmp_path / "metrics.json",
            per_class_tsv=tmp_path / "per_class.tsv",
            history_tsv=tmp_path / "history.tsv",
            manifest_tsv=tmp_path / "manifest.tsv",
            leakage_json=tmp_path / "leakage.json",
            config=config,
        )

    text = card()
    assert "| accuracy | 0.5000 |" in text and "`group`" in text
    assert "kept epoch 1 (frozen)" in text and "augmentation: crop 0.2." in text
    assert "Stage `finetune`, 1 epoch(s): the whole backbone unfrozen" in text
    assert "peak learning rate 0.00015, batch norm frozen" in text
    config["train"]["finetune"] = {
        "blocks": "all",
        "lr": 1e-4,
        "lr_factor": None,
        "warmup_epochs": 0.5,
        "schedule": "cosine",
        "clipnorm": 1.0,
        "accumulate": 4,
        "batch_norm": "frozen",
    }
    text = card()
    assert (
        "peak learning rate 0.0001 (warmed up over 0.5 epoch(s), cosine-decayed to 0, gradient "
        "norm clipped at 1, 4 batches an update), batch norm frozen"
    ) in text.replace("\n", " ")
    assert re.search(r"\| Shrink\s+\|\s+0\s+\|", text)  # the weakest class is named
    # The groups and the audit, with its warnings, as leakage.json gives them.
    split_info.update(
        groups={"mode": "auto", "source": "discovered", "threshold": 0.15, "groups": 7},
        audit={
            "similarity": 0.92,
            "features": "net.keras",
            "val": {"near_duplicates": 0.0},
            "test": {"near_duplicates": 0.5},
        },
        warnings=["50% of test clips have a near-duplicate in train"],
    )
    (tmp_path / "leakage.json").write_text(json.dumps(split_info))
    text = card().replace("\n", " ")
    assert "7 groups discovered from frozen features (split.groups `auto`" in text
    assert "(frozen `net.keras` features): 0.0 / 0.5." in text
    assert "**Warning:** 50% of test clips have a near-duplicate in train." in text
    (tmp_path / "leakage.json").write_text(json.dumps({**split_info, "audit": {"skipped": "why"}}))
    assert "Near-duplicates: not audited (why)." in card()
