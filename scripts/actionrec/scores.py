"""Scores of a classified split: the predictions table, per-class precision,
recall and F1, the confusion matrix, the most confused pairs and the summary
metrics. Plain tables: no TensorFlow here."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from .intervals import mistakes_summary, score_intervals


def format_top(probs: np.ndarray, names: list[str], k: int) -> str:
    """The ``k`` most probable classes as ``Class=0.812;Other=0.101``."""
    order = np.argsort(-probs, kind="stable")[:k]
    return ";".join(f"{names[i]}={probs[i]:.4f}" for i in order)


def prediction_table(
    clips: pd.DataFrame, probs: np.ndarray, names: list[str], top: int = 5
) -> pd.DataFrame:
    """One row per clip: its source video (``group``, when ``clips`` has
    one), true and predicted class, its probability, top-k."""
    pred = probs.argmax(axis=1)
    labels = clips["label"].to_numpy()
    k = min(top, len(names))
    topk = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return pd.DataFrame(
        {
            "clip_id": clips["clip_id"].to_numpy(),
            **({"group": clips["group"].to_numpy()} if "group" in clips else {}),
            "true": [names[i] for i in labels],
            "predicted": [names[i] for i in pred],
            "correct": pred == labels,
            "probability": probs[np.arange(len(pred)), pred].round(6),
            "true_probability": probs[np.arange(len(pred)), labels].round(6),
            f"in_top{k}": (topk == labels[:, None]).any(axis=1),
            f"top{k}": [format_top(p, names, k) for p in probs],
        }
    )


def per_class_table(true: np.ndarray, pred: np.ndarray, names: list[str]) -> pd.DataFrame:
    """scikit-learn's precision, recall, F1 and support for every class."""
    labels = np.arange(len(names))
    p, r, f, s = precision_recall_fscore_support(true, pred, labels=labels, zero_division=0.0)
    return pd.DataFrame(
        {
            "class": names,
            "label": labels,
            "precision": p.round(4),
            "recall": r.round(4),
            "f1": f.round(4),
            "support": s,
        }
    )


def confusion(predictions: pd.DataFrame, names: list[str]) -> np.ndarray:
    """Counts: rows are true classes, columns predicted, in ``names`` order."""
    return confusion_matrix(predictions["true"], predictions["predicted"], labels=names)


def confused_pairs(cm: np.ndarray, names: list[str], top: int = 15) -> pd.DataFrame:
    """The most frequent mistakes: true class, predicted class, count and the
    share of the true class's clips that went there."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    rows, cols = np.nonzero(off)
    support = cm.sum(axis=1)
    table = pd.DataFrame(
        {
            "true": [names[i] for i in rows],
            "predicted": [names[j] for j in cols],
            "count": off[rows, cols],
            "share": (off[rows, cols] / support[rows]).round(4),
        }
    )
    return table.sort_values(["count", "share", "true"], ascending=[False, False, True]).head(top)


def summary_metrics(
    predictions: pd.DataFrame, true: np.ndarray, pred: np.ndarray, split_info: dict
) -> dict:
    """metrics.json's numbers. With the clips' source videos (``predictions``'
    ``group`` column), 95% intervals of accuracy, macro F1 and top-k accuracy
    from a bootstrap over them, and how the mistakes spread over them."""
    top_col = next(c for c in predictions if c.startswith("in_top"))
    top_name = top_col.replace("in_", "") + "_accuracy"
    groups = predictions["group"].to_numpy() if "group" in predictions else None
    estimate = (split_info.get("audit") or {}).get("test", {}).get("estimated_leakage")
    return {
        "split_method": split_info.get("method"),
        "seed": split_info.get("seed"),
        "leakage_share": split_info.get("leakage", {}).get("test"),
        # what leakage_share is measured on: groups from names, discovered, or both
        "leakage_groups": split_info.get("groups", {}).get("source", "names"),
        **({"estimated_leakage_share": estimate} if estimate is not None else {}),
        **(
            {"name_leakage_share": split_info["name_leakage"]["test"]}
            if "name_leakage" in split_info
            else {}
        ),
        "test_clips": int(len(true)),
        "accuracy": round(float((true == pred).mean()), 4),
        top_name: round(float(predictions[top_col].mean()), 4),
        "macro_f1": round(float(f1_score(true, pred, average="macro", zero_division=0.0)), 4),
        "weighted_f1": round(float(f1_score(true, pred, average="weighted", zero_division=0.0)), 4),
        **score_intervals(true, pred, groups, {top_name: predictions[top_col].to_numpy()}),
        **({"mistakes": mistakes_summary(predictions)} if groups is not None else {}),
    }
