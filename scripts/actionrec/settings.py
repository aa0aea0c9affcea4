"""Config defaults, read from config/schema.yaml: the one place they are written.

Snakemake fills a run's config from the same schema; code that runs outside
Snakemake (tests, benchmarks, the command line) fills a section here. The
package carries the schema (``actionrec/schema.yaml``, in the checkout a link to
config/schema.yaml), so that an installed package reads it wherever it is.
"""

from __future__ import annotations

import functools
from pathlib import Path

import yaml

SCHEMA = Path(__file__).with_name("schema.yaml")


@functools.cache
def schema() -> dict:
    with open(SCHEMA, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _default(node: dict):
    if node.get("type") == "object" and "properties" in node:
        given = node.get("default") or {}
        return {k: given.get(k, _default(sub)) for k, sub in node["properties"].items()}
    return node.get("default")


def defaults(section: str) -> dict:
    """Every key of one config section with its default, nested sections too."""
    return _default(schema()["properties"][section])


def with_defaults(section: str, values: dict) -> dict:
    """``values`` over the section's defaults, nested sections merged key by
    key; a key the schema does not know is an error."""
    merged = defaults(section)
    unknown = sorted(set(values) - set(merged))
    if unknown:
        raise ValueError(f"unknown {section} options {unknown}; config/schema.yaml lists them")
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


# The train keys a search trial sets itself (run_trial): it reads every other.
TRIAL_SETS = ("lr", "max_epochs", "patience", "evaluate_test", "train_fraction", "finetune")
# The train keys a comparison job sets itself (compare_backbone).
COMPARE_SETS = ("backbone", "head", "max_epochs", "patience", "train_fraction")


def without(section: dict, keys: tuple[str, ...]) -> dict:
    """``section`` less ``keys``: what a job that sets those keys itself reads."""
    return {k: v for k, v in section.items() if k not in keys}
