"""Input pipeline throughput against on-the-fly decoding and against training.

Prints, side by side in one run, on the same clips with the same T and S:
  1. clips/s from the HDF5 shards through this workflow's tf.data pipeline;
  2. clips/s decoding every clip on the fly with OpenCV, the way the TensorFlow
     video classification tutorial's FrameGenerator loads UCF101;
  3. frames/s (and clips/s) that training the default model consumes.

Usage (after the workflow has built results/data):
  python bench/input_pipeline.py [--data results/data] [--batch 2] [--steps 30]
      [--backbone efficientnetb0]
Needs opencv-python-headless (in requirements-dev.txt).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from actionrec.model import build_model  # noqa: E402
from actionrec.pipeline import Data, clip_table, make_dataset, shard_geometry  # noqa: E402
from actionrec.tables import read_tsv  # noqa: E402


def tutorial_frames(path: str, n_frames: int, size: int, frame_step: int = 15) -> np.ndarray:
    """The tutorial's frames_from_video_file: seek to a random start, read
    every frame_step-th frame with OpenCV, convert to float and resize with pad."""
    import cv2

    result = []
    src = cv2.VideoCapture(str(path))
    video_length = src.get(cv2.CAP_PROP_FRAME_COUNT)
    need_length = 1 + (n_frames - 1) * frame_step
    start = (
        0 if need_length > video_length else random.randint(0, int(video_length - need_length) + 1)
    )
    src.set(cv2.CAP_PROP_POS_FRAMES, start)
    ret, frame = src.read()
    if not ret:
        raise SystemExit(f"OpenCV cannot read a frame of {path}")
    result.append(format_frame(frame, size))
    for _ in range(n_frames - 1):
        for _ in range(frame_step):
            ret, frame = src.read()
        result.append(format_frame(frame, size) if ret else np.zeros_like(result[0]))
    src.release()
    return np.array(result)[..., [2, 1, 0]]  # BGR -> RGB


def format_frame(frame: np.ndarray, size: int) -> np.ndarray:
    frame = tf.image.convert_image_dtype(frame, tf.float32)
    return tf.image.resize_with_pad(frame, size, size).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("results/data"))
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30, help="training steps to time")
    ap.add_argument(
        "--backbone",
        default="efficientnetb0",
        help="the trained model's backbone (default efficientnetb0, the workflow's)",
    )
    args = ap.parse_args()
    split_tsv, shard_dir = args.data / "split.tsv", args.data / "shards"
    table = clip_table(split_tsv, "train")
    manifest = read_tsv(args.data / "manifest.tsv").set_index("clip_id")
    num_classes = int(manifest["label"].max()) + 1
    data = Data.of(split_tsv, shard_dir, num_classes)
    frames, size = shard_geometry(data.shards[table["shard"].iloc[0]])
    n = len(table)
    print(f"{n} train clips, T={frames}, S={size}, batch {args.batch}")

    ds = make_dataset(data, "train", args.batch, shuffle=True)
    for _ in ds:  # warm the page cache and tf.data
        pass
    start = time.perf_counter()
    for _ in ds:
        pass
    pipeline = n / (time.perf_counter() - start)

    # The manifest's paths are relative to the run's folder (the one holding results/).
    run = args.data.resolve().parents[1]
    paths = [str(run / p) for p in manifest.loc[table["clip_id"], "path"]]
    tutorial_frames(paths[0], frames, size)
    start = time.perf_counter()
    for p in paths:
        tutorial_frames(p, frames, size)
    opencv = n / (time.perf_counter() - start)

    model = build_model(num_classes, frames, size, args.backbone)
    model.compile(optimizer="adam", loss="categorical_crossentropy", jit_compile=False)
    batches = ds.repeat()
    model.fit(batches, steps_per_epoch=3, epochs=1, verbose=0)  # trace
    start = time.perf_counter()
    model.fit(batches, steps_per_epoch=args.steps, epochs=1, verbose=0)
    train_clips = args.steps * args.batch / (time.perf_counter() - start)

    print(f"{'':42s}{'clips/s':>10s}")
    print(f"{'tf.data from HDF5 shards':42s}{pipeline:10.1f}")
    print(f"{'OpenCV on-the-fly decode (tutorial)':42s}{opencv:10.1f}")
    print(
        f"{f'training consumes ({args.backbone})':42s}{train_clips:10.1f}"
        f"   = {train_clips * frames:.0f} frames/s"
    )
    print(
        f"pipeline / on-the-fly decode: {pipeline / opencv:.1f}x; "
        f"pipeline / training: {pipeline / train_clips:.1f}x"
    )


if __name__ == "__main__":
    main()
