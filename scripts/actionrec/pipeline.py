"""tf.data input pipeline streaming clips from the HDF5 shards.

Clips are read one at a time, each a slice of the ``frames`` dataset (one
chunk), by parallel workers; the dataset never sits in memory. The train
stream is reshuffled every epoch and can be augmented; val and test are read
in a fixed order, unaugmented.

A shard may store K frames of each of a clip's T segments (extraction's
``frames_per_segment``). The train stream then draws one of them per segment
at random every epoch, TSN's sparse sampling: the model sees other frames of
a clip every epoch, from the frames or, at no backbone cost, from the feature
cache. Val and test read one fixed view (the same stored frame of every
segment); evaluation averages several (:func:`view_offsets`).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import tensorflow as tf

from .tables import read_tsv

# Share of the frame's side that each of the three test crops keeps (the
# 224-of-256 of MMAction2's ThreeCrop), resized back to S.
CROP_SHARE = 0.875
CROPS = (1, 3)
DEFAULT_FEATURE_MEMORY_MB = 4000  # train.feature_memory_mb


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


@dataclass(frozen=True)
class Data:
    """What one training reads: the split table, the shard files (by name, as
    split.tsv's ``shard`` column names them), the class count and, when the
    backbone's features are cached, the feature shards of the same names."""

    split: Path
    shards: dict[str, Path]
    num_classes: int
    features: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        split: str | os.PathLike,
        shards: Iterable[str | os.PathLike] | str | os.PathLike,
        num_classes: int,
        features: Iterable[str | os.PathLike] | str | os.PathLike = (),
    ) -> Data:
        """From a rule's files (lists of paths) or from folders of them."""
        return cls(Path(split), _by_name(shards), int(num_classes), _by_name(features))

    @classmethod
    def of_rule(cls, inputs) -> Data:
        """From a rule's input: ``split``, ``classes`` (results/data/classes.txt),
        ``shards`` and, if the rule has them, ``features``."""
        from .manifest import read_classes

        features = getattr(inputs, "features", ())
        return cls.of(inputs.split, inputs.shards, len(read_classes(inputs.classes)), features)

    def with_features(self, features: Iterable[str | os.PathLike]) -> Data:
        return Data(self.split, self.shards, self.num_classes, _by_name(features))


def _by_name(files) -> dict[str, Path]:
    if isinstance(files, (str, os.PathLike)):
        files = sorted(Path(files).glob("shard-*.h5"))
    return {Path(f).name: Path(f) for f in files}


@dataclass
class ShardReader:
    """Reads clip ``index`` of shard ``shard``: its frames, uint8 [T, S, S, 3],
    or (``dataset="features"``, of a feature shard) its features [T, F].

    Keeps one open h5py file per shard and thread (h5py file objects are not
    shared between threads)."""

    paths: list[Path]
    dataset: str = "frames"
    _local: threading.local = field(default_factory=threading.local)

    def read(self, shard: int, index: int) -> np.ndarray:
        files = getattr(self._local, "files", None)
        if files is None:
            files = self._local.files = {}
        f = files.get(shard)
        if f is None:
            f = files[shard] = h5py.File(self.paths[shard], "r")
        return f[self.dataset][index]  # a slice: one chunk, no fancy indexing


