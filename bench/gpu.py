"""GPU check: training and feature-caching throughput, and whether the loader keeps up.

For each mode (float32 or mixed precision, the keras policy mixed_float16;
XLA, jit_compile, off or on), on synthetic uint8 clips of T frames of S x S:

  train   the workflow's clip model (actionrec.model.build_model: a frame
          backbone, default efficientnetb0 with random weights, and the
          average head), train_on_batch on one fixed in-memory batch:
          frames/s and clips/s (warm-up steps excluded);
  cache   the same backbone (actionrec.model.build_backbone) as the feature
          cache runs it, predict_on_batch over the batch's B x T frames: frames/s;
  and both again for a clip backbone (a video network saved as .keras, such
  as ../shared/models/i3d-kinetics400/backbone.keras) given by --clip-backbone.

With --data (a workflow's results/data: split.tsv, classes.txt, shards/) it
also times the workflow's tf.data train stream (actionrec.pipeline.make_dataset,
shuffled, as training reads it; with --augment also augmented as
config/config.yaml's train.augment) in clips/s, and prints the loader's clips/s
over the clips/s each training consumes: below 1, the loader does not keep up.

Every mode runs in a fresh process (the precision policy is global), the
script calling itself with --one-mode; so does the loader. It downloads
nothing (random weights; a clip backbone only from the file given). On a lent
GPU, from the repository root:

    python bench/gpu.py --clip-backbone ../shared/models/i3d-kinetics400/backbone.keras \\
        --data results/data

It runs on CPU too (mixed precision is slow there, but works).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

MODES = ("fp32", "fp32+xla", "mixed", "mixed+xla")
WARMUP = 2  # steps before timing: tracing, and XLA's compilation
NUM_CLASSES = 101  # UCF101's; the head's width hardly matters to throughput
TAG = "GPU_BENCH "  # marks a child's result line


def device_info() -> dict:
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    name = "CPU"
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        name = f"{details.get('device_name', 'GPU')} (x{len(gpus)})"
    return {"device": name, "tensorflow": tf.__version__, "keras": keras.__version__}


def compute_dtype(net) -> str:
    """The compute dtype most of a network's weighted layers run in."""
    from collections import Counter

    from actionrec.model import all_layers

    counts = Counter(layer.compute_dtype for layer in all_layers(net) if layer.weights)
    return counts.most_common(1)[0][0] if counts else "?"


def time_calls(step, steps: int) -> float:
    """Seconds a call of ``step`` takes, after WARMUP untimed calls."""
    for _ in range(WARMUP):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def measure_backbone(args, backbone: str, xla: bool) -> dict:
    """Training and caching throughput of one backbone in the current policy."""
    import numpy as np
    import tensorflow as tf

    from actionrec.model import build_backbone, build_model, is_clip_backbone
    from actionrec.resume import build_for_fit

    b, t, s = args.batch, args.frames, args.size
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (b, t, s, s, 3), dtype=np.uint8)
    labels = tf.one_hot(rng.integers(0, NUM_CLASSES, b), NUM_CLASSES).numpy()
    weights = "none" if Path(backbone).suffix == ".keras" else None
    model = build_model(NUM_CLASSES, t, s, backbone, args.head, weights=weights)
    model.compile(optimizer="adam", loss="categorical_crossentropy", jit_compile=xla)
    x, y = tf.constant(clips), tf.constant(labels)
    build_for_fit(model, (x, y))  # as the workflow's training: one trace
    train_s = time_calls(lambda: model.train_on_batch(x, y), args.steps)

    net = build_backbone(backbone, s, None, frames=t)
    net.compile(jit_compile=xla)
    # As actionrec.features feeds it: float32 frames [B*T, S, S, 3], or clips.
    inputs = clips.astype(np.float32)
    if not is_clip_backbone(net):
        inputs = inputs.reshape(b * t, s, s, 3)
    cache_s = time_calls(lambda: net.predict_on_batch(inputs), args.steps)
    return {
        "train frames/s": b * t / train_s,
        "train clips/s": b / train_s,
        "cache frames/s": b * t / cache_s,
        "dtype": compute_dtype(net),
    }


def measure_loader(args) -> dict:
    """Clips/s of the workflow's shuffled train stream over the shards of --data
    (bench/input_pipeline.py times it the same way, over whole epochs)."""
    from actionrec.manifest import read_classes
    from actionrec.pipeline import Augment, Data, clip_table, make_dataset, shard_geometry

    split, shards = args.data / "split.tsv", args.data / "shards"
    n = len(clip_table(split, "train"))
    data = Data.of(split, shards, len(read_classes(args.data / "classes.txt")))
    frames, size = shard_geometry(next(iter(data.shards.values())))
    batches = args.loader_batches
    epochs = math.ceil((WARMUP + batches) * args.batch / n) + 1
    augment = None
    if args.augment:
        import yaml

        config = yaml.safe_load((REPO / "config/config.yaml").read_text())
        augment = Augment.from_config(config["train"]["augment"])
    ds = make_dataset(
        data,
        "train",
        args.batch,
        shuffle=True,
        epochs=(0, epochs),
        parallel_reads=args.parallel_reads,
        augment=augment,
    )
    it = iter(ds)
    for _ in range(WARMUP):
        next(it)
    clips, start = 0, time.perf_counter()
    for _ in range(batches):
        clips += int(next(it)[0].shape[0])
    seconds = time.perf_counter() - start
    aug = ", ".join(f"{k} {v}" for k, v in vars(augment).items() if v) if augment else ""
    return {
        "clips/s": clips / seconds,
        "frames": frames,
        "size": size,
        "train clips": n,
        "augment": f"augmented ({aug})" if aug else "unaugmented",
    }


