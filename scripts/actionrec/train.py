"""Training: Adam, early stopping on val loss, checkpoints, and resume after
an interruption with the optimizer's state and the epoch.

Interruption-safe state lives in ``work_dir``:
  backup/                 Keras BackupAndRestore: weights, optimizer, epoch
  best.weights.h5         ModelCheckpoint: the best epoch's weights by val loss
  state.json              per finished epoch: its history row and the state of
                          early stopping and checkpointing, so a resumed run
                          continues exactly where the interrupted one stopped
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from .model import backbone_of, build_model
from .pipeline import Augment, labels_of, make_dataset, steps_per_epoch
from .tables import write_tsv

log = logging.getLogger(__name__)

HISTORY_COLUMNS = [
    "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy",
    "learning_rate", "seconds",
]  # fmt: skip


@dataclass
class TrainConfig:
    """The ``train`` section of the config, plus the seed and the split method."""

    backbone: str = "efficientnetb0"
    head: str = "average"
    weights: str | None = None
    dropout: float = 0.0
    bn_momentum: float | None = None
    norm: str = "batch"
    warmup_epochs: int = 0
    lr: float = 0.0015
    batch_size: int = 2
    max_epochs: int = 20
    patience: int = 2
    class_weights: bool = False
    loss: str = "crossentropy"
    focal_gamma: float = 2.0
    augment: dict = field(default_factory=dict)
    mixed_precision: str = "auto"
    xla: str = "auto"
    seed: int = 0
    train_fraction: float = 1.0
    evaluate_test: bool = True

    @classmethod
    def from_config(cls, section: dict, **extra) -> TrainConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(section) - known
        if unknown:
            raise ValueError(f"unknown train options {sorted(unknown)}")
        return cls(**section, **extra)


def _on(setting: str | bool, gpu: bool) -> bool:
    return gpu if setting == "auto" else bool(setting)


def configure_devices(
    cfg: TrainConfig, threads: int | None = None
) -> tuple[tf.distribute.Strategy, bool]:
    """Threads, seeds, determinism, precision and the distribution strategy."""
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
    keras.utils.set_random_seed(cfg.seed)
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        # Reproducible weights on CPU; GPU kernels are left fast.
        tf.config.experimental.enable_op_determinism()
    mixed = _on(cfg.mixed_precision, bool(gpus))
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    xla = _on(cfg.xla, bool(gpus))
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    log.info(
        "devices: %d GPU(s); mixed precision %s; XLA %s; %s",
        len(gpus), "on" if mixed else "off", "on" if xla else "off", type(strategy).__name__,
    )  # fmt: skip
    return strategy, xla


def make_loss(cfg: TrainConfig) -> keras.losses.Loss:
    if cfg.loss == "crossentropy":
        return keras.losses.CategoricalCrossentropy()
    if cfg.loss == "focal":
        return keras.losses.CategoricalFocalCrossentropy(gamma=cfg.focal_gamma)
    raise ValueError(f"train.loss must be crossentropy or focal, not {cfg.loss!r}")


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """n / (k * count) per class present, as scikit-learn's 'balanced' mode."""
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    out = dict.fromkeys(range(num_classes), 1.0)
    out.update({int(c): float(w) for c, w in zip(present, weights, strict=True)})
    return out


class TestEvaluation(keras.callbacks.Callback):
    """Adds test loss and accuracy to each epoch's logs. They are recorded and
    plotted, and never used to choose anything."""

    def __init__(self, test_ds: tf.data.Dataset):
        super().__init__()
        self.test_ds = test_ds

    def on_epoch_end(self, epoch, logs=None):
        result = self.model.evaluate(self.test_ds, verbose=0, return_dict=True)
        logs["test_loss"] = result["loss"]
        logs["test_accuracy"] = result["accuracy"]


