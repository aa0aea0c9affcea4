"""Training: Adam, early stopping, resume after an interruption, and the
stages of transfer learning.

A backbone trained from scratch (``weights: none``) trains end to end in one
stage, ``full``. A pretrained backbone (ImageNet weights, a weights file, or
a model file) trains in up to two:

- ``frozen``: the head alone on the frozen backbone, on cached per-frame
  features when the rule provides them (no backbone pass per epoch), else on
  the frames through the frozen backbone;
- ``finetune`` (when ``finetune.blocks`` is not 0): the backbone's top blocks
  unfrozen at their own rate ``finetune.lr`` (absolute; or ``train.lr *
  finetune.lr_factor`` when that is set), warmed up and decayed, gradients
  clipped and accumulated over ``finetune.accumulate`` batches, on frames,
  with augmentation; an epoch must beat the frozen stage's best to replace
  its weights, and a stage whose train accuracy collapses stops.

Batch norm of a pretrained backbone stays in inference mode throughout
(unless ``finetune.batch_norm: train``): a batch holds a few clips of
near-identical frames, whose statistics are not ImageNet's.

Each stage early-stops on ``monitor``, keeps its best weights and resumes
after a kill (see :mod:`.resume`); the saved model is the whole clip model on
raw frames.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from .catalog import is_pretrained, uses_feature_cache, weights_for
from .features import check_cache, provenance
from .model import backbone_of, build_head, build_model, head_of, set_backbone_trainable
from .pipeline import (
    Augment,
    Data,
    clip_table,
    data_fingerprint,
    make_dataset,
    shard_geometry,
    shard_layout,
    steps_per_epoch,
)
from .provenance import code_digest, library_versions
from .resume import HISTORY_COLUMNS, TestEvaluation, fit_resumable, prepare_work_dir
from .search import SearchSettings
from .settings import with_defaults
from .tables import write_tsv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """The ``train`` section of the config (defaults from config/schema.yaml),
    plus the seed."""

    backbone: str
    head: str
    weights: str
    dropout: float
    bn_momentum: float | None
    norm: str
    lr: float
    batch_size: int
    feature_batch_size: int | None
    feature_memory_mb: float
    max_epochs: int
    patience: int
    monitor: str
    class_weights: bool
    loss: str
    focal_gamma: float
    label_smoothing: float
    augment: dict
    finetune: dict
    train_fraction: float
    evaluate_test: bool
    mixed_precision: str | bool
    xla: str | bool
    seed: int = 0

    @classmethod
    def from_config(cls, section: dict, **overrides) -> TrainConfig:
        """From a (partial) train section; ``overrides`` win, ``seed`` among them."""
        values = {**section, **overrides}
        seed = values.pop("seed", 0)
        values = with_defaults("train", values)
        if values["lr"] == "auto":
            raise ValueError("train.lr is auto: resolve it from the search's choice first")
        values["weights"] = weights_for(values["weights"], values["backbone"])
        return cls(**values, seed=seed)

    @property
    def pretrained(self) -> bool:
        return is_pretrained(self.backbone, self.weights)


@dataclass(frozen=True)
class Stage:
    """One fit: what trains, on what, at which rate, for how long."""

    name: str  # full, frozen or finetune
    features: bool  # the head alone, on cached features
    lr: float
    epochs: int
    blocks: int | str  # backbone blocks that train: all, 0, or the top N


def plan_stages(cfg: TrainConfig, data: Data) -> list[Stage]:
    if not cfg.pretrained:
        return [Stage("full", False, cfg.lr, cfg.max_epochs, "all")]
    cached = bool(data.features) and uses_feature_cache(cfg.backbone, cfg.weights, cfg.head)
    stages = [Stage("frozen", cached, cfg.lr, cfg.max_epochs, 0)]
    blocks = cfg.finetune["blocks"]
    if blocks != 0:
        stages.append(
            Stage("finetune", False, finetune_lr(cfg), int(cfg.finetune["max_epochs"]), blocks)
        )
    return stages


def finetune_lr(cfg: TrainConfig) -> float:
    """The backbone's peak rate while fine-tuning: ``finetune.lr``, or a
    share of the head's rate when ``finetune.lr_factor`` is set."""
    factor = cfg.finetune.get("lr_factor")
    return cfg.lr * float(factor) if factor is not None else float(cfg.finetune["lr"])