def one_mode(args) -> dict:
    """What one child measures: the loader, or one mode's backbones."""
    import keras

    out = device_info()
    if args.one_mode == "loader":
        return {**out, "loader": measure_loader(args)}
    mixed, xla = args.one_mode.startswith("mixed"), args.one_mode.endswith("+xla")
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    out["rows"] = {name: measure_backbone(args, path, xla) for name, path in backbones(args)}
    return out


def backbones(args) -> list[tuple[str, str]]:
    named = [(args.backbone, args.backbone)]
    if args.clip_backbone is not None and args.clip_backbone.is_file():
        clip = args.clip_backbone
        named.append((f"{clip.parent.name}/{clip.name}", str(clip)))
    return named


def run_child(args, mode: str) -> tuple[dict | None, str]:
    """Run the script on one mode in a fresh process: its result, or why not."""
    cmd = [sys.executable, __file__, *sys.argv[1:], "--one-mode", mode]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(TAG):
            return json.loads(line[len(TAG) :]), ""
    last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return None, f"exit {proc.returncode}: {last[:300]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=16, help="T (default 16)")
    ap.add_argument("--size", type=int, default=224, help="S (default 224)")
    ap.add_argument("--batch", type=int, default=8, help="clips a batch (default 8)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    ap.add_argument("--backbone", default="efficientnetb0", help="frame backbone (name)")
    ap.add_argument("--head", default="average")
    ap.add_argument("--clip-backbone", type=Path, help="a clip backbone .keras file")
    ap.add_argument("--data", type=Path, help="a workflow's results/data, to time the loader")
    ap.add_argument("--loader-batches", type=int, default=50, help="batches to time (50)")
    ap.add_argument("--parallel-reads", type=int, help="loader workers (default AUTOTUNE)")
    ap.add_argument("--augment", action="store_true", help="loader: config.yaml's augment")
    ap.add_argument("--modes", default=",".join(MODES), help=f"of {','.join(MODES)}")
    ap.add_argument("--one-mode", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one_mode:
        print(TAG + json.dumps(one_mode(args)), flush=True)
        return

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := sorted(set(modes) - set(MODES)):
        raise SystemExit(f"--modes: unknown {unknown}; choose from {','.join(MODES)}")
    if args.clip_backbone is None:
        print("clip backbone: skipped (no --clip-backbone given)")
    elif not args.clip_backbone.is_file():
        print(f"clip backbone: skipped ({args.clip_backbone} does not exist)")
    failed, info, loader = [], None, None
    if args.data is None:
        print("loader: skipped (no --data given)")
    elif not (args.data / "split.tsv").is_file():
        print(f"loader: skipped ({args.data}/split.tsv does not exist)")
    else:
        result, why = run_child(args, "loader")
        if result is None:
            failed.append(f"loader: {why}")
        else:
            info, loader = result, result["loader"]
    results = {}
    for mode in modes:
        print(f"running {mode} ...", file=sys.stderr, flush=True)
        result, why = run_child(args, mode)
        if result is None:
            failed.append(f"{mode}: {why}")
        else:
            info, results[mode] = result, result["rows"]
    if info:
        print(f"device {info['device']}; TensorFlow {info['tensorflow']}, Keras {info['keras']}")
    print(
        f"T={args.frames}, S={args.size}, batch {args.batch}, {args.steps} timed steps "
        f"({WARMUP} warm-up), synthetic uint8 clips, random weights\n"
    )
    print(
        f"| {'mode':10s} | {'backbone':28s} | {'compute':8s} | {'train frames/s':>14s} "
        f"| {'train clips/s':>13s} | {'cache frames/s':>14s} |"
    )
    print(f"|{'-' * 12}|{'-' * 30}|{'-' * 10}|{'-' * 15}:|{'-' * 14}:|{'-' * 15}:|")
    for mode, rows in results.items():
        for name, r in rows.items():
            print(
                f"| {mode:10s} | {name:28s} | {r['dtype']:8s} | {r['train frames/s']:14.1f} "
                f"| {r['train clips/s']:13.2f} | {r['cache frames/s']:14.1f} |"
            )
    if loader:
        print(
            f"\nloader: {loader['clips/s']:.1f} clips/s = "
            f"{loader['clips/s'] * loader['frames']:.0f} frames/s (tf.data train stream of "
            f"{args.data}, {loader['train clips']} train clips, T={loader['frames']}, "
            f"S={loader['size']}, batch {args.batch}, {loader['augment']}, "
            f"{args.loader_batches} batches timed)"
        )
        if (loader["frames"], loader["size"]) != (args.frames, args.size):
            print(f"  note: the shards' T, S differ from the models' ({args.frames}, {args.size})")
        print("does the loader keep up? loader clips/s / training clips/s (>= 1: yes)")
        for mode, rows in results.items():
            for name, r in rows.items():
                ratio = loader["clips/s"] / r["train clips/s"]
                print(f"  {mode:10s} {name:28s} {ratio:8.2f}  {'yes' if ratio >= 1 else 'NO'}")
    for line in failed:
        print(f"FAILED {line}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
