"""Heads on cached features at UCF101's size: seconds per epoch and per search
trial at train.batch_size (the original's 2) against train.feature_batch_size,
with the features in memory and streamed from the HDF5 cache.

Writes synthetic feature shards of the size of UCF101's train split at the
recipe's layout (default 7,992 train clips x 16 frames x 1,280 features,
float16, with val and test beside them), frame shards that hold only their
layout (the frames are never read), and a small backbone file, so that every
number comes from the workflow's own search trial (`run_trial`: its cache
check, tf.data pipeline and Keras loop).

    python bench/cached_heads.py [--train-clips 7992] [--frames 16] [--classes 101]
        [--batches 2 64 256] [--epochs 10] [--lr 0.003] [--repeats 3] [--memory-mb 4000]
        [--work DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from actionrec.tables import write_tsv  # noqa: E402

CLIPS_PER_SHARD = 1000
FEATURES = 1280
SIZE = 224


def small_backbone(path: Path) -> Path:
    """A frame backbone file with 1,280 features, as the cache's provenance names."""
    import keras

    frame = keras.Input((None, None, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(frame))
    keras.Model(frame, keras.layers.Dense(FEATURES)(x)).save(path)
    return path


def synthetic_cache(work: Path, clips: dict[str, int], frames: int, classes: int, backbone: Path):
    """Feature and frame shards and split.tsv for ``clips`` (per split)."""
    from actionrec.features import provenance

    rng = np.random.default_rng(0)
    sides = [side for side, n in clips.items() for _ in range(n)]
    labels = np.arange(len(sides)) % classes
    centres = rng.normal(size=(classes, FEATURES)).astype(np.float32)
    rows = []
    (work / "shards").mkdir(parents=True)
    (work / "features").mkdir()
    code = "actionrec synthetic"
    for start in range(0, len(sides), CLIPS_PER_SHARD):
        n = min(CLIPS_PER_SHARD, len(sides) - start)
        name = f"shard-{start // CLIPS_PER_SHARD:04d}.h5"
        ids = [f"clip{start + i:06d}" for i in range(n)]
        layout = {"frames": frames, "frames_per_segment": 1, "size": SIZE}
        with h5py.File(work / "shards" / name, "w") as f:
            # Allocated, never written: the frames take no disk and are never read.
            f.create_dataset(
                "frames", (n, frames, SIZE, SIZE, 3), "uint8", chunks=(1, frames, SIZE, SIZE, 3)
            )
            f["clip_id"] = ids
            f["label"] = labels[start : start + n]
            f.attrs.update({**layout, "stored_frames": frames, "code_version": code})
        y = labels[start : start + n]
        x = centres[y][:, None] + 2.0 * rng.normal(size=(n, frames, FEATURES)).astype(np.float32)
        with h5py.File(work / "features" / name, "w") as f:
            f.create_dataset("features", data=x.astype(np.float16), chunks=(1, frames, FEATURES))
            f["clip_id"] = ids
            f["label"] = y
            f.attrs.update(
                {
                    **provenance(str(backbone), "none"),
                    **layout,
                    "clip_frames": frames,
                    "stored_frames": frames,
                    "feature_dim": FEATURES,
                    "shard_code_version": code,
                }
            )
        for i, clip in enumerate(ids):
            label = int(labels[start + i])
            rows.append([clip, name, i, label, f"c{label}_g{start + i}", sides[start + i]])
    split = pd.DataFrame(rows, columns=["clip_id", "shard", "index", "label", "group", "split"])
    write_tsv(split, work / "split.tsv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-clips", type=int, default=7992)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--classes", type=int, default=101)
    parser.add_argument("--batches", type=int, nargs="+", default=[2, 64, 256])
    parser.add_argument("--epochs", type=int, default=10, help="a trial's epochs (search.epochs)")
    parser.add_argument(
        "--memory-mb",
        type=float,
        default=4000,
        help="train.feature_memory_mb of the in-memory runs",
    )
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; the fastest counts")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(args.threads, 2))
    from actionrec.pipeline import Data, features_mb
    from actionrec.search import SearchSettings
    from actionrec.train import run_trial

    work = args.work or Path(tempfile.mkdtemp(prefix="cached-heads-"))
    work.mkdir(parents=True, exist_ok=True)
    held_out = max(1, args.train_clips // 3)
    clips = {"train": args.train_clips, "val": held_out, "test": held_out}
    start = time.perf_counter()
    backbone = work / "backbone.keras"
    if not (work / "split.tsv").exists():  # a --work folder keeps the cache for a rerun
        synthetic_cache(work, clips, args.frames, args.classes, small_backbone(backbone))
    data = Data.of(work / "split.tsv", work / "shards", args.classes, work / "features")
    paths = sorted(data.features.values())
    train_mb = features_mb(paths, args.train_clips)
    print(
        f"synthetic cache: {args.train_clips} train clips x {args.frames} x {FEATURES} float16 "
        f"({train_mb:.0f} MB), {held_out} val, {args.classes} classes; written in "
        f"{time.perf_counter() - start:.1f} s",
        flush=True,
    )
    rows = []
    runs = [(b, args.memory_mb) for b in args.batches]
    runs.append((max(args.batches), min(train_mb / 2, args.memory_mb)))  # streamed
    for batch, memory in runs:
        epochs = 1 if batch < 8 else args.epochs  # batch 2: one epoch says enough
        settings = SearchSettings.from_config({"epochs": epochs})
        section = {
            "backbone": str(backbone),
            "weights": "none",
            "batch_size": 2,
            "feature_batch_size": batch,
            "feature_memory_mb": memory,
        }
        seconds = []
        for _ in range(args.repeats):  # this machine's timings vary: the fastest counts
            with contextlib.redirect_stdout(io.StringIO()):  # Keras's epoch lines
                result = run_trial(args.lr, data, section, settings, work / "trial", seed=0)
            seconds.append(result["seconds"] / epochs)
        rows.append(
            {
                "batch": batch,
                "features": "in memory" if memory >= train_mb else "streamed from HDF5",
                "steps an epoch": -(-args.train_clips // batch),
                "epochs run": epochs,
                "seconds an epoch (fastest)": round(min(seconds), 1),
                "slowest": round(max(seconds), 1),
                f"seconds a {args.epochs}-epoch trial": round(min(seconds) * args.epochs, 1),
            }
        )
        print(pd.DataFrame(rows).tail(1).to_string(index=False, header=len(rows) == 1), flush=True)
    print("\n" + pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
