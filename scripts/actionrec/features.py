"""The frozen-feature cache: every clip's per-frame features from a frozen
pretrained backbone, computed once per shard.

A feature shard (results/features/<backbone>/shard-NNNN.h5) mirrors its frame
shard clip for clip:

- ``features``  float16 [n, T * K, F], the backbone's pooled features of every
  stored frame (K frames per segment; see :mod:`.extract`); for a clip
  backbone (a video network, T frames in, T' steps out) float16
  [n, T' * K, F], the T' steps of each of the K views of the clip (view k
  takes stored frame k of every segment), in the frames' order: step s of
  view k at s * K + k, so that a head draws and averages views of steps as it
  does views of frames
- ``label``     int64 [n]
- ``clip_id``   str [n]

with attributes naming the backbone, its weights and their SHA-256, the steps
a head sees (``frames``: T, or T' for a clip backbone; ``clip_frames``: T),
K, S, the frame shard's code version, a digest of the code that computed
them and the seconds the shard took. The
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
            keys = (*expected, "shard_code_version", "stored_frames", "clip_frames")
            attrs = {k: f.attrs.get(k) for k in (*keys, "frames_per_segment")}
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
            # The same frames, split into the same T segments of K frames (a
            # clip backbone's steps and views depend on how).
            same = (
                str(attrs["shard_code_version"]) == str(f.attrs["code_version"])
                and int(attrs["stored_frames"]) == int(f["frames"].shape[1])
                and str(attrs["clip_frames"]) == str(int(f.attrs["frames"]))
                and str(attrs["frames_per_segment"])
                == str(int(f.attrs.get("frames_per_segment", 1)))
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


def clip_features(backbone, stored: np.ndarray, per_segment: int) -> np.ndarray:
    """A clip backbone's features of stored clips [n, T * K, S, S, 3]: every
    view (stored frame k of each segment) through the backbone, float16
    [n, T' * K, F] with step s of view k at s * K + k."""
    views = [
        np.asarray(backbone.predict_on_batch(stored[:, k::per_segment].astype(np.float32)))
        for k in range(per_segment)
    ]
    out = np.stack(views, axis=2)  # [n, T', K, F]
    return out.reshape(len(stored), -1, out.shape[-1]).astype(np.float16)


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

    from .model import build_backbone, feature_steps, is_clip_backbone

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    shard, out = Path(shard), Path(out)
    start = time.perf_counter()
    with h5py.File(shard, "r") as src:
        n, size = len(src["label"]), int(src.attrs["size"])
        frames = src["frames"].shape[1]  # every stored frame: T * K
        t, k = int(src.attrs["frames"]), int(src.attrs.get("frames_per_segment", 1))
        net = build_backbone(backbone, size, weights, frames=t)
        clip = is_clip_backbone(net)
        steps = feature_steps(net, t)
        dim = int(net.output.shape[-1])
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.part")
        with h5py.File(tmp, "w") as dst:
            shape = (n, steps * k, dim)
            feats = dst.create_dataset(
                "features", shape, "float16", chunks=(1, *shape[1:]) if n else None
            )
            for begin in range(0, n, clips_per_batch):
                end = min(n, begin + clips_per_batch)
                stored = src["frames"][begin:end]
                feats[begin:end] = (
                    clip_features(net, stored, k) if clip else frame_features(net, stored)
                )
                log.info("%s: clips %d-%d of %d", shard.name, begin + 1, end, n)
            dst["label"] = src["label"][()]
            dst.create_dataset("clip_id", data=src["clip_id"][()], dtype=h5py.string_dtype())
            dst.attrs.update(
                {
                    **provenance(backbone, weights),
                    # The steps a head sees, as a frame shard's T: T' for a clip backbone.
                    "frames": steps,
                    "clip_frames": t,
                    "backbone_input": "clip" if clip else "frame",
                    "frames_per_segment": k,
                    "stored_frames": frames,
                    "seconds": round(time.perf_counter() - start, 3),
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
