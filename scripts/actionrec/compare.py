"""Backbones (and heads) compared on the same budget: same data, split,
learning-rate policy, epochs and seed; one job per model, then a summary.

Each job trains with the final training's code (fixed epochs, best val-loss
weights kept), then measures on the test split accuracy and macro F1, and
inference clips per second; the model's parameter count and FLOPs per clip
(and per frame) come from its layers, the feature cache's seconds per clip
from the cache, the peak memory from the process. Frame backbones (an image
network on every frame) and clip backbones (a video network on the whole
clip) are measured alike.
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
from .intervals import score_intervals
from .tables import read_tsv, write_tsv

if TYPE_CHECKING:
    from .pipeline import Data

log = logging.getLogger(__name__)


def _conv_flops(layer) -> int:
    """2 x multiply-adds of a 2D or 3D convolution: kernel volume x input
    channels (per group) x output channels x output positions."""
    from keras import layers

    positions = int(np.prod(layer.output.shape[1:-1]))
    window = int(np.prod(layer.kernel_size))
    if isinstance(layer, layers.DepthwiseConv2D):
        cin = int(layer.kernel.shape[2])
        return 2 * window * cin * int(layer.depth_multiplier) * positions
    cin_per_group, cout = int(layer.kernel.shape[-2]), int(layer.kernel.shape[-1])
    return 2 * window * cin_per_group * cout * positions


def flops_per_frame(model) -> int:
    """Floating-point operations of one forward pass of one input (a frame;
    a whole clip for a clip backbone) through the convolutions and dense
    layers of ``model`` (2 per multiply-add; normalisation, activations and
    pooling are not counted, as in the published figures)."""
    from keras import layers

    from .model import all_layers

    total = 0
    for layer in all_layers(model):
        if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D, layers.Conv3D)):
            total += _conv_flops(layer)
        elif isinstance(layer, layers.Dense) and layer.built and layer.trainable:
            total += 2 * int(np.prod(layer.kernel.shape))
    return total


def flops_per_clip(backbone, frames: int) -> int:
    """A backbone's FLOPs for one clip of ``frames`` frames: a frame
    backbone's per frame x T, a clip backbone's for the clip."""
    from .model import is_clip_backbone

    once = flops_per_frame(backbone)
    return once if is_clip_backbone(backbone) else once * int(frames)


def cache_seconds_per_clip(data: Data) -> float | None:
    """Seconds the feature cache took per clip (None without a cache, or for
    one written before the cache recorded its time)."""
    import h5py

    seconds, clips = 0.0, 0
    for path in data.features.values():
        with h5py.File(path, "r") as f:
            if "seconds" not in f.attrs:
                return None
            seconds += float(f.attrs["seconds"])
            clips += len(f["label"])
    return round(seconds / clips, 4) if clips else None


def backbone_training(
    history: pd.DataFrame, pretrain_history: str | os.PathLike | None
) -> tuple[str, np.ndarray]:
    """How this run trained the backbone, and the seconds of those epochs:
    end to end from scratch or fine-tuning (epochs of this job, on the
    clips), else pretraining on still images, else not at all (frozen: the
    head's epochs)."""
    for stage, name in (("full", "from scratch"), ("finetune", "fine-tuning")):
        rows = history[history["stage"] == stage]
        if len(rows):
            return name, rows["seconds"].to_numpy(float)
    if pretrain_history is not None:
        return "pretraining", read_tsv(pretrain_history)["seconds"].to_numpy(float)
    return "frozen", history["seconds"].to_numpy(float)


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


def clip_correctness(clips: pd.DataFrame, probs: np.ndarray) -> pd.DataFrame:
    """Per test clip: its source video, true and predicted label and whether
    it is right; what pairs two compared models on the same clips."""
    pred = probs.argmax(axis=1)
    return pd.DataFrame(
        {
            "clip_id": clips["clip_id"].to_numpy(),
            "group": clips["group"].to_numpy() if "group" in clips else "",
            "label": clips["label"].to_numpy(),
            "predicted": pred,
            "correct": pred == clips["label"].to_numpy(),
        }
    )


def scores_on_test(model, data: Data, out_predictions: str | os.PathLike | None = None) -> dict:
    """The trained model on the test split: accuracy and macro F1 with their
    95% intervals over source videos, clips a second (timed after one batch
    traces the model), its size and FLOPs. ``out_predictions``: where to write
    each clip's correctness (:func:`clip_correctness`)."""
    from sklearn.metrics import f1_score

    from .evaluate import predict_split
    from .model import backbone_of, is_clip_backbone

    frames, size = model.input_shape[1:3]
    model.predict_on_batch(np.zeros((1, frames, size, size, 3), np.uint8))
    start = time.perf_counter()
    clips, probs = predict_split(model, data, "test", 8)
    inference = len(clips) / (time.perf_counter() - start)
    true, pred = clips["label"].to_numpy(), probs.argmax(axis=1)
    if out_predictions is not None:
        write_tsv(clip_correctness(clips, probs), out_predictions)
    backbone = backbone_of(model)
    flops = flops_per_clip(backbone, frames)
    return {
        "test_accuracy": round(float((true == pred).mean()), 4),
        "test_macro_f1": round(float(f1_score(true, pred, average="macro", zero_division=0.0)), 4),
        **score_intervals(true, pred, clips.get("group"), prefix="test_"),
        "parameters": int(model.count_params()),
        "backbone_parameters": int(backbone.count_params()),
        "backbone_input": "clip" if is_clip_backbone(backbone) else "frame",
        "flops_per_clip": flops,
        "flops_per_frame": int(flops // frames),
        "frames": int(frames),
        "size": int(size),
        "inference_clips_per_second": round(inference, 2),
    }


def compare_backbone(
    data: Data,
    train_section: dict,
    *,
    epochs: int,
    finetune: bool,
    train_fraction: float,
    out_history: str | os.PathLike,
    out_metrics: str | os.PathLike,
    work_dir: str | os.PathLike,
    split_method: str,
    out_predictions: str | os.PathLike | None = None,
    seed: int,
    pretrain_history: str | os.PathLike | None = None,
    threads: int | None = None,
) -> dict:
    """Train the model the train section describes (its backbone and head
    set by the caller) for ``epochs`` epochs per stage (without fine-tuning
    unless ``finetune``), best weights kept, then measure it on the test
    split. ``pretrain_history``: the history of the backbone's pretraining
    in this run, whose epochs then tell its training speed. ``out_predictions``:
    each test clip's correctness, for the paired comparison of models."""
    from .train import TrainConfig, train

    stage2 = train_section.get("finetune", {}) if finetune else {"blocks": 0}
    cfg = TrainConfig.from_config(
        train_section,
        max_epochs=epochs,
        patience=epochs,
        finetune={**stage2, "max_epochs": epochs},
        train_fraction=train_fraction,
        seed=seed,
    )
    model, history = train(data, cfg, Path(work_dir), history_path=out_history, threads=threads)
    training, seconds = backbone_training(history, pretrain_history)
    kept = history.loc[history["kept"]].iloc[0]
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
        **scores_on_test(model, data, out_predictions),
        "feature_seconds_per_clip": cache_seconds_per_clip(data),
        "backbone_training": training,
        # The first epoch includes tracing the model: the mean is over the others when any.
        "train_seconds_per_epoch": round(
            float(seconds[1:].mean() if len(seconds) > 1 else seconds[0]), 2
        ),
        "train_seconds_total": round(float(history["seconds"].sum()), 1),
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
