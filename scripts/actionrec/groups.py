"""Groups found from frozen features, and the near-duplicate audit of a split.

UCF101's names carry the group (``gNN``: the clips cut from one source video),
and the group split keeps each group on one side. A dataset whose names do not
makes every clip its own group, and the group split becomes a random one: test
clips then have near-identical siblings in train. Clips cut from one source
video share actor, scene and camera, so their frozen features lie close
together: within each class, agglomerative clustering by cosine distance
(average linkage, cut at ``threshold``) recovers most of the groups.

The audit compares every val and test clip with its most similar train clip
(cosine of the time-averaged frozen features) and counts those above a
similarity: on real UCF101 clips with the Lite0 ImageNet features, clips of one
source video have a median nearest-sibling similarity of 0.96, clips of
different ones 0.77 (the 99th percentile 0.92).
"""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from .catalog import discovers
from .manifest import parse_clip_name

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.15  # cosine distance at which a class's clusters are cut
DEFAULT_SIMILARITY = 0.92  # cosine similarity of a near-duplicate
DEFAULT_MAX_SHARE = 0.1  # share of val or test clips with one in train before a warning
# sibling_in_train's intercept and slope: bench/groups.py's fit over 20 seeded splits
# of the 290 real clips (2,338 held-out clips); docs/results.md gives how far it is off
LEAK_CURVE = (-9.39, 12.08)


def unnamed(clip_ids) -> list[str]:
    """The clips whose names carry no group (no ``_gNN_cNN``)."""
    return [c for c in clip_ids if parse_clip_name(c)[0] is None]


def clip_vectors(feature_files, clips: pd.DataFrame) -> np.ndarray:
    """One unit vector per clip of ``clips`` (its order; columns clip_id, shard,
    index): the mean of its cached per-frame features over every stored frame.
    ``feature_files`` are feature shards, named as split.tsv and the extraction
    report name the frame shards, each read whole once."""
    features = {Path(f).name: Path(f) for f in feature_files}
    if clips.empty:
        return np.empty((0, 0), dtype=np.float32)
    out = None
    for name, rows in clips.groupby("shard", sort=True):
        if name not in features:
            raise FileNotFoundError(f"no feature shard {name} among {sorted(features)}")
        with h5py.File(features[name], "r") as f:
            block = f["features"][()]
            ids = f["clip_id"].asstr()[()]
        index = rows["index"].to_numpy()
        stale = [
            c for c, i in zip(rows["clip_id"], index, strict=True) if i >= len(ids) or ids[i] != c
        ]
        if stale:
            raise ValueError(
                f"{features[name]} does not hold clip {stale[0]} where the extraction put it: "
                "the feature cache is stale; delete it and rerun"
            )
        vectors = block[index].astype(np.float32)
        vectors = vectors.reshape(len(index), -1, vectors.shape[-1]).mean(axis=1)
        if out is None:
            out = np.empty((len(clips), vectors.shape[-1]), dtype=np.float32)
        out[rows.index.to_numpy()] = vectors
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms > 0, norms, 1.0)