class BackboneWarmup(keras.callbacks.Callback):
    """Keeps the backbone frozen for the first ``epochs`` epochs."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_begin(self, epoch, logs=None):
        backbone = backbone_of(self.model)
        trainable = epoch >= self.epochs
        if backbone.trainable != trainable:
            backbone.trainable = trainable
            # Retrace the train step over the new set of trainable variables.
            self.model.make_train_function(force=True)
            log.info("epoch %d: backbone %s", epoch + 1, "unfrozen" if trainable else "frozen")


class EpochSeeds(keras.callbacks.Callback):
    """Sets the state of every random-number generator in the model (dropout,
    stochastic depth) from (seed, epoch) when an epoch begins.

    Keras keeps those states outside the weights that BackupAndRestore saves,
    so a resumed run would otherwise draw other dropout masks than an
    uninterrupted one from the resume point on."""

    def __init__(self, seed: int):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        states = [v for v in self.model.non_trainable_variables
                  if v.path.endswith("seed_generator_state")]  # fmt: skip
        for i, state in enumerate(states):
            value = np.array([self.seed * 7919 + i, epoch], dtype=np.int64) % 2**31
            state.assign(value.astype(state.dtype))


class TrainingState(keras.callbacks.Callback):
    """Records each finished epoch's history row and the state of early
    stopping and checkpointing, and restores them when training resumes
    from BackupAndRestore's epoch."""

    def __init__(self, work_dir: Path, stopper, checkpoint, best_weights: Path):
        super().__init__()
        self.path = work_dir / "state.json"
        self.backup_meta = work_dir / "backup" / "training_metadata.json"
        self.stopper, self.checkpoint, self.best_weights = stopper, checkpoint, best_weights
        self.epochs: list[dict] = []
        self._start = time.perf_counter()

    @staticmethod
    def epochs_done(work_dir: Path) -> int:
        """Epochs an interrupted run in ``work_dir`` finished, by its backup."""
        meta = Path(work_dir) / "backup" / "training_metadata.json"
        if not meta.exists():
            return 0
        return int(json.loads(meta.read_text())["epoch"])

    def resumed_epoch(self) -> int:
        return self.epochs_done(self.backup_meta.parent.parent)

    def on_train_begin(self, logs=None):
        done = self.resumed_epoch()
        saved = json.loads(self.path.read_text()) if self.path.exists() else []
        # Keep the epochs the backup has; a kill between the two writes may
        # have left one more here.
        self.epochs = [e for e in saved if e["history"]["epoch"] <= done]
        if len(self.epochs) != done:
            raise RuntimeError(
                f"{self.path} records {len(self.epochs)} epochs but the backup is at epoch "
                f"{done}; delete {self.path.parent} to start this training afresh"
            )
        if not done:
            return
        last = self.epochs[-1]
        for name, value in last["stopper"].items():
            setattr(self.stopper, name, value)
        self.checkpoint.best = last["checkpoint_best"]
        if self.best_weights.exists():
            current = self.model.get_weights()
            try:
                self.model.load_weights(self.best_weights)
                self.stopper.best_weights = self.model.get_weights()
            except (OSError, ValueError) as err:
                # Killed while writing it: it was a new best, and the epoch
                # that wrote it runs again and writes it again.
                log.warning("%s is unreadable (%s); it is written anew", self.best_weights, err)
                self.best_weights.unlink()
            self.model.set_weights(current)
        log.info("resuming after epoch %d of an interrupted run", done)

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}}
        row["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row["seconds"] = time.perf_counter() - self._start
        stopper = {k: getattr(self.stopper, k) for k in ("wait", "best", "best_epoch")}
        stopper = {k: (float(v) if v is not None else None) for k, v in stopper.items()}
        stopper["wait"], stopper["best_epoch"] = int(stopper["wait"]), int(stopper["best_epoch"])
        best = self.checkpoint.best
        self.epochs.append({
            "history": row,
            "stopper": stopper,
            "checkpoint_best": None if best is None else float(best),
        })  # fmt: skip
        tmp = self.path.with_name(self.path.name + ".part")
        tmp.write_text(json.dumps(self.epochs, indent=1))
        os.replace(tmp, self.path)

    def history(self) -> pd.DataFrame:
        rows = [e["history"] for e in self.epochs]
        return pd.DataFrame(rows).reindex(columns=HISTORY_COLUMNS)


def prepare_work_dir(
    work_dir: Path, cfg: TrainConfig, split_tsv: str | os.PathLike, num_classes: int
) -> None:
    """Keep an interrupted run's state only if it trained the same thing."""
    fingerprint = {
        "config": asdict(cfg),
        "num_classes": num_classes,
        "split_sha256": hashlib.sha256(Path(split_tsv).read_bytes()).hexdigest(),
    }
    path = work_dir / "fingerprint.json"
    if work_dir.exists():
        if path.exists() and json.loads(path.read_text()) == fingerprint:
            return
        log.warning("%s holds an interrupted run of other settings: starting afresh", work_dir)
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    path.write_text(json.dumps(fingerprint, indent=1))


def train(
    split_tsv: str | os.PathLike,
    shard_dir: str | os.PathLike,
    num_classes: int,
    model_path: str | os.PathLike | None,
    history_path: str | os.PathLike,
    work_dir: str | os.PathLike,
    cfg: TrainConfig,
    threads: int | None = None,
) -> pd.DataFrame:
    """Train, resuming from ``work_dir`` if an earlier run was interrupted;
    save the best model (by val loss; not when ``model_path`` is None) and
    the per-epoch history."""
    work_dir = Path(work_dir)
    prepare_work_dir(work_dir, cfg, split_tsv, num_classes)
    strategy, xla = configure_devices(cfg, threads)
    global_batch = cfg.batch_size * strategy.num_replicas_in_sync
    augment = Augment.from_config(cfg.augment)
    common = {"num_classes": num_classes, "batch_size": global_batch, "seed": cfg.seed}
    # Resuming at epoch k: the stream starts with epoch k's own order and draws.
    first = TrainingState.epochs_done(work_dir)
    train_ds = make_dataset(
        split_tsv, shard_dir, "train", shuffle=True, augment=augment,
        fraction=cfg.train_fraction, epochs=(first, max(cfg.max_epochs, first + 1)), **common,
    )  # fmt: skip
    steps = steps_per_epoch(split_tsv, "train", global_batch, cfg.train_fraction, cfg.seed)
    val_ds = make_dataset(split_tsv, shard_dir, "val", **common)
    frames, size = train_ds.element_spec[0].shape[1:3]
    with strategy.scope():
        model = build_model(
            num_classes, int(frames), int(size), cfg.backbone, cfg.head, cfg.weights,
            cfg.dropout, cfg.bn_momentum, cfg.norm,
        )  # fmt: skip
        optimizer = keras.optimizers.Adam(cfg.lr)
        # Build the optimizer for every variable, so that unfreezing after a
        # warm-up finds its slots ready (and a backup always has them all).
        optimizer.build(model.trainable_variables)
        model.compile(
            optimizer=optimizer, loss=make_loss(cfg), metrics=["accuracy"], jit_compile=xla
        )
    best_weights = work_dir / "best.weights.h5"
    stopper = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=cfg.patience, restore_best_weights=True, verbose=1
    )
    checkpoint = keras.callbacks.ModelCheckpoint(
        best_weights, monitor="val_loss", save_best_only=True, save_weights_only=True
    )
    state = TrainingState(work_dir, stopper, checkpoint, best_weights)
    callbacks: list[keras.callbacks.Callback] = []
    if cfg.evaluate_test:
        callbacks.append(TestEvaluation(make_dataset(split_tsv, shard_dir, "test", **common)))
    if cfg.warmup_epochs > 0:
        callbacks.append(BackboneWarmup(cfg.warmup_epochs))
    callbacks += [
        EpochSeeds(cfg.seed),
        stopper,
        checkpoint,
        keras.callbacks.TerminateOnNaN(),
        state,
        # Last, so that it restores weights and optimizer after everything else.
        # double_checkpoint: a backup cut short by a kill falls back to the one before.
        keras.callbacks.BackupAndRestore(
            work_dir / "backup", double_checkpoint=True, delete_checkpoint=False
        ),
    ]
    class_weight = None
    if cfg.class_weights:
        class_weight = balanced_class_weights(labels_of(split_tsv, "train"), num_classes)
    log.info(
        "training %s/%s, T=%d S=%d, %d classes, lr %g, batch %d, up to %d epochs",
        cfg.backbone, cfg.head, frames, size, num_classes, cfg.lr, global_batch,
        cfg.max_epochs,
    )  # fmt: skip
    model.fit(
        train_ds, validation_data=val_ds, epochs=cfg.max_epochs, steps_per_epoch=steps,
        callbacks=callbacks, class_weight=class_weight, verbose=2,
    )  # fmt: skip
    history = state.history()
    if history.empty or not np.isfinite(history["loss"]).all():
        raise FloatingPointError(
            "training stopped: the loss became NaN or infinite; lower train.lr"
        )
    write_tsv(history, history_path)
    if model_path is not None:
        model.save(model_path)
        log.info("saved %s (best epoch %d)", model_path, stopper.best_epoch + 1)
    # Finished: a later run of the same training starts afresh.
    shutil.rmtree(work_dir)
    return history
