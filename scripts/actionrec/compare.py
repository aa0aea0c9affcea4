"""Backbones (and heads) compared on the same budget: same data, split,
learning-rate policy, epochs and seed; one job per model, then a summary.

Each job trains with the final training's code (fixed epochs, best val-loss
weights kept), then measures on the test split accuracy and macro F1, and
inference clips per second; the model's parameter count and FLOPs per frame
come from its layers, the peak memory from the process.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .catalog import backbone_key
from .tables import read_tsv

if TYPE_CHECKING:
    from .pipeline import Data

log = logging.getLogger(__name__)

# Two backbones count as similarly accurate within this test-accuracy gap.
SIMILAR_ACCURACY = 0.05


def _conv_flops(layer) -> int:
    from keras import layers

    h, w = int(layer.output.shape[1]), int(layer.output.shape[2])
    kh, kw = layer.kernel_size
    if isinstance(layer, layers.DepthwiseConv2D):
        cin = int(layer.kernel.shape[2])
        return 2 * kh * kw * cin * int(layer.depth_multiplier) * h * w
    cin_per_group, cout = int(layer.kernel.shape[2]), int(layer.kernel.shape[3])
    return 2 * kh * kw * cin_per_group * cout * h * w


def flops_per_frame(model) -> int:
    """Floating-point operations of one forward pass of one frame through
    the convolutions and dense layers of ``model`` (2 per multiply-add;
    normalisation, activations and pooling are not counted, as in the
    published figures)."""
    from keras import layers

    from .model import all_layers

    total = 0
    for layer in all_layers(model):
        if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D)):
            total += _conv_flops(layer)
        elif isinstance(layer, layers.Dense) and layer.built and layer.trainable:
            total += 2 * int(np.prod(layer.kernel.shape))
    return total


def hardware() -> str:
    """The device that trained: GPU names, else the CPU model and thread count."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = [
            tf.config.experimental.get_device_details(g).get("device_name", "GPU") for g in gpus
        ]
        return ", ".join(names)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return f"CPU: {model}, {os.cpu_count()} threads"


