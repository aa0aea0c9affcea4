"""Train/val/test splits of the extracted clips, and how much they leak.

Methods:

- ``group`` (default): stratified by class; every group (the clips cut from
  one source video) lands on one side only.
- ``random``: stratified by class at clip level, as in the original model
  card; groups cross sides, so scores measure memory of scenes as well.
- ``official``: UCF101's trainlist/testlist 1-3; validation is carved from
  the official train part by group.

Groups nest inside classes (a group is ``<Class>_gNN``), so a split that is
stratified by class and keeps groups whole assigns the groups of each class
on their own. scikit-learn's StratifiedGroupKFold only cuts equal folds;
here the fractions are free, so each class's groups are dealt out in a seeded
random order, each to the side furthest below its target share of clips.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .manifest import DatasetError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
METHODS = ("group", "random", "official")
SPLIT_COLUMNS = ["clip_id", "shard", "index", "label", "group", "split"]


def check_fractions(fractions: dict[str, float]) -> dict[str, float]:
    keys = set(fractions)
    if keys != set(SPLITS):
        raise ValueError(f"split fractions need exactly the keys {SPLITS}, got {sorted(keys)}")
    if (
        any(not 0 <= fractions[k] <= 1 for k in SPLITS)
        or min(fractions["train"], fractions["val"]) <= 0
    ):
        raise ValueError(
            f"split fractions must lie in [0, 1] with train and val > 0 (early stopping follows "
            f"val), got {fractions}"
        )
    total = sum(fractions.values())
    if abs(total - 1) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {total:g} from {fractions}")
    return {k: float(fractions[k]) for k in SPLITS}


def deal_groups(
    groups: pd.Series, fractions: dict[str, float], rng: np.random.Generator
) -> dict[str, str]:
    """Assign each group (the Series holds one group key per clip) to a split.

    Groups are taken in random order. While every split with a share > 0
    lacks a group and groups remain for the others, the next group goes to
    the first such split; after that, each goes to the split with the largest
    shortfall against its target number of clips (ties broken at random).
    """
    sizes = groups.value_counts(sort=False)
    order = sizes.index.to_numpy()[rng.permutation(len(sizes))]
    total = len(groups)
    wanted = [k for k in fractions if fractions[k] > 0]
    have = dict.fromkeys(fractions, 0)
    out = {}
    for i, g in enumerate(order):
        empty = [k for k in wanted if have[k] == 0]
        if empty and len(order) - i >= len(empty):
            side = empty[0]
        else:
            short = {k: fractions[k] * total - have[k] for k in fractions}
            most = max(short.values())
            tied = [k for k in fractions if short[k] > most - 1e-9]
            # Ties (val and test are often equally short) are broken at random,
            # so that neither side is favoured across classes.
            side = tied[rng.integers(len(tied))]
        out[g] = side
        have[side] += sizes[g]
    return out


def stratified_group_split(
    clips: pd.DataFrame,
    fractions: dict[str, float],
    seed: int,
    group_col: str = "group",
) -> pd.Series:
    """Split labels per clip: per class, whole groups to each side."""
    result = pd.Series(index=clips.index, dtype=object)
    for label, part in clips.groupby("label", sort=True):
        rng = np.random.default_rng([seed, int(label)])
        assigned = deal_groups(part[group_col], fractions, rng)
        result[part.index] = part[group_col].map(assigned)
    return result


def read_split_list(path: str | os.PathLike) -> list[str]:
    """Clip ids (file stems) from a trainlist/testlist file; CRLF and the
    trailing class number of train lists are accepted."""
    ids = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line:
            ids.append(Path(line.split()[0].replace("\\", "/")).stem)
    return ids


def read_official_split(splits_dir: str | os.PathLike, number: int) -> tuple[list[str], list[str]]:
    """(train clip ids, test clip ids) of UCF101's official split ``number``."""
    splits_dir = Path(splits_dir)
    if number not in (1, 2, 3):
        raise ValueError(f"split.official_split must be 1, 2 or 3, not {number!r}")
    paths = [splits_dir / f"{kind}list{number:02d}.txt" for kind in ("train", "test")]
    for p in paths:
        if not p.is_file():
            raise DatasetError(
                f"{p} not found: data.splits_dir must be UCF101's ucfTrainTestlist folder"
            )
    return read_split_list(paths[0]), read_split_list(paths[1])