def read_clip(data: Data, shard: str, index: int, offset: int | None = None) -> np.ndarray:
    """One clip's frames as a model sees them, uint8 [T, S, S, 3]: stored
    frame ``offset`` of every segment (the middle one when None)."""
    path = _shard_file(data.shards, shard, "shard")
    layout = shard_layout(path)
    with h5py.File(path, "r") as f:
        stored = f["frames"][index]
    k = layout.per_segment
    return take_view(stored, k, k // 2 if offset is None else offset)


def clip_table(split_tsv: str | os.PathLike, split: str) -> pd.DataFrame:
    table = read_tsv(split_tsv)
    part = table[table["split"] == split].reset_index(drop=True)
    if part.empty:
        raise ValueError(f"{split_tsv} has no clips in split {split!r}")
    return part


@dataclass(frozen=True)
class Layout:
    """How a shard stores its clips: T segments (the frames a model sees), K
    stored frames of each, S x S pixels."""

    frames: int
    per_segment: int
    size: int

    @property
    def stored(self) -> int:
        return self.frames * self.per_segment


def shard_layout(shard: str | os.PathLike) -> Layout:
    """A shard's layout, from its attributes (K is 1 for shards without one)."""
    with h5py.File(shard, "r") as f:
        attrs = f.attrs
        return Layout(
            int(attrs["frames"]), int(attrs.get("frames_per_segment", 1)), int(attrs["size"])
        )


def shard_geometry(shard: str | os.PathLike) -> tuple[int, int]:
    """(T, S) of the clips in a shard: the frames a model sees, and their side."""
    layout = shard_layout(shard)
    return layout.frames, layout.size


def view_offsets(views: int, per_segment: int) -> list[int]:
    """Which of each segment's K stored frames view v of ``views`` takes:
    spread evenly over the K, the middle one for a single view."""
    if not 1 <= views <= per_segment:
        raise ValueError(
            f"{views} views need at least {views} stored frames per segment, and the shards "
            f"store {per_segment}: set evaluate.views to at most {per_segment}, or extract "
            f"more frames per segment (extract.frames_per_segment: {max(views, 1)})"
        )
    return [int((v + 0.5) * per_segment / views) for v in range(views)]


def take_view(clip: np.ndarray, per_segment: int, offset: int) -> np.ndarray:
    """One view of a stored clip [T * K, ...]: frame ``offset`` of every segment."""
    return clip[offset::per_segment]


def three_crops(clip: tf.Tensor, size: int, crop: int) -> tf.Tensor:
    """Crop ``crop`` (0 left, 1 centre, 2 right) of side ``CROP_SHARE`` x S
    from every frame of a uint8 clip, resized back to S x S."""
    side = int(round(size * CROP_SHARE))
    top = (size - side) // 2
    left = (0, (size - side) // 2, size - side)[crop]
    x = tf.cast(clip[:, top : top + side, left : left + side, :], tf.float32)
    x = tf.image.resize(x, [size, size])
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


def _shard_file(files: dict[str, Path], name: str, what: str) -> Path:
    if name not in files:
        raise FileNotFoundError(f"split.tsv names {what} {name}, which is not among the inputs")
    return files[name]


def load_features(data: Data, table: pd.DataFrame) -> np.ndarray:
    """The cached per-frame features of ``table``'s clips, in its order,
    float16 ``[n, T, F]``: each feature shard read whole once (features are
    small), its clips picked in memory."""
    out = None
    for name, rows in table.groupby("shard", sort=True):
        with h5py.File(_shard_file(data.features, name, "feature shard"), "r") as f:
            block = f["features"][()]
        if out is None:
            out = np.empty((len(table), *block.shape[1:]), dtype=block.dtype)
        out[rows.index.to_numpy()] = block[rows["index"].to_numpy()]
    return out


def data_fingerprint(data: Data) -> dict:
    """What a training's data depend on: the split's content, the clips'
    geometry and sampling, the cached features' provenance, and every shard
    and feature file's size and modification time."""
    out = {
        "split_sha256": hashlib.sha256(data.split.read_bytes()).hexdigest(),
        "num_classes": data.num_classes,
    }
    for kind, files in (("shards", data.shards), ("features", data.features)):
        if files:
            with h5py.File(files[min(files)], "r") as f:
                attrs = {k: v for k, v in f.attrs.items() if k != "source_paths"}
            out[kind] = {k: np.asarray(v).tolist() for k, v in sorted(attrs.items())}
            # Each file as written: re-extracted or recomputed files are other data.
            stats = {name: path.stat() for name, path in sorted(files.items())}
            out[f"{kind}_files"] = {n: [st.st_size, st.st_mtime_ns] for n, st in stats.items()}
    return out


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


# A frame transform of evaluation: (stored frames uint8 [T x K, S, S, 3], the
# clip's position in its split) -> frames of the same shape and dtype.
Transform = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


@dataclass
class Clips:
    """The clips a stream reads: their table (split order), their shard files
    (frames or features) and the layout those record."""

    table: pd.DataFrame
    paths: list[Path]
    layout: Layout

    @classmethod
    def of(cls, data: Data, split: str, features: bool, fraction: float, seed: int) -> Clips:
        table = select_fraction(clip_table(data.split, split), fraction, seed)
        files = data.features if features else data.shards
        what = "feature shard" if features else "shard"
        paths = [_shard_file(files, s, what) for s in sorted(table["shard"].unique())]
        # A feature shard records the layout of the frame shard it was made from.
        return cls(table, paths, shard_layout(paths[0]))

    def locations(self) -> tuple[tf.Tensor, tf.Tensor]:
        """Per clip, the number of its shard among ``paths`` and its index there."""
        number = {s: i for i, s in enumerate(sorted(self.table["shard"].unique()))}
        shard_ids = tf.constant(self.table["shard"].map(number).to_numpy(np.int64))
        return shard_ids, tf.constant(self.table["index"].to_numpy(np.int64))


def frame_source(clips: Clips) -> Callable[[tf.Tensor], tf.Tensor]:
    """Clip source: the stored frames of the clip at a position, uint8
    [T x K, S, S, 3], read by slice from its shard."""
    reader = ShardReader(clips.paths)
    shard_ids, indices = clips.locations()
    shape = [clips.layout.stored, clips.layout.size, clips.layout.size, 3]

    def read(shard, index):
        return reader.read(int(shard), int(index))

    def stored(position):
        clip = tf.numpy_function(
            read, [shard_ids[position], indices[position]], tf.uint8, stateful=False
        )
        return tf.ensure_shape(clip, shape)

    return stored


def feature_source(data: Data, clips: Clips, memory_mb: float) -> Callable[[tf.Tensor], tf.Tensor]:
    """Clip source: the cached features of the clip at a position, float32
    [T x K, F]: held in memory when the split's take at most ``memory_mb``,
    else read from the feature shards one clip at a time."""
    if features_mb(clips.paths, len(clips.table)) <= memory_mb:
        cached = tf.constant(load_features(data, clips.table))
        return lambda position: tf.cast(tf.gather(cached, position), tf.float32)
    reader = ShardReader(clips.paths, "features")
    shard_ids, indices = clips.locations()
    with h5py.File(clips.paths[0], "r") as f:
        shape, dtype = f["features"].shape[1:], tf.as_dtype(f["features"].dtype)

    def stored(position):
        feats = tf.numpy_function(
            lambda shard, index: reader.read(int(shard), int(index)),
            [shard_ids[position], indices[position]],
            dtype,
            stateful=False,
        )
        return tf.cast(tf.ensure_shape(feats, shape), tf.float32)

    return stored


@dataclass
class ViewSampler:
    """Views of a clip's T x K stored frames (or features), each one frame per
    segment: [V, T, ...]. ``drawing``: one view, its frame of every segment
    drawn at random from (seed, epoch, position); else stored frame ``o`` of
    every segment for each ``o`` of ``offsets``."""

    frames: int
    per_segment: int
    offsets: list[int]
    drawing: bool = False
    seed: int = 0

    @classmethod
    def of(cls, layout: Layout, offset, drawing: bool = False, seed: int = 0) -> ViewSampler:
        k = layout.per_segment
        fixed = [k // 2] if offset is None else [int(o) for o in np.atleast_1d(offset)]
        for o in fixed:
            if not 0 <= o < k:
                raise ValueError(f"offset {o} is not one of the {k} stored frames per segment")
        return cls(layout.frames, k, fixed, drawing and k > 1, seed)

    def __call__(self, stored: tf.Tensor, position: tf.Tensor, epoch: tf.Tensor) -> tf.Tensor:
        base = tf.range(self.frames) * self.per_segment
        if self.drawing:
            key = tf.stack([self.seed * 1_000_003 + epoch, -1 - position])
            drawn = tf.random.stateless_uniform(
                [self.frames], key, 0, self.per_segment, dtype=tf.int32
            )
            return tf.gather(stored, base + drawn)[None]
        return tf.stack([tf.gather(stored, base + o) for o in self.offsets])


def make_dataset(
    data: Data,
    split: str,
    batch_size: int,
    *,
    features: bool = False,
    shuffle: bool = False,
    augment: Augment | None = None,
    seed: int = 0,
    fraction: float = 1.0,
    parallel_reads: int | None = None,
    epochs: tuple[int, int] | None = None,
    offset: int | Sequence[int] | None = None,
    crop: int | Sequence[int] | None = None,
    memory_mb: float = DEFAULT_FEATURE_MEMORY_MB,
    transform: Transform | None = None,
) -> tf.data.Dataset:
    """Batches of (clips, one-hot labels [B, C]): uint8 frames
    [B, T, S, S, 3] read from the shards, or with ``features`` the cached
    float32 features [B, T, F] (augmentation does not apply to those): held
    in memory when the split's take at most ``memory_mb``, else read from the
    feature shards one clip at a time.

    ``fraction`` < 1 keeps a seeded, class-stratified share of the split.

    A stream that shuffles, augments or has ``epochs`` is a training stream
    (:func:`training_elements`); any other an evaluation stream
    (:func:`evaluation_elements`), which takes ``offset``, ``crop`` and
    ``transform``.

    With ``epochs`` = (first, stop), the stream holds epochs first .. stop-1
    back to back, each its own batches (``steps_per_epoch`` of them): the
    order of epoch e is a permutation drawn from (seed, e) alone, and each
    clip's augmentation from (seed, e, position). Epoch e is therefore the
    same whether training started at epoch 0 or resumed at e after an
    interruption. Without ``epochs``, the clips come once, in split order
    (val, test).

    Shards that store K > 1 frames per segment: a shuffled stream with
    ``epochs`` draws one stored frame per segment at random, from (seed, e,
    position); any other stream takes stored frame ``offset`` of every
    segment (the middle one when None). ``crop`` (0, 1, 2) takes one of
    three crops of every frame (frames only). Given lists of offsets or
    crops, each element holds every (offset, crop) pair of its clip, offsets
    outer, [V x C, T, ...]: the clip is read once for all its views.
    """
    clips = Clips.of(data, split, features, fraction, seed)
    source = feature_source(data, clips, memory_mb) if features else frame_source(clips)
    augmenting = augment is not None and augment.active and not features
    if shuffle or epochs is not None or augmenting:
        if crop is not None or transform is not None or isinstance(offset, Sequence):
            raise ValueError("crops, lists of views and transforms are for evaluation streams")
        drawing = shuffle and epochs is not None
        views = ViewSampler.of(clips.layout, offset, drawing, seed)
        element = training_elements(source, views, augment if augmenting else None, clips, seed)
    else:
        element = evaluation_elements(source, clips, offset, crop, transform, features)
    return batched(
        clips, element, data.num_classes, batch_size, shuffle, seed, epochs, parallel_reads
    )


def training_elements(
    source, views: ViewSampler, augment: Augment | None, clips: Clips, seed: int
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """The (position, epoch) -> clip of a training stream: one view, drawn per
    epoch where the shards store several frames per segment, augmented from
    (seed, epoch, position)."""

    def element(position, epoch):
        view = views(source(position), position, epoch)[0]
        if augment is None:
            return view
        key = tf.stack([seed * 1_000_003 + epoch, position])
        return augment_clip(view, augment, clips.layout.size, key)

    return element


def evaluation_elements(
    source,
    clips: Clips,
    offset: int | Sequence[int] | None,
    crop: int | Sequence[int] | None,
    transform: Transform | None,
    features: bool,
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """The (position, epoch) -> clip of an evaluation stream: its views
    (``offset``) and crops, [V x C, T, ...] when either is a list.

    ``transform`` is the one place where evaluation changes frames: it gets
    each clip's stored frames as read from the shard, before views and crops
    are taken, so that whatever it does (a corruption deterministic from the
    seed and position) reaches every view and crop the model sees. Without
    one, the clean evaluation."""
    if features and (crop is not None or transform is not None):
        raise ValueError("crops and transforms act on frames; cached features have none")
    views = ViewSampler.of(clips.layout, offset)
    stacked = isinstance(offset, Sequence) or isinstance(crop, Sequence)
    crops = [None] if crop is None else [int(c) for c in np.atleast_1d(crop)]
    size = clips.layout.size

    def element(position, epoch):
        stored = source(position)
        if transform is not None:
            stored = tf.ensure_shape(transform(stored, position), stored.shape)
        taken = views(stored, position, epoch)
        if crop is not None:
            taken = tf.stack([three_crops(v, size, c) for v in tf.unstack(taken) for c in crops])
        return taken if stacked else taken[0]

    return element


def batched(
    clips: Clips,
    element: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    num_classes: int,
    batch_size: int,
    shuffle: bool,
    seed: int,
    epochs: tuple[int, int] | None,
    parallel_reads: int | None,
) -> tf.data.Dataset:
    """Epochs of (element, one-hot label) batches, each epoch's order a
    permutation from (seed, epoch) when shuffled, else split order."""
    labels = tf.constant(clips.table["label"].to_numpy(np.int64))
    n = len(clips.table)
    workers = parallel_reads or tf.data.AUTOTUNE

    def one_epoch(epoch):
        order = tf.range(n, dtype=tf.int64)
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(order, tf.stack([seed, epoch]))

        def pair(position):
            return element(position, epoch), tf.one_hot(labels[position], num_classes)

        ds = tf.data.Dataset.from_tensor_slices(order)
        ds = ds.map(pair, num_parallel_calls=workers, deterministic=True)
        return ds.batch(batch_size)

    if epochs is None:
        ds = one_epoch(tf.constant(0, tf.int64))
    else:
        ds = tf.data.Dataset.range(*epochs).flat_map(one_epoch)
    return ds.prefetch(tf.data.AUTOTUNE)


def features_mb(paths: list[Path], clips: int) -> float:
    """Megabytes that ``clips`` clips' cached features take in memory."""
    with h5py.File(paths[0], "r") as f:
        ds = f["features"]
        return clips * int(np.prod(ds.shape[1:])) * ds.dtype.itemsize / 2**20


def steps_per_epoch(
    split_tsv: str | os.PathLike, split: str, batch_size: int, fraction: float = 1.0, seed: int = 0
) -> int:
    """Batches in one epoch of make_dataset(..., epochs=...)."""
    return -(-len(select_fraction(clip_table(split_tsv, split), fraction, seed)) // batch_size)


def labels_of(split_tsv: str | os.PathLike, split: str) -> np.ndarray:
    return clip_table(split_tsv, split)["label"].to_numpy()
