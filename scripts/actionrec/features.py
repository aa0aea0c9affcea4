"""The frozen-feature cache: every clip's per-frame features from a frozen
pretrained backbone, computed once per shard.

A feature shard (results/features/<backbone>/shard-NNNN.h5) mirrors its frame
shard clip for clip:

- ``features``  float16 [n, T * K, F], the backbone's pooled features of every
  stored frame (K frames per segment; see :mod:`.extract`)
- ``label``     int64 [n]
- ``clip_id``   str [n]

with attributes naming the backbone, its weights and their SHA-256, T, K, S,
the frame shard's code version and a digest of the code that computed them. The
learning-rate search, the comparison and the frozen stage of training train
heads on these: no backbone pass per epoch. Written under a temporary name and
renamed when complete; a training checks every shard's provenance against its
own backbone and frames before it reads one (:func:`check_cache`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from .catalog import is_backbone_file
from .provenance import code_digest, file_sha256

log = logging.getLogger(__name__)


def provenance(backbone: str, weights: str | None) -> dict:
    """What the features depend on besides the frames: the backbone and its
    weights, by content, and the code that computes features."""
    out = {
        "backbone": str(backbone),
        "weights": str(weights),
        "features_code": code_digest(__file__),
    }
    if is_backbone_file(backbone):
        out["backbone_sha256"] = file_sha256(backbone)
    if weights not in (None, "none", "imagenet"):
        out["weights_sha256"] = file_sha256(weights)
    return out


def check_cache(
    features: Mapping[str, Path], shards: Mapping[str, Path], backbone: str, weights: str | None
) -> None:
    """Stop, naming the file and the fix, unless every feature shard was
    computed by this backbone, these weights and this code from the frame
    shard of its name as it is now (same clips, same extraction)."""
    expected = provenance(backbone, weights)
    # A file is known by its content: moved or spelled otherwise, it is the same.
    for key in ("backbone", "weights"):
        if f"{key}_sha256" in expected:
            del expected[key]
    for name, path in sorted(features.items()):
        with h5py.File(path, "r") as f:
            attrs = {k: f.attrs.get(k) for k in (*expected, "shard_code_version", "stored_frames")}
            clip_ids = f["clip_id"].asstr()[()]
        fix = f"delete {path.parent}/ (or run snakemake --forcerun features) to compute it again"
        wrong = [
            f"{key} {attrs[key]!r}, expected {value!r}"
            for key, value in expected.items()
            if str(attrs[key]) != str(value)
        ]
        if wrong:
            raise ValueError(f"{path} holds features of another backbone or code: {wrong}; {fix}")
        with h5py.File(shards[name], "r") as f:
            same = (
                str(attrs["shard_code_version"]) == str(f.attrs["code_version"])
                and int(attrs["stored_frames"]) == int(f["frames"].shape[1])
                and list(clip_ids) == list(f["clip_id"].asstr()[()])
            )
        if not same:
            raise ValueError(f"{path} was computed from other frames than {shards[name]}; {fix}")


def frame_features(backbone, clips: np.ndarray) -> np.ndarray:
    """Per-frame features of uint8 clips [n, T, S, S, 3]: float16 [n, T, F]."""
    n, t = clips.shape[:2]
    frames = clips.reshape(n * t, *clips.shape[2:]).astype(np.float32)
    out = np.asarray(backbone.predict_on_batch(frames), dtype=np.float32)
    return out.reshape(n, t, -1).astype(np.float16)


def cache_features(
    shard: str | os.PathLike,
    out: str | os.PathLike,
    backbone: str,
    weights: str | None,
    *,
    clips_per_batch: int = 8,
    threads: int | None = None,
) -> int:
    """Write the features of every clip of ``shard`` to ``out``; returns the
    clip count."""
    import tensorflow as tf

    from .model import build_backbone

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    shard, out = Path(shard), Path(out)
    start = time.perf_counter()
    with h5py.File(shard, "r") as src:
        n, size = len(src["label"]), int(src.attrs["size"])
        frames = src["frames"].shape[1]  # every stored frame: T * K
        net = build_backbone(backbone, size, weights)
        dim = int(net.output.shape[-1])
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.part")
        with h5py.File(tmp, "w") as dst:
            feats = dst.create_dataset(
                "features", (n, frames, dim), "float16", chunks=(1, frames, dim) if n else None
            )
            for begin in range(0, n, clips_per_batch):
                end = min(n, begin + clips_per_batch)
                feats[begin:end] = frame_features(net, src["frames"][begin:end])
                log.info("%s: clips %d-%d of %d", shard.name, begin + 1, end, n)
            dst["label"] = src["label"][()]
            dst.create_dataset("clip_id", data=src["clip_id"][()], dtype=h5py.string_dtype())
            dst.attrs.update(
                {
                    **provenance(backbone, weights),
                    "frames": int(src.attrs["frames"]),
                    "frames_per_segment": int(src.attrs.get("frames_per_segment", 1)),
                    "stored_frames": frames,
                    "size": size,
                    "feature_dim": dim,
                    "shard_code_version": src.attrs["code_version"],
                }
            )
    os.replace(tmp, out)
    seconds = time.perf_counter() - start
    rate = n * frames / max(seconds, 1e-9)
    log.info("%s: %d clips, %d frames in %.1f s (%.0f frames/s)", out, n, n * frames, seconds, rate)
    return n
