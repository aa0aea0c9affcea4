"""Interruption-safe fitting: a training stage that, killed and run again,
continues where it stopped and ends exactly as an uninterrupted run would.

A stage keeps its state in its work folder, written by Keras's own callbacks:

  backup/           BackupAndRestore: weights, optimizer state, epoch
  history.csv       CSVLogger (appending): one row per finished epoch
  best.weights.h5   ModelCheckpoint: the weights of the best epoch so far
  finished.json     written once the stage has ended

Early stopping's state is not stored: on resume it is replayed from the
history rows of the finished epochs, through EarlyStopping's own logic.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from .provenance import read_json_state, write_json_atomic

log = logging.getLogger(__name__)

# What a stage's history.tsv rows hold, in this order.
HISTORY_COLUMNS = [
    "epoch",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
    "learning_rate",
    "seconds",
    "collapsed",
]


def prepare_work_dir(work_dir: Path, fingerprint: dict) -> None:
    """Keep an interrupted run's state only if it trained the same thing:
    same settings, data, backbone files, devices and libraries."""
    path = work_dir / "fingerprint.json"
    expected = json.loads(json.dumps(fingerprint, default=str))
    if work_dir.exists():
        found = read_json_state(path)
        if found == expected:
            return
        found = found if isinstance(found, dict) else {}
        changed = sorted(
            k for k in expected.keys() | found.keys() if found.get(k) != expected.get(k)
        )
        log.warning(
            "%s holds an interrupted run of other %s: starting afresh", work_dir, ", ".join(changed)
        )
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    write_json_atomic(path, expected)


def epochs_done(stage_dir: Path) -> int:
    """Epochs an interrupted stage finished, by its backup. A backup whose
    record cannot be read is discarded: the stage starts afresh."""
    meta = stage_dir / "backup" / "training_metadata.json"
    if not meta.exists():
        return 0
    state = read_json_state(meta)
    if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
        discard_stage(stage_dir)
        return 0
    return state["epoch"]


def discard_stage(stage_dir: Path) -> None:
    """Remove an interrupted stage's state, so that it starts afresh."""
    shutil.rmtree(stage_dir / "backup", ignore_errors=True)
    for name in ("best.weights.h5", "partial-best.weights.h5", "history.csv"):
        (stage_dir / name).unlink(missing_ok=True)


def finished_rows(stage_dir: Path, done: int) -> list[dict] | None:
    """The history rows of the ``done`` epochs the backup holds. The log may
    hold one more (killed between the two writes) or a row cut short; it is
    rewritten to hold exactly these, so that appending continues cleanly.
    None, with a warning, when the log does not hold them all."""
    path = stage_dir / "history.csv"
    if not path.exists() or done == 0:
        path.unlink(missing_ok=True)
        return []
    try:
        rows = pd.read_csv(path, on_bad_lines="skip")
        rows = rows[pd.to_numeric(rows["epoch"], errors="coerce") < done]
    except (ValueError, KeyError) as err:  # empty, or not this log at all
        log.warning("%s cannot be read (%s)", path, err)
        return None
    rows = rows.drop_duplicates("epoch", keep="last").sort_values("epoch")
    if len(rows) != done:
        log.warning(
            "%s records %d finished epochs but the backup is at epoch %d",
            path,
            len(rows),
            done,
        )
        return None
    rows.to_csv(path, index=False)
    return rows.to_dict("records")


