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
    none) and ``source`` (names or discovered), and a summary for split.json."""
    lacking = set(unnamed(clips["clip_id"]))
    name_group = clips["group"].where(~clips["clip_id"].isin(lacking), "")
    out = clips.assign(name_group=name_group, source="names")
    info = {"mode": mode, "source": "names", "unnamed_clips": len(lacking)}
    if discovers(mode, len(lacking)):
        if vectors is None:
            raise ValueError("discovering groups needs the clips' frozen features")
        found = discover_groups(clips, vectors, threshold)
        out = out.assign(group=found, source="discovered")
        info.update(source="discovered", threshold=threshold)
        why = (
            f"{len(lacking)} of {len(clips)} clips have no _gNN_ in their names"
            if mode == "auto"
            else "split.groups is discover"
        )
        log.warning(
            "groups discovered from frozen features (%s): %d groups for %d clips, "
            "cosine distance threshold %s",
            why,
            found.nunique(),
            len(clips),
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


def audit(
    split: pd.DataFrame,
    vectors: np.ndarray,
    *,
    similarity: float = DEFAULT_SIMILARITY,
    pairs: int = 6,
) -> tuple[dict, pd.DataFrame]:
    """For each val and test clip of ``split`` (rows aligned with ``vectors``),
    its most similar train clip of the same class (one of another class can
    only mislead, not lend its label). Returns the summary (per side: the share
    of clips at or above ``similarity``, and the median and largest similarity)
    and the ``pairs`` most similar pairs over both sides."""
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


def warnings_of(method: str, audit_summary: dict | None, max_share: float) -> list[str]:
    """What the numbers of a split then measure, when they measure memory too."""
    out = []
    if method == "random":
        out.append(
            "split.method is random: clips of one source video sit on both sides, so val and "
            "test scores measure memory of actors and scenes as well as recognition"
        )
    for side in ("val", "test"):
        share = (audit_summary or {}).get(side, {}).get("near_duplicates", 0.0)
        if share > max_share:
            out.append(
                f"{share:.0%} of {side} clips have a near-duplicate in train (cosine similarity "
                f">= {audit_summary['similarity']}): their score measures memory of those "
                "clips as well as recognition"
            )
    return out