def make_optimizer(stage: Stage, cfg: TrainConfig, steps: int) -> keras.optimizers.Optimizer:
    """Adam at the stage's rate. Fine-tuning warms up linearly over
    ``finetune.warmup_epochs``, then follows ``finetune.schedule`` (cosine
    decay to 0 over the stage's epochs, or constant), clips the global
    gradient norm at ``finetune.clipnorm`` and accumulates the gradients of
    ``finetune.accumulate`` batches per update (an effective batch larger
    than memory holds). Keras's schedules count batches, accumulated or not."""
    if stage.name != "finetune":
        return keras.optimizers.Adam(stage.lr)
    ft = cfg.finetune
    accumulate = int(ft["accumulate"])
    warmup = int(round(float(ft["warmup_epochs"]) * steps))
    total = max(1, steps * stage.epochs - warmup)
    rate = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else stage.lr,
        decay_steps=total,
        alpha=1.0 if ft["schedule"] == "constant" else 0.0,
        warmup_target=stage.lr if warmup else None,
        warmup_steps=warmup,
    )
    return keras.optimizers.Adam(
        rate,
        global_clipnorm=ft["clipnorm"],
        gradient_accumulation_steps=accumulate if accumulate > 1 else None,
    )


def _on(setting: str | bool, gpu: bool) -> bool:
    return gpu if setting == "auto" else bool(setting)


def cpu_replicas() -> int:
    """Logical CPU devices configured before TensorFlow started
    (``tf.config.set_logical_device_configuration``, as the tests split the
    CPU to run the multi-device path), read without starting it."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    return len(tf.config.get_logical_device_configuration(cpu) or [None])


def resolved_devices(cfg: TrainConfig) -> dict:
    """What a training resolves to on this machine: GPUs, replicas (one per
    GPU when there are several; without a GPU, one per logical CPU device
    when the CPU was split), mixed precision and XLA."""
    gpus = len(tf.config.list_physical_devices("GPU"))
    return {
        "gpus": gpus,
        "replicas": gpus if gpus > 1 else 1 if gpus else cpu_replicas(),
        "mixed_precision": _on(cfg.mixed_precision, gpus > 0),
        "xla": _on(cfg.xla, gpus > 0),
    }


def configure_devices(
    cfg: TrainConfig, threads: int | None = None
) -> tuple[tf.distribute.Strategy, bool]:
    """Threads, seeds, determinism, precision and the distribution strategy."""
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
    keras.utils.set_random_seed(cfg.seed)
    devices = resolved_devices(cfg)
    if not devices["gpus"]:
        # Reproducible weights on CPU; GPU kernels are left fast.
        tf.config.experimental.enable_op_determinism()
    mixed, xla = devices["mixed_precision"], devices["xla"]
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    if devices["replicas"] == 1:
        strategy = tf.distribute.get_strategy()
    elif devices["gpus"]:
        strategy = tf.distribute.MirroredStrategy()
    else:
        cpus = [f"/cpu:{i}" for i in range(devices["replicas"])]
        strategy = tf.distribute.MirroredStrategy(cpus)
    log.info(
        "devices: %d GPU(s); mixed precision %s; XLA %s; %s with %d replica(s)",
        devices["gpus"],
        "on" if mixed else "off",
        "on" if xla else "off",
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
    )
    return strategy, xla


def environment(cfg: TrainConfig) -> dict:
    """What a training's numbers depend on besides its settings and data: the
    backbone's files by content, the devices it resolves to, the libraries, and
    this package's code (an interrupted run of older code is not resumed)."""
    return {
        "backbone": provenance(cfg.backbone, cfg.weights),
        "devices": resolved_devices(cfg),
        "libraries": library_versions(),
        "code": code_digest(__file__),
    }