class EpochInfo(keras.callbacks.Callback):
    """Adds the learning rate and the epoch's seconds to its logs."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        rate = self.model.optimizer.learning_rate
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(rate))
        logs["seconds"] = round(time.perf_counter() - self._start, 3)


class EpochSeeds(keras.callbacks.Callback):
    """Sets the state of every random-number generator in the model (dropout,
    stochastic depth) from (seed, epoch) when an epoch begins.

    Keras keeps those states outside the weights BackupAndRestore saves, so a
    resumed run would otherwise draw other dropout masks than an
    uninterrupted one from the resume point on."""

    def __init__(self, seed: int):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        states = [v for v in self.model.non_trainable_variables if v.name == "seed_generator_state"]
        for i, state in enumerate(states):
            value = np.array([self.seed * 7919 + i, epoch], dtype=np.int64) % 2**31
            state.assign(value.astype(state.dtype))


class TestEvaluation(keras.callbacks.Callback):
    """Adds test loss and accuracy to each epoch's logs. They are recorded and
    plotted, and never used to choose anything."""

    def __init__(self, test_ds):
        super().__init__()
        self.test_ds = test_ds

    def on_epoch_end(self, epoch, logs=None):
        result = self.model.evaluate(self.test_ds, verbose=0, return_dict=True)
        logs["test_loss"] = result["loss"]
        logs["test_accuracy"] = result["accuracy"]


class CollapseGuard(keras.callbacks.Callback):
    """Stops a stage whose train accuracy falls below ``floor`` (the stage
    before it reached well above): the pretrained features are being
    destroyed, and more epochs of it only cost time. Marks every epoch's logs
    with ``collapsed`` (1 for the epoch that stopped it)."""

    def __init__(self, floor: float | None):
        super().__init__()
        self.floor = floor

    def on_epoch_end(self, epoch, logs=None):
        fell = self.floor is not None and float(logs.get("accuracy", np.inf)) < self.floor
        logs["collapsed"] = float(fell)
        if fell:
            log.warning(
                "epoch %d: train accuracy %.3f fell below %.3f: the stage collapsed and stops; "
                "the best weights so far stay",
                epoch + 1,
                logs["accuracy"],
                self.floor,
            )
            self.model.stop_training = True


def partial(path: Path) -> Path:
    """Where a weights file is written before it replaces ``path`` (Keras needs
    the name to end in .weights.h5)."""
    return path.with_name("partial-" + path.name)


class GuardedCheckpoint(keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint that never keeps the weights of an epoch CollapseGuard
    marked as collapsed, whatever its monitored value, and writes each file
    whole: to a partial file first, which then replaces the best one, so that
    a kill mid-write leaves the last good weights."""

    def on_epoch_end(self, epoch, logs=None):
        if not (logs or {}).get("collapsed"):
            super().on_epoch_end(epoch, logs)

    def _get_file_path(self, epoch, batch, logs):
        return str(partial(Path(self.filepath)))

    def _save_model(self, epoch, batch, logs):
        written = partial(Path(self.filepath))
        written.unlink(missing_ok=True)
        super()._save_model(epoch, batch, logs)
        if written.exists():
            os.replace(written, self.filepath)


class ResumedEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras's EarlyStopping, first fed the logs of the epochs an interrupted
    run finished, so that its patience and best value continue from there.
    Best weights come from the ModelCheckpoint file, not from here."""

    def __init__(self, past: Sequence[dict], monitor: str, **kwargs):
        super().__init__(
            monitor=monitor, mode=mode_of(monitor), restore_best_weights=False, **kwargs
        )
        self.past = list(past)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for row in self.past:
            self.on_epoch_end(int(row["epoch"]), dict(row))

    def would_stop(self, model: keras.Model) -> bool:
        """Whether the past epochs already ended the stage."""
        self.set_model(model)
        self.on_train_begin()
        model.stop_training = False
        return self.stopped_epoch > 0


def build_for_fit(model: keras.Model, batch) -> None:
    """Create the optimizer's and the metrics' variables before ``fit``, from
    ``batch`` (a dataset's ``element_spec``, or arrays of a batch's shapes),
    as Keras does itself only under a distribution strategy. Otherwise the
    first training step creates them while TensorFlow traces it, and
    TensorFlow then traces the step a second time: the same training, with
    one trace instead of two (seconds for a small model on CPU, more for
    EfficientNetB0). Keras's own ``_symbolic_build``, whose variables are
    the ones training would have created."""
    with model.distribute_strategy.scope():
        model._symbolic_build(data_batch=batch)


def mode_of(monitor: str) -> str:
    """Whether a higher or a lower ``monitor`` value is better."""
    return "max" if "acc" in monitor else "min"


def best_value(rows: Sequence[dict], monitor: str, baseline: float | None) -> float | None:
    """The best ``monitor`` value over ``rows`` and ``baseline``."""
    values = [float(r[monitor]) for r in rows if np.isfinite(float(r[monitor]))]
    if baseline is not None:
        values.append(baseline)
    if not values:
        return None
    return max(values) if mode_of(monitor) == "max" else min(values)


def fit_resumable(
    model: keras.Model,
    train_stream: Callable[[int], object],
    val_ds,
    stage_dir: Path,
    *,
    steps: int,
    epochs: int,
    patience: int,
    monitor: str,
    seed: int,
    baseline: float | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    class_weight: dict | None = None,
    collapse_floor: float | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Fit ``model`` (compiled) for up to ``epochs`` epochs with early
    stopping on ``monitor``, resuming from ``stage_dir`` when an earlier run
    was interrupted. ``train_stream(first)`` gives the train batches of epochs
    ``first``, ``first + 1``, ... back to back.

    The model ends with the weights of the best epoch; with a ``baseline``
    (the previous stage's best value) an epoch must beat it to count, and if
    none does the model's weights are left as they came in. Returns the
    stage's history (0-based ``epoch``) and its summary (best epoch and
    value, or ``None`` when the baseline stood). With ``collapse_floor``, an
    epoch whose train accuracy falls below it ends the stage (CollapseGuard)."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    start_weights = model.get_weights()
    resume = _resume_point(model, stage_dir, epochs, patience, monitor, baseline)
    if resume is not None:
        done, past, stopper = resume
        # BackupAndRestore sets the epoch a resumed fit starts at on the model,
        # and Keras never clears it: a later stage's fit of the same model
        # would start there too, and train no epoch.
        model._initial_epoch = None
        stream = train_stream(done)
        build_for_fit(model, stream.element_spec)
        model.fit(
            stream,
            validation_data=val_ds,
            epochs=epochs,
            steps_per_epoch=steps,
            class_weight=class_weight,
            shuffle=False,  # the stream is shuffled per epoch already
            verbose=2,
            callbacks=[
                *callbacks,
                EpochSeeds(seed),
                EpochInfo(),
                CollapseGuard(collapse_floor),
                stopper,
                *_stage_files(stage_dir, monitor, best_value(past, monitor, baseline)),
            ],
        )
    return _finish_stage(model, stage_dir, monitor, baseline, start_weights)


def _resume_point(
    model: keras.Model,
    stage_dir: Path,
    epochs: int,
    patience: int,
    monitor: str,
    baseline: float | None,
) -> tuple[int, list[dict], ResumedEarlyStopping] | None:
    """Where the stage's fit starts: the epochs done, their rows and the early
    stopping that carries on from them; ``None`` when the stage has nothing left
    (it finished, ran all its epochs, or early stopping, a diverged loss or a
    collapse ended it already)."""
    if read_json_state(stage_dir / "finished.json") is not None:
        return None
    done = epochs_done(stage_dir)
    past = finished_rows(stage_dir, done)
    if past is None:
        log.warning("%s: the interrupted stage's state disagrees; it starts afresh", stage_dir)
        discard_stage(stage_dir)
        done, past = 0, []
    stopper = ResumedEarlyStopping(past, monitor=monitor, patience=patience, baseline=baseline)
    if done:
        log.info("resuming after epoch %d of an interrupted run", done)
    collapsed = any(float(r.get("collapsed", 0) or 0) > 0 for r in past)
    if done >= epochs or stopper.would_stop(model) or _diverged(past) or collapsed:
        return None
    return done, past, stopper


def _stage_files(
    stage_dir: Path, monitor: str, best: float | None
) -> list[keras.callbacks.Callback]:
    """The callbacks that keep the stage's state in ``stage_dir``: the best
    epoch's weights (which must beat ``best``), the history, and the backup a
    killed run resumes from."""
    return [
        GuardedCheckpoint(
            stage_dir / "best.weights.h5",
            monitor=monitor,
            mode=mode_of(monitor),
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=best,
        ),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.CSVLogger(stage_dir / "history.csv", append=True),
        # Last, so that it restores weights and optimizer after everything
        # else has started; double_checkpoint: a backup cut short by a kill
        # falls back to the one before.
        keras.callbacks.BackupAndRestore(
            stage_dir / "backup", double_checkpoint=True, delete_checkpoint=False
        ),
    ]


def _finish_stage(
    model: keras.Model,
    stage_dir: Path,
    monitor: str,
    baseline: float | None,
    start_weights: list,
) -> tuple[pd.DataFrame, dict]:
    """The stage's history and summary from its log; the model given the best
    epoch's weights (or, when none beat ``baseline``, those it came in with)."""
    history = pd.read_csv(stage_dir / "history.csv").drop_duplicates("epoch", keep="last")
    if history.empty or _diverged(history.to_dict("records")):
        raise FloatingPointError(
            "training stopped: the loss became NaN or infinite; lower train.lr"
        )
    values = history[monitor].to_numpy(float)
    best = int(np.nanargmax(values) if mode_of(monitor) == "max" else np.nanargmin(values))
    summary = {"best_epoch": best, "best": float(values[best]), "epochs": int(len(history))}
    best_path = stage_dir / "best.weights.h5"
    if best_path.exists():
        model.load_weights(best_path)
    else:  # no epoch beat the baseline: the incoming weights stay
        model.set_weights(start_weights)
        summary.update(best_epoch=None, best=baseline)
    history = history.reindex(columns=HISTORY_COLUMNS)
    history["collapsed"] = history["collapsed"].fillna(0).astype(float) > 0
    summary["collapsed"] = bool(history["collapsed"].any())
    write_json_atomic(stage_dir / "finished.json", summary)
    return history, summary


def _diverged(rows: Sequence[dict]) -> bool:
    return any(not np.isfinite(float(r["loss"])) for r in rows)
