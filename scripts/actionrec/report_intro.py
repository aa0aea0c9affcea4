"""The headline of the HTML report: the final model's test numbers and the leak
check, as the report labels of metrics.json. Snakemake evaluates a labels
function when it builds the report, and report/workflow.rst (whose template can
read the report's files but not the disk) prints these labels on the front page."""

import json
import os


def leak_check(metrics: dict, leakage: dict) -> str:
    """One line on whether a test or val clip's source video (in UCF101 the same
    actor and scene) is also in train, which makes their scores optimistic. With
    discovered groups a share of 0 holds for those groups only: the line then
    gives the estimate of the true share, and never says passed."""
    test, val = metrics["leakage_share"], leakage["leakage"]["val"]
    source = leakage.get("groups", {}).get("source", "names")
    which = "a group" if source == "names" else f"a group ({source}) "
    line = f"{test:.1%} of test, {val:.1%} of val clips share {which.strip()} with train"
    named = leakage.get("name_leakage") or {"val": 0.0, "test": 0.0}
    if named["test"] or named["val"]:
        line += f"; by their names' groups {named['test']:.1%} of test, {named['val']:.1%} of val"
    estimate = metrics.get("estimated_leakage_share")
    if test or val or named["test"] or named["val"]:
        verdict = "leaks"
    elif estimate is not None:
        verdict = "uncertain"
        line += f"; an estimated {estimate:.1%} of test clips have their source video in train"
    else:
        verdict = "passed"
    return f"{verdict} ({line})"


def with_interval(metrics: dict, key: str) -> str:
    """A score and, where metrics.json has one, its 95% interval over source
    videos (or why there is none)."""
    value = f"{metrics[key]:.4f}"
    interval = metrics.get("interval")
    if interval is None:
        return value
    if f"{key}_ci" not in metrics:
        return f"{value} (no interval: {interval.get('reason', 'not computed')})"
    low, high = metrics[f"{key}_ci"]
    return f"{value} (95% interval {low:.4f} to {high:.4f} over {interval['groups']} source videos)"


def headline(metrics: dict, leakage: dict) -> dict[str, str]:
    """The headline labels from metrics.json and leakage.json. Every value is a
    string: the report's tables hide a label of 0 and cannot sort numbers."""
    return {
        "test accuracy": with_interval(metrics, "accuracy"),
        "macro F1": with_interval(metrics, "macro_f1"),
        "split method": str(metrics["split_method"]),
        "leak check": leak_check(metrics, leakage),
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
