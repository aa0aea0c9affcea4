"""tf.data input pipeline streaming clips from the HDF5 shards.

Clips are read one at a time, each a slice of the ``frames`` dataset (one
chunk), by parallel workers; the dataset never sits in memory. The train
stream is reshuffled every epoch and can be augmented; val and test are read
in a fixed order, unaugmented.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import tensorflow as tf

from .tables import read_tsv


@dataclass
class Augment:
    """Train-time augmentation; one draw per clip, the same for all its frames."""

    crop: float = 0.0  # random crop of up to this share of the side, resized back
    flip: bool = False  # horizontal flip with probability 1/2
    brightness: float = 0.0  # brightness shift of up to this share of 255
    contrast: float = 0.0  # contrast factor in [1 - contrast, 1 + contrast]
    low_light: float = 0.0  # probability of darkening the clip to 20-60% brightness

    @classmethod
    def from_config(cls, cfg: dict | None) -> Augment:
        return cls(**(cfg or {}))

    @property
    def active(self) -> bool:
        return bool(self.crop or self.flip or self.brightness or self.contrast or self.low_light)


@dataclass
class ShardReader:
    """Reads clip ``index`` of shard ``shard`` as uint8 [T, S, S, 3].

    Keeps one open h5py file per shard and thread (h5py file objects are not
    shared between threads)."""

    shard_dir: Path
    shards: list[str]
    _local: threading.local = field(default_factory=threading.local)

    def read(self, shard: int, index: int) -> np.ndarray:
        files = getattr(self._local, "files", None)
        if files is None:
            files = self._local.files = {}
        f = files.get(shard)
        if f is None:
            f = files[shard] = h5py.File(self.shard_dir / self.shards[shard], "r")
        return f["frames"][index]  # a slice: one chunk, no fancy indexing


def clip_table(split_tsv: str | os.PathLike, split: str) -> pd.DataFrame:
    table = read_tsv(split_tsv)
    part = table[table["split"] == split].reset_index(drop=True)
    if part.empty:
        raise ValueError(f"{split_tsv} has no clips in split {split!r}")
    return part


def shard_geometry(shard_dir: str | os.PathLike, shard: str) -> tuple[int, int]:
    """(T, S) of the clips in a shard, from its attributes."""
    with h5py.File(Path(shard_dir) / shard, "r") as f:
        return int(f.attrs["frames"]), int(f.attrs["size"])


def augment_clip(clip: tf.Tensor, aug: Augment, size: int, seed: tf.Tensor) -> tf.Tensor:
    """Apply one random draw of ``aug`` to every frame of a uint8 clip.

    Stateless random ops seeded per clip keep augmentation reproducible with
    parallel reads."""
    seeds = tf.random.experimental.stateless_split(seed, num=8)
    draws = iter(range(8))

    def uniform(low, high, dtype=tf.float32):
        return tf.random.stateless_uniform([], seeds[next(draws)], low, high, dtype=dtype)

    x = tf.cast(clip, tf.float32)
    if aug.crop > 0:
        side = tf.cast(tf.round(size * (1.0 - uniform(0.0, aug.crop))), tf.int32)
        top = uniform(0, size - side + 1, tf.int32)
        left = uniform(0, size - side + 1, tf.int32)
        x = tf.image.resize(x[:, top : top + side, left : left + side, :], [size, size])
    if aug.flip:
        x = tf.cond(uniform(0.0, 1.0) < 0.5, lambda: tf.reverse(x, axis=[2]), lambda: x)
    if aug.contrast > 0:
        factor = uniform(1.0 - aug.contrast, 1.0 + aug.contrast)
        mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
        x = (x - mean) * factor + mean
    if aug.brightness > 0:
        x = x + 255.0 * uniform(-aug.brightness, aug.brightness)
    if aug.low_light > 0:
        dark = uniform(0.2, 0.6)
        x = tf.cond(uniform(0.0, 1.0) < aug.low_light, lambda: x * dark, lambda: x)
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


def select_fraction(table: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """A seeded, class-stratified share of ``table`` (at least one clip per class)."""
    if fraction >= 1:
        return table
    shuffled = table.sample(frac=1.0, random_state=seed)
    rank = shuffled.groupby("label").cumcount()
    size = shuffled.groupby("label")["label"].transform("size")
    keep = rank < np.maximum(1, np.round(fraction * size))
    return shuffled[keep].sort_index().reset_index(drop=True)


def make_dataset(
    split_tsv: str | os.PathLike,
    shard_dir: str | os.PathLike,
    split: str,
    num_classes: int,
    batch_size: int,
    shuffle: bool = False,
    augment: Augment | None = None,
    seed: int = 0,
    fraction: float = 1.0,
    parallel_reads: int | None = None,
    epochs: tuple[int, int] | None = None,
) -> tf.data.Dataset:
    """Batches of (uint8 clips [B, T, S, S, 3], one-hot labels [B, C]).

    ``fraction`` < 1 keeps a seeded, class-stratified share of the split.

    With ``epochs`` = (first, stop), the stream holds epochs first .. stop-1
    back to back, each its own batches (``steps_per_epoch`` of them): the
    order of epoch e is a permutation drawn from (seed, e) alone, and each
    clip's augmentation from (seed, e, position). Epoch e is therefore the
    same whether training started at epoch 0 or resumed at e after an
    interruption. Without ``epochs``, the clips come once, in split order
    (val, test).
    """
    table = select_fraction(clip_table(split_tsv, split), fraction, seed)
    shards = sorted(table["shard"].unique())
    frames, size = shard_geometry(shard_dir, shards[0])
    reader = ShardReader(Path(shard_dir), shards)
    shard_ids = tf.constant(table["shard"].map({s: i for i, s in enumerate(shards)}), tf.int64)
    indices = tf.constant(table["index"].to_numpy(np.int64))
    labels = tf.constant(table["label"].to_numpy(np.int64))
    n = len(table)
    workers = parallel_reads or tf.data.AUTOTUNE
    augmenting = augment is not None and augment.active

    def read(shard, index):
        return reader.read(int(shard), int(index))

    def load(position, epoch):
        clip = tf.numpy_function(
            read, [shard_ids[position], indices[position]], tf.uint8, stateful=False
        )
        clip = tf.ensure_shape(clip, [frames, size, size, 3])
        if augmenting:
            clip = augment_clip(clip, augment, size, tf.stack([seed * 1_000_003 + epoch, position]))
        return clip, tf.one_hot(labels[position], num_classes)

    def one_epoch(epoch):
        order = tf.range(n, dtype=tf.int64)
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(order, tf.stack([seed, epoch]))
        ds = tf.data.Dataset.from_tensor_slices(order)
        ds = ds.map(lambda i: load(i, epoch), num_parallel_calls=workers, deterministic=True)
        return ds.batch(batch_size)

    if epochs is None:
        ds = one_epoch(tf.constant(0, tf.int64))
    else:
        ds = tf.data.Dataset.range(*epochs).flat_map(one_epoch)
    return ds.prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(split_tsv: str | os.PathLike, split: str, batch_size: int,
                    fraction: float = 1.0, seed: int = 0) -> int:  # fmt: skip
    """Batches in one epoch of make_dataset(..., epochs=...)."""
    return -(-len(select_fraction(clip_table(split_tsv, split), fraction, seed)) // batch_size)


def labels_of(split_tsv: str | os.PathLike, split: str) -> np.ndarray:
    return clip_table(split_tsv, split)["label"].to_numpy()