def make_loss(cfg: TrainConfig) -> keras.losses.Loss:
    smoothing = float(cfg.label_smoothing)
    if cfg.loss == "crossentropy":
        return keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)
    if cfg.loss == "focal":
        return keras.losses.CategoricalFocalCrossentropy(
            gamma=cfg.focal_gamma, label_smoothing=smoothing
        )
    raise ValueError(f"train.loss must be crossentropy or focal, not {cfg.loss!r}")


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """n / (k * count) per class present, as scikit-learn's 'balanced' mode."""
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    out = dict.fromkeys(range(num_classes), 1.0)
    out.update({int(c): float(w) for c, w in zip(present, weights, strict=True)})
    return out


@dataclass
class Devices:
    """Where a training runs: the strategy, XLA, and the global batch sizes
    (per replica times replicas) of clips and of cached features."""

    strategy: tf.distribute.Strategy
    xla: bool
    batch: int
    feature_batch: int

    @classmethod
    def set_up(cls, cfg: TrainConfig, threads: int | None) -> Devices:
        strategy, xla = configure_devices(cfg, threads)
        replicas = strategy.num_replicas_in_sync
        feature_batch = (cfg.feature_batch_size or cfg.batch_size) * replicas
        return cls(strategy, xla, cfg.batch_size * replicas, feature_batch)

    def batch_of(self, stage: Stage) -> int:
        return self.feature_batch if stage.features else self.batch


@dataclass
class Progress:
    """What the stages so far hand to the next: their histories, the best
    monitored value to beat, the (stage, epoch) whose weights the model holds,
    and the train accuracy below which fine-tuning counts as collapsed."""

    histories: list[pd.DataFrame] = dataclasses.field(default_factory=list)
    baseline: float | None = None
    kept: tuple[int, int] | None = None
    floor: float | None = None

    def record(self, stage: Stage, history: pd.DataFrame, summary: dict, cfg: TrainConfig):
        history.insert(1, "stage", stage.name)
        self.histories.append(history)
        if stage.name == "frozen" and summary["best_epoch"] is not None:
            # Fine-tuning that falls this far below the frozen head's train
            # accuracy is destroying the pretrained features.
            reached = float(history["accuracy"].iloc[summary["best_epoch"]])
            self.floor = reached - float(cfg.finetune["collapse"])
        if summary["collapsed"]:
            log.warning(
                "stage %s collapsed (train accuracy below %.3f) and stopped early",
                stage.name,
                self.floor,
            )
        if summary["best_epoch"] is None:
            log.info(
                "stage %s: no epoch beat %s %.4f; the weights before it stay",
                stage.name,
                cfg.monitor,
                self.baseline,
            )
            return
        self.kept = (len(self.histories) - 1, summary["best_epoch"])
        self.baseline = summary["best"]
        log.info(
            "stage %s: %d epoch(s), kept epoch %d (%s %.4f)",
            stage.name,
            summary["epochs"],
            summary["best_epoch"] + 1,
            cfg.monitor,
            self.baseline,
        )


def train(
    data: Data,
    cfg: TrainConfig,
    work_dir: str | os.PathLike,
    *,
    model_path: str | os.PathLike | None = None,
    history_path: str | os.PathLike | None = None,
    threads: int | None = None,
    head_only: bool = False,
) -> tuple[keras.Model, pd.DataFrame]:
    """Train in the stages of :func:`plan_stages`, resuming from ``work_dir``
    if an earlier run was interrupted. Returns the clip model with its kept
    weights and the history of every epoch (``stage``, ``kept``); saves them
    when paths are given. The work folder is removed once done.

    ``head_only``: when every stage trains on cached features, build and
    return the head alone, without the backbone (a search trial needs no
    clip model)."""
    work_dir = Path(work_dir)
    stages = plan_stages(cfg, data)
    if any(s.features for s in stages):
        check_cache(data.features, data.shards, cfg.backbone, cfg.weights)
    prepare_work_dir(
        work_dir,
        {"config": dataclasses.asdict(cfg), "data": data_fingerprint(data), **environment(cfg)},
    )
    devices = Devices.set_up(cfg, threads)
    head_only = head_only and all(s.features for s in stages)
    model = build_for_training(data, cfg, stages, devices, head_only)
    class_weight = None
    if cfg.class_weights:
        labels = clip_table(data.split, "train")["label"].to_numpy()
        class_weight = balanced_class_weights(labels, data.num_classes)
    progress = Progress()
    for stage in stages:
        history, summary = run_stage(
            model, stage, data, cfg, devices, work_dir, progress, class_weight, head_only
        )
        progress.record(stage, history, summary, cfg)
    history = _join(progress.histories, progress.kept)
    if history_path is not None:
        write_tsv(history, history_path)
    if model_path is not None:
        model.save(model_path)
        log.info("saved %s (kept epoch %d)", model_path, kept_epoch(history))
    # Finished: a later run of the same training starts afresh.
    shutil.rmtree(work_dir)
    return model, history


