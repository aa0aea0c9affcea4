"""The headline of the HTML report: the final model's test numbers and the leak
check, as the report labels of metrics.json. Snakemake evaluates a labels
function when it builds the report, and report/workflow.rst (whose template can
read the report's files but not the disk) prints these labels on the front page."""

import json
import os


def leak_check(test_share: float, val_share: float) -> str:
    """One line on whether a test or val clip's group (in UCF101 the same actor
    and scene) is also in train, which makes their scores optimistic."""
    shares = f"{test_share:.1%} of test, {val_share:.1%} of val clips share a group with train"
    return f"passed ({shares})" if test_share == 0 and val_share == 0 else f"leaks ({shares})"


def headline(metrics: dict, leakage: dict) -> dict[str, str]:
    """The headline labels from metrics.json and leakage.json. Every value is a
    string: the report's tables hide a label of 0 and cannot sort numbers."""
    return {
        "test accuracy": f"{metrics['accuracy']:.4f}",
        "macro F1": f"{metrics['macro_f1']:.4f}",
        "split method": str(metrics["split_method"]),
        "leak check": leak_check(metrics["leakage_share"], leakage["leakage"]["val"]),
        "test clips": str(metrics["test_clips"]),
    }


def read_json(path: str | os.PathLike) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def metrics_labels(wildcards, input, output) -> dict[str, str]:
    """Labels of rule evaluate's metrics.json: what it is, then the headline."""
    return {
        "table": "test metrics",
        "split": "test",
        **headline(read_json(output.metrics), read_json(input.split_info)),
    }