def official_split(
    clips: pd.DataFrame,
    splits_dir: str | os.PathLike,
    number: int,
    fractions: dict[str, float],
    seed: int,
) -> pd.Series:
    """Official train/test; val carved by group from train, taking the share
    val / (train + val) of the train part."""
    train_ids, test_ids = read_official_split(splits_dir, number)
    both = set(train_ids) & set(test_ids)
    if both:
        raise DatasetError(
            f"{len(both)} clips are in both lists of split {number}, e.g. {sorted(both)[:3]}"
        )
    side = pd.Series(index=clips.index, dtype=object)
    side[clips["clip_id"].isin(set(train_ids))] = "train"
    side[clips["clip_id"].isin(set(test_ids))] = "test"
    unlisted = clips.loc[side.isna(), "clip_id"]
    if len(unlisted):
        log.warning(
            "%d clips are in neither list of official split %d and are left out, e.g. %s",
            len(unlisted),
            number,
            ", ".join(unlisted[:5]),
        )
    listed = len(train_ids) + len(test_ids)
    present = int(side.notna().sum())
    if present < listed:
        log.warning(
            "official split %d lists %d clips; %d of them are among the extracted clips",
            number,
            listed,
            present,
        )
    train = clips[side == "train"]
    share = fractions["val"] / (fractions["train"] + fractions["val"])
    carve = stratified_group_split(train, {"train": 1 - share, "val": share}, seed)
    side[carve.index] = carve
    return side


def leakage(split: pd.DataFrame, column: str = "group") -> dict[str, float]:
    """For val and test, the share of clips whose group (``column``) also
    appears in train. Clips with an empty ``column`` (no group from their
    name) are left out of both sides."""
    split = split[split[column] != ""]
    train_groups = set(split.loc[split["split"] == "train", column])
    out = {}
    for side in ("val", "test"):
        part = split[split["split"] == side]
        out[side] = float(part[column].isin(train_groups).mean()) if len(part) else 0.0
    return out


def name_leakage(clips: pd.DataFrame, method: str) -> dict | None:
    """The leakage of the groups the clips' names give (clips carries
    ``name_group`` and ``split``), when the split's groups are not all those:
    the groups used may keep each other apart while a source video the names
    name sits on two sides. A ``random`` split leaks by design; any other one
    that leaks here is warned about loudly."""
    if "name_group" not in clips or (clips["group"] == clips["name_group"]).all():
        return None
    named = clips[clips["name_group"] != ""]
    out = {
        "clips": {s: int((named["split"] == s).sum()) for s in SPLITS},
        **leakage(named, "name_group"),
    }
    if method != "random" and (out["val"] > 0 or out["test"] > 0):
        log.warning(
            "LEAK: clips of one named source video (_gNN_) sit on two sides of the split: "
            "%.1f%% of named test clips and %.1f%% of named val clips share their name's group "
            "with train (split.groups: auto keeps the names' groups)",
            100 * out["test"],
            100 * out["val"],
        )
    return out


def make_split(
    report: pd.DataFrame,
    method: str = "group",
    fractions: dict[str, float] | None = None,
    *,
    seed: int = 0,
    splits_dir: str | os.PathLike | None = None,
    official_number: int = 1,
) -> tuple[pd.DataFrame, dict]:
    """Split the clips that extracted ok. Returns split.tsv's table and the
    leakage summary."""
    fractions = check_fractions(fractions or {"train": 0.6, "val": 0.2, "test": 0.2})
    if method not in METHODS:
        raise ValueError(f"split.method must be one of {METHODS}, not {method!r}")
    clips = report[report["status"] == "ok"].reset_index(drop=True)
    if clips.empty:
        raise DatasetError("no clip was extracted successfully: nothing to split")
    if method == "group":
        side = stratified_group_split(clips, fractions, seed)
    elif method == "random":
        side = stratified_group_split(clips, fractions, seed, group_col="clip_id")
    else:
        if splits_dir is None:
            raise DatasetError(
                "split.method: official needs data.splits_dir, UCF101's ucfTrainTestlist folder"
            )
        side = official_split(clips, splits_dir, official_number, fractions, seed)
    clips = clips.assign(split=side)
    excluded = int(clips["split"].isna().sum())
    clips = clips[clips["split"].notna()]
    for name in SPLITS:
        if fractions[name] > 0:
            missing = sorted(set(clips["label"]) - set(clips.loc[clips["split"] == name, "label"]))
            if missing:
                log.warning(
                    "%d classes have no clip in %s (too few groups to split), labels %s",
                    len(missing),
                    name,
                    missing[:10],
                )
    out = clips[SPLIT_COLUMNS].reset_index(drop=True)
    counts = out["split"].value_counts()
    summary = {
        "method": method,
        "seed": seed,
        "fractions": fractions,
        "clips": {k: int(counts.get(k, 0)) for k in SPLITS},
        "excluded": excluded,
        "leakage": leakage(out),
    }
    by_names = name_leakage(clips, method)
    if by_names is not None:
        summary["name_leakage"] = by_names
    if method == "official":
        summary["official_split"] = official_number
    return out, summary