def discover_groups(
    clips: pd.DataFrame, vectors: np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> pd.Series:
    """Pseudo-groups ``<Class>_dNN``, one clustering per class (``clips`` has a
    ``class`` column; ``vectors`` are its rows' unit vectors): agglomerative,
    cosine distance, average linkage, cut at ``threshold``. Clusters are
    numbered in the order of their first clip, so the result does not depend on
    the clustering's own numbering."""
    from sklearn.cluster import AgglomerativeClustering

    if not 0 < threshold < 2:
        raise ValueError(f"split.discover.threshold must be in (0, 2), not {threshold!r}")
    found = pd.Series("", index=clips.index, dtype=object)
    for cls, rows in clips.groupby("class", sort=True):
        positions = clips.index.get_indexer(rows.index)
        if len(rows) == 1:
            labels = np.zeros(1, dtype=int)
        else:
            labels = AgglomerativeClustering(
                n_clusters=None,
                metric="cosine",
                linkage="average",
                distance_threshold=threshold,
            ).fit_predict(vectors[positions])
        order = {label: n for n, label in enumerate(dict.fromkeys(labels))}
        width = max(2, len(str(len(order))))
        found[rows.index] = [f"{cls}_d{order[label] + 1:0{width}d}" for label in labels]
    return found


def choose_groups(
    clips: pd.DataFrame, mode: str, vectors: np.ndarray | None, threshold: float
) -> tuple[pd.DataFrame, dict]:
    """``clips`` (with clip_id, class, group) with the group the split is to
    use, a ``name_group`` column (the group from the name, '' when it has
    none) and ``source`` (names or discovered, per clip), and a summary for
    split.json.

    In ``auto``, a name's group is never overridden: clips without one are
    clustered among themselves, so a discovered group cannot split the clips
    that their names put together. ``discover`` clusters every clip."""
    lacking = set(unnamed(clips["clip_id"]))
    has_name = ~clips["clip_id"].isin(lacking)
    name_group = clips["group"].where(has_name, "")
    out = clips.assign(name_group=name_group, source="names")
    info = {"mode": mode, "source": "names", "unnamed_clips": len(lacking)}
    if discovers(mode, len(lacking)):
        if vectors is None:
            raise ValueError("discovering groups needs the clips' frozen features")
        chosen = ~has_name if mode == "auto" else pd.Series(True, index=clips.index)
        rows = clips[chosen]
        found = discover_groups(rows, vectors[clips.index.get_indexer(rows.index)], threshold)
        out.loc[chosen, "group"] = found
        out.loc[chosen, "source"] = "discovered"
        mixed = bool(chosen.sum() < len(clips))
        info.update(source="names and discovered" if mixed else "discovered", threshold=threshold)
        why = (
            f"{len(lacking)} of {len(clips)} clips have no _gNN_ in their names"
            if mode == "auto"
            else "split.groups is discover"
        )
        log.warning(
            "groups discovered from frozen features (%s): %d groups for %d clips%s, "
            "cosine distance threshold %s",
            why,
            found.nunique(),
            len(rows),
            "; the other clips keep the groups their names give" if mixed else "",
            threshold,
        )
    elif lacking:
        log.warning(
            "%d of %d clips have no _gNN_ in their names and split.groups is names: each is a "
            "group of its own, so the group split is a random split for them (split.groups: "
            "auto discovers their groups)",
            len(lacking),
            len(clips),
        )
    info["groups"] = int(out["group"].nunique())
    return out, info


def sibling_in_train(similarity: np.ndarray) -> np.ndarray:
    """The chance that a held-out clip's source video also sits in train, from
    the cosine similarity of its nearest train clip of its class: a logistic
    curve fitted by bench/groups.py on real UCF101 clips whose true groups it
    hides (EfficientNet-Lite0 ImageNet features, groups discovered at 0.15)."""
    a, b = LEAK_CURVE
    return 1.0 / (1.0 + np.exp(-(a + b * similarity)))


def audit(
    split: pd.DataFrame,
    vectors: np.ndarray,
    *,
    similarity: float = DEFAULT_SIMILARITY,
    pairs: int = 6,
    discovered: np.ndarray | None = None,
) -> tuple[dict, pd.DataFrame]:
    """For each val and test clip of ``split`` (rows aligned with ``vectors``),
    its most similar train clip of the same class (one of another class can
    only mislead, not lend its label). Returns the summary (per side: the share
    of clips at or above ``similarity``, and the median and largest similarity)
    and the ``pairs`` most similar pairs over both sides.

    ``discovered`` marks the rows whose group was discovered, not named: their
    group says nothing of their source video, so each side also gets
    ``estimated_leakage``, the expected share of its clips whose source video
    is in train (``sibling_in_train`` for discovered clips, the group's own
    answer for named ones)."""
    if not -1 <= similarity <= 1:
        raise ValueError(f"split.audit.similarity must be in [-1, 1], not {similarity!r}")
    labels = split["label"].to_numpy()
    train = np.flatnonzero((split["split"] == "train").to_numpy())
    summary, nearest = {"similarity": similarity}, []
    for side in ("val", "test"):
        rows = np.flatnonzero((split["split"] == side).to_numpy())
        rows = rows[np.isin(labels[rows], labels[train])]  # a class without train clips: none
        if not len(rows):
            summary[side] = {"clips": 0, "near_duplicates": 0.0}
            continue
        sims = vectors[rows] @ vectors[train].T
        sims[labels[rows][:, None] != labels[train][None, :]] = -np.inf
        best = sims.argmax(axis=1)
        top = sims[np.arange(len(rows)), best]
        summary[side] = {
            "clips": int(len(rows)),
            "near_duplicates": round(float((top >= similarity).mean()), 4),
            "median_similarity": round(float(np.median(top)), 4),
            "max_similarity": round(float(top.max()), 4),
        }
        if discovered is not None and discovered[rows].any():
            groups = split["group"].to_numpy()
            known = np.isin(groups[rows], groups[train]).astype(float)
            chance = np.where(discovered[rows], np.maximum(known, sibling_in_train(top)), known)
            summary[side]["discovered_clips"] = int(discovered[rows].sum())
            summary[side]["estimated_leakage"] = round(float(chance.mean()), 4)
        nearest.append(
            pd.DataFrame(
                {
                    "split": side,
                    "clip_id": split["clip_id"].to_numpy()[rows],
                    "train_clip": split["clip_id"].to_numpy()[train[best]],
                    "similarity": top.round(4),
                    "same_group": (
                        split["group"].to_numpy()[rows] == split["group"].to_numpy()[train[best]]
                    ),
                }
            )
        )
    table = pd.concat(nearest, ignore_index=True) if nearest else pd.DataFrame()
    if len(table):
        table = table.sort_values("similarity", ascending=False, kind="stable")
    return summary, table.head(pairs).reset_index(drop=True)


def warnings_of(
    method: str,
    audit_summary: dict | None,
    max_share: float,
    name_leakage: dict | None = None,
) -> list[str]:
    """What the numbers of a split then measure, when they measure memory too."""
    out = []
    if method == "random":
        out.append(
            "split.method is random: clips of one source video sit on both sides, so val and "
            "test scores measure memory of actors and scenes as well as recognition"
        )
    elif name_leakage and max(name_leakage["val"], name_leakage["test"]) > 0:
        out.append(
            f"clips of one named source video (_gNN_) sit on two sides of the split: "
            f"{name_leakage['test']:.1%} of named test and {name_leakage['val']:.1%} of named "
            "val clips share their name's group with train, so their scores measure memory as "
            "well as recognition (split.groups: auto keeps the names' groups)"
        )
    for side in ("val", "test"):
        part = (audit_summary or {}).get(side, {})
        share = part.get("near_duplicates", 0.0)
        if share > max_share:
            out.append(
                f"{share:.0%} of {side} clips have a near-duplicate in train (cosine similarity "
                f">= {audit_summary['similarity']}): their score measures memory of those "
                "clips as well as recognition"
            )
        estimate = part.get("estimated_leakage", 0.0)
        if method != "random" and estimate > max_share:
            out.append(
                f"the groups of {part['discovered_clips']} {side} clips were discovered, not "
                f"named, so its leakage of 0 is measured on discovered groups: an estimated "
                f"{estimate:.0%} of {side} clips have their source video in train (from the "
                "similarity of their nearest train clip)"
            )
    return out