def peak_memory_mb() -> float:
    """Peak memory of this process: the GPU's when one is used, else RSS."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return round(tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def compare_backbone(
    data: Data,
    train_section: dict,
    *,
    epochs: int,
    train_fraction: float,
    out_history: str | os.PathLike,
    out_metrics: str | os.PathLike,
    work_dir: str | os.PathLike,
    split_method: str,
    seed: int,
    threads: int | None = None,
) -> dict:
    """Train the model the train section describes (its backbone and head
    set by the caller) for ``epochs`` epochs per stage, best weights kept,
    then measure it on the test split."""
    from sklearn.metrics import f1_score

    from .evaluate import predict_split
    from .model import backbone_of
    from .train import TrainConfig, train

    cfg = TrainConfig.from_config(
        train_section,
        max_epochs=epochs,
        patience=epochs,
        finetune={**train_section.get("finetune", {}), "max_epochs": epochs},
        train_fraction=train_fraction,
        seed=seed,
    )
    work_dir = Path(work_dir)
    model, history = train(data, cfg, work_dir, history_path=out_history, threads=threads)
    frames, size = model.input_shape[1:3]
    # Warm up (trace) on one batch, then time the whole test split.
    model.predict_on_batch(np.zeros((1, frames, size, size, 3), np.uint8))
    start = time.perf_counter()
    clips, probs = predict_split(model, data, "test", 8)
    inference = len(clips) / (time.perf_counter() - start)
    true, pred = clips["label"].to_numpy(), probs.argmax(axis=1)
    kept = history.loc[history["kept"]].iloc[0]
    # Epochs that trained the backbone (from scratch, or fine-tuning) tell the
    # training speed; with a frozen backbone only the head trained.
    backbone_epochs = history[history["stage"] != "frozen"]
    timed = backbone_epochs if len(backbone_epochs) else history
    seconds = timed["seconds"].to_numpy(float)
    metrics = {
        "backbone": backbone_key(cfg.backbone),
        "head": cfg.head,
        "weights": cfg.weights,
        "stages": ", ".join(history["stage"].unique()),
        "split_method": split_method,
        "hardware": hardware(),
        "lr": cfg.lr,
        "classes": int(data.num_classes),
        "epochs": int(len(history)),
        "best_epoch": int(kept["epoch"]),
        "val_accuracy": round(float(kept["val_accuracy"]), 4),
        "test_accuracy": round(float((true == pred).mean()), 4),
        "test_macro_f1": round(float(f1_score(true, pred, average="macro", zero_division=0.0)), 4),
        "parameters": int(model.count_params()),
        "backbone_parameters": int(backbone_of(model).count_params()),
        "flops_per_frame": flops_per_frame(backbone_of(model)),
        "frames": int(frames),
        "size": int(size),
        "backbone_trained": bool(len(backbone_epochs)),
        # The first epoch includes tracing the model: the mean is over the others when any.
        "train_seconds_per_epoch": round(
            float(seconds[1:].mean() if len(seconds) > 1 else seconds[0]), 2
        ),
        "train_seconds_total": round(float(history["seconds"].sum()), 1),
        "inference_clips_per_second": round(inference, 2),
        "peak_memory_mb": peak_memory_mb(),
    }
    with open(out_metrics, "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=1)
    log.info(
        "%s/%s: test accuracy %.4f, %.1f s/epoch",
        metrics["backbone"],
        cfg.head,
        metrics["test_accuracy"],
        metrics["train_seconds_per_epoch"],
    )
    return metrics


SUMMARY_COLUMNS = [
    "backbone", "head", "val_accuracy", "test_accuracy", "test_macro_f1", "parameters",
    "flops_per_frame", "train_seconds_per_epoch", "train_seconds_total",
    "inference_clips_per_second", "peak_memory_mb", "epochs", "lr",
]  # fmt: skip


def summarise(metric_files: list[str | os.PathLike]) -> pd.DataFrame:
    rows = []
    for path in metric_files:
        with open(path, encoding="utf-8") as f:
            rows.append(json.load(f))
    return pd.DataFrame(rows)


def claim_sentence(summary: pd.DataFrame) -> str:
    """What this run shows about the original claim that EfficientNetB0
    trains faster than ResNet50 at similar accuracy."""
    first = summary.iloc[0]
    where = f"{first['split_method']} split, {first['hardware']}, {first['epochs']} epoch(s)"
    # The claim is about the original architecture: compare the average head.
    original = summary[summary["head"] == "average"]
    by = (original if len(original) else summary).drop_duplicates("backbone").set_index("backbone")
    if not {"efficientnetb0", "resnet50"} <= set(by.index):
        return (
            f"This run ({where}) does not include both efficientnetb0 and resnet50, so it says "
            "nothing about the original claim."
        )
    eff, res = by.loc["efficientnetb0"], by.loc["resnet50"]
    speed = res["train_seconds_per_epoch"] / eff["train_seconds_per_epoch"]
    gap = eff["test_accuracy"] - res["test_accuracy"]
    faster = speed > 1
    similar = gap >= -SIMILAR_ACCURACY
    chance = 1 / float(first.get("classes", np.nan))
    if max(eff["test_accuracy"], res["test_accuracy"]) < 2 * chance:
        return (
            f"On this run ({where}), EfficientNetB0 trained {speed:.1f}x "
            f"{'faster' if faster else 'slower'} per epoch than ResNet50, but neither got "
            f"beyond twice chance ({chance:.3f}) on the test split ({eff['test_accuracy']:.3f} "
            f"and {res['test_accuracy']:.3f}), so this budget says nothing about accuracy and "
            "cannot test the original claim that EfficientNetB0 trains faster at similar "
            "accuracy; give the comparison more epochs."
        )
    verdict = "supports" if faster and similar else "does not support"
    return (
        f"On this run ({where}), EfficientNetB0 trained {speed:.1f}x "
        f"{'faster' if faster else 'slower'} per epoch than ResNet50 and reached test accuracy "
        f"{eff['test_accuracy']:.3f} against {res['test_accuracy']:.3f}: it {verdict} the "
        "original claim that EfficientNetB0 trains faster at similar accuracy."
    )


def markdown(summary: pd.DataFrame, sentence: str) -> str:
    cols = [c for c in SUMMARY_COLUMNS if c in summary]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in summary[cols].itertuples(index=False):
        cells = [f"{v:,}" if isinstance(v, (int, np.integer)) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "# Backbone comparison\n\n" + "\n".join(lines) + f"\n\n{sentence}\n"


def histories(metric_files, history_files) -> dict[str, pd.DataFrame]:
    out = {}
    for m, h in zip(metric_files, history_files, strict=True):
        with open(m, encoding="utf-8") as f:
            meta = json.load(f)
        out[f"{meta['backbone']}/{meta['head']}"] = read_tsv(h)
    return out