def build_for_training(
    data: Data, cfg: TrainConfig, stages: list[Stage], devices: Devices, head_only: bool
) -> keras.Model:
    """The clip model (or, ``head_only``, the head on cached features) in the
    devices' scope, and the line that says what is about to train."""
    first_shard = clip_table(data.split, "train")["shard"].iloc[0]
    frames, size = shard_geometry(data.shards[first_shard])
    with devices.strategy.scope():
        if head_only:
            model = build_head(
                data.num_classes,
                # T frames, or a clip backbone's T' steps, as the cache records them.
                shard_layout(data.features[min(data.features)]).frames,
                (feature_dim(data),),
                cfg.head,
                dropout=cfg.dropout,
            )
        else:
            model = build_model(
                data.num_classes,
                frames,
                size,
                cfg.backbone,
                cfg.head,
                weights=cfg.weights,
                dropout=cfg.dropout,
                bn_momentum=cfg.bn_momentum,
                norm=cfg.norm,
            )
    cached = any(s.features for s in stages) and devices.feature_batch != devices.batch
    log.info(
        "training %s/%s (%s), T=%d S=%d, %d classes, batch %d%s; stages: %s",
        cfg.backbone,
        cfg.head,
        f"weights {cfg.weights}" if cfg.pretrained else "from scratch",
        frames,
        size,
        data.num_classes,
        devices.batch,
        f" ({devices.feature_batch} on cached features)" if cached else "",
        ", ".join(
            f"{s.name} (lr {s.lr:g}, up to {s.epochs} epochs"
            f"{', cached features' if s.features else ''})"
            for s in stages
        ),
    )
    return model


def run_stage(
    model: keras.Model,
    stage: Stage,
    data: Data,
    cfg: TrainConfig,
    devices: Devices,
    work_dir: Path,
    progress: Progress,
    class_weight: dict | None,
    head_only: bool,
) -> tuple[pd.DataFrame, dict]:
    """One stage: what trains (the head on cached features, the clip model
    with a frozen backbone, or its top blocks), compiled for this stage's rate,
    fitted resumably against the stages before it."""
    batch = devices.batch_of(stage)
    steps = steps_per_epoch(data.split, "train", batch, cfg.train_fraction, cfg.seed)
    target = head_of(model) if stage.features and not head_only else model
    if stage.name == "frozen" and not head_only:
        backbone_of(model).trainable = False
    elif stage.name == "finetune":
        trained = set_backbone_trainable(model, stage.blocks, cfg.finetune["batch_norm"] == "train")
        log.info("fine-tuning %s backbone block(s): %d weights", stage.blocks, trained)
    with devices.strategy.scope():
        target.compile(
            optimizer=make_optimizer(stage, cfg, steps),
            loss=make_loss(cfg),
            metrics=["accuracy"],
            jit_compile=devices.xla,
        )
    return _fit_stage(
        target,
        stage,
        data,
        cfg,
        batch=batch,
        work_dir=work_dir,
        steps=steps,
        baseline=progress.baseline,
        class_weight=class_weight,
        collapse_floor=progress.floor if stage.name == "finetune" else None,
    )


def feature_dim(data: Data) -> int:
    """Features per frame (or step) in the cache."""
    with h5py.File(data.features[min(data.features)], "r") as f:
        return int(f.attrs["feature_dim"])


def kept_epoch(history: pd.DataFrame) -> int:
    """The epoch whose weights the model kept."""
    return int(history.loc[history["kept"], "epoch"].iloc[0])


def _fit_stage(
    target: keras.Model,
    stage: Stage,
    data: Data,
    cfg: TrainConfig,
    *,
    batch: int,
    work_dir: Path,
    steps: int,
    baseline: float | None,
    class_weight: dict | None,
    collapse_floor: float | None = None,
) -> tuple[pd.DataFrame, dict]:
    common = {"features": stage.features, "seed": cfg.seed}
    if stage.features:
        common["memory_mb"] = cfg.feature_memory_mb
    # The frozen stage on cached features sees unaugmented frames' features.
    augment = None if stage.features else Augment.from_config(cfg.augment)

    def train_stream(first: int):
        # Resuming at epoch k: the stream starts with epoch k's own order and draws.
        return make_dataset(
            data,
            "train",
            batch,
            shuffle=True,
            augment=augment,
            fraction=cfg.train_fraction,
            epochs=(first, max(stage.epochs, first + 1)),
            **common,
        )

    callbacks = []
    if cfg.evaluate_test:
        callbacks.append(TestEvaluation(make_dataset(data, "test", batch, **common)))
    return fit_resumable(
        target,
        train_stream,
        make_dataset(data, "val", batch, **common),
        work_dir / stage.name,
        steps=steps,
        epochs=stage.epochs,
        collapse_floor=collapse_floor,
        patience=cfg.patience,
        monitor=cfg.monitor,
        seed=cfg.seed,
        baseline=baseline,
        callbacks=callbacks,
        class_weight=class_weight,
    )


def _join(histories: list[pd.DataFrame], kept: tuple[int, int]) -> pd.DataFrame:
    """One table of every stage's epochs, numbered 1.. across stages, with
    the epoch whose weights the model kept marked."""
    parts = []
    for k, history in enumerate(histories):
        part = history.assign(kept=[kept == (k, e) for e in range(len(history))])
        parts.append(part)
    history = pd.concat(parts, ignore_index=True)
    history["epoch"] = np.arange(1, len(history) + 1)
    history["collapsed"] = history["collapsed"].fillna(False).astype(bool)
    return history[["epoch", "stage", *HISTORY_COLUMNS[1:], "kept"]]


def run_trial(
    lr: float,
    data: Data,
    train_section: dict,
    settings: SearchSettings,
    work_dir: str | os.PathLike,
    *,
    seed: int,
    threads: int | None = None,
) -> dict:
    """Train a fresh model at ``lr`` for the search budget; its best val loss
    and the val accuracy of that epoch. A diverged trial scores NaN.

    With a pretrained backbone a trial is the frozen stage (the head, on
    cached features when ``data`` has them); fine-tuning later runs at its own
    rate (``finetune.lr``). From scratch a trial trains end to end."""
    cfg = TrainConfig.from_config(
        train_section,
        lr=float(lr),
        max_epochs=settings.epochs,
        patience=settings.epochs,
        evaluate_test=False,
        train_fraction=settings.train_fraction,
        finetune={"blocks": 0},
        seed=seed,
    )
    result = {"lr": float(lr), "val_loss": float("nan"), "val_accuracy": float("nan"), "epoch": 0}
    start = time.perf_counter()
    try:
        _, history = train(data, cfg, Path(work_dir), threads=threads, head_only=True)
    except FloatingPointError:
        log.warning("lr %g: the loss diverged", lr)
    else:
        best = history.loc[history["val_loss"].idxmin()]
        result.update(
            val_loss=float(best["val_loss"]),
            val_accuracy=float(best["val_accuracy"]),
            epoch=int(best["epoch"]),
        )
    return {**result, "seconds": round(time.perf_counter() - start, 1)}
