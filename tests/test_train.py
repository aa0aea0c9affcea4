"""Training end to end on tiny shards: outputs, resume after SIGKILL, determinism,
and one-epoch runs of the loss and weighting options."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO

RUN = """
import json, logging, sys
logging.basicConfig(level=logging.INFO)
{prelude}
sys.path.insert(0, {scripts!r})
from actionrec.pipeline import Data
from actionrec.train import TrainConfig, train
cfg = TrainConfig.from_config(json.loads({cfg!r}))
train(Data.of({split!r}, {shards!r}, 3), cfg, {out!r} + "/work",
      model_path={out!r} + "/model.keras", history_path={out!r} + "/history.tsv")
"""
CFG = {
    "weights": "none",
    "max_epochs": 3,
    "patience": 10,
    "batch_size": 4,
    "seed": 5,
    "augment": {"crop": 0.2, "brightness": 0.1},
}


# Before TensorFlow starts: the CPU as several logical devices, one replica each.
SPLIT_CPU = """
import tensorflow as tf
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * {n}
)
"""


def start(tiny_data, out: Path, replicas: int = 1, **overrides) -> subprocess.Popen:
    """The training of ``CFG`` with ``overrides`` in a process of its own, on
    ``replicas`` logical CPU devices."""
    code = RUN.format(
        prelude=SPLIT_CPU.format(n=replicas) if replicas > 1 else "",
        scripts=str(REPO / "scripts"),
        cfg=json.dumps({**CFG, **overrides}),
        split=str(tiny_data["split"]),
        shards=str(tiny_data["shards"]),
        out=str(out),
    )
    log = open(out / "log.txt", "a")
    return subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, out: Path, timeout: int = 600) -> str:
    assert proc.wait(timeout=timeout) == 0, (out / "log.txt").read_text()[-3000:]
    return (out / "log.txt").read_text()


def saved_epoch(backup: Path) -> int:
    try:
        return json.loads(backup.read_text())["epoch"]
    except (OSError, ValueError):
        return 0


def kill_after_a_backup(proc: subprocess.Popen, backup: Path) -> int:
    """SIGKILL the training once ``backup`` records a finished epoch."""
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and saved_epoch(backup) < 1:
        time.sleep(0.1)
    assert proc.poll() is None, "training ended before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return saved_epoch(backup)


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    finish(start(tiny_data, out), out)
    return out


def test_training_writes_model_and_history(uninterrupted):
    history = pd.read_csv(uninterrupted / "history.tsv", sep="\t")
    assert history["epoch"].tolist() == [1, 2, 3]
    assert (history["stage"] == "full").all() and history["kept"].sum() == 1
    for column in ("loss", "accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy"):
        assert history[column].notna().all(), column
    assert np.allclose(history["learning_rate"], 0.0015)
    # The kept epoch is the one with the lowest val loss.
    assert history.loc[history["kept"], "val_loss"].item() == history["val_loss"].min()
    assert (uninterrupted / "model.keras").stat().st_size > 1e6
    # The work folder of a finished run is gone: a rerun trains afresh.
    assert not (uninterrupted / "work").exists()


def test_sigkill_then_rerun_resumes_from_the_saved_epoch(tiny_data, tmp_path):
    # On the small backbone with dropout (random draws in the model as well as in the
    # augmentation): a process of EfficientNetB0 spends most of a minute tracing its
    # first epoch, and the resume does not depend on the backbone.
    small = {"backbone": "smallcnn", "dropout": 0.3}
    uninterrupted, parts = tmp_path / "whole", tmp_path / "parts"
    uninterrupted.mkdir(), parts.mkdir()
    finish(start(tiny_data, uninterrupted, **small), uninterrupted)
    proc = start(tiny_data, parts, **small)
    done = kill_after_a_backup(proc, parts / "work/full/backup/training_metadata.json")
    assert 1 <= done < 3 and not (parts / "model.keras").exists()

    log = finish(start(tiny_data, parts, **small), parts)
    rerun = log.split("resuming after epoch")[1]
    assert rerun.startswith(f" {done} ")
    # The rerun trained only the epochs that were missing.
    assert f"Epoch {done}/3" not in rerun and f"Epoch {done + 1}/3" in rerun
    history = pd.read_csv(parts / "history.tsv", sep="\t")
    assert history["epoch"].tolist() == [1, 2, 3]
    # Every epoch, before and after the kill, is that of an uninterrupted run with the
    # same seeds, and so is the saved model: the same config and seed give the same
    # weights, in another process, with or without an interruption.
    whole = pd.read_csv(uninterrupted / "history.tsv", sep="\t")
    pd.testing.assert_frame_equal(history.drop(columns="seconds"), whole.drop(columns="seconds"))
    assert_same_weights(parts / "model.keras", uninterrupted / "model.keras")


def assert_same_weights(a: Path, b: Path) -> None:
    import keras

    wa = keras.saving.load_model(a).get_weights()
    wb = keras.saving.load_model(b).get_weights()
    assert len(wa) == len(wb)
    for x, y in zip(wa, wb, strict=True):
        np.testing.assert_array_equal(x, y)


def one_epoch(tiny_data, tmp_path, **options):
    from actionrec.train import TrainConfig, train

    cfg = TrainConfig.from_config(
        {"backbone": "smallcnn", "weights": "none", "max_epochs": 1, "batch_size": 4, **options}
    )
    return train(tiny_data["data"], cfg, tmp_path / "work")


@pytest.mark.parametrize(
    "options",
    [{"class_weights": True}, {"loss": "focal", "focal_gamma": 2.0}, {"monitor": "val_accuracy"}],
    ids=["class_weights", "focal", "monitor_val_accuracy"],
)
def test_training_options_run_an_epoch(tiny_data, tmp_path, options, monkeypatch):
    import keras

    # Python runs a training step only while TensorFlow traces it: once, when
    # the optimizer's and metrics' variables exist before fit (twice otherwise).
    traces = []
    step = keras.Model.train_step
    monkeypatch.setattr(keras.Model, "train_step", lambda m, d: traces.append(1) or step(m, d))
    model, history = one_epoch(tiny_data, tmp_path, **options)
    assert len(history) == 1 and np.isfinite(history["loss"]).all()
    assert model.output_shape == (None, 3)
    assert len(traces) == 1


def test_a_diverging_run_stops_with_advice(tiny_data, tmp_path):
    with pytest.raises(FloatingPointError, match="lower train.lr"):
        one_epoch(tiny_data, tmp_path, lr=1e12)


def test_focal_loss_weighs_easy_clips_less():
    import keras

    from actionrec.train import TrainConfig, make_loss

    y = np.array([[1.0, 0.0], [0.0, 1.0]])
    p = np.array([[0.9, 0.1], [0.4, 0.6]])
    focal = make_loss(TrainConfig.from_config({"loss": "focal", "focal_gamma": 2.0}))
    plain = keras.losses.CategoricalCrossentropy(reduction=None)(y, p)
    per_clip = keras.losses.CategoricalFocalCrossentropy(gamma=2.0, reduction=None)(y, p)
    # The easy clip (0.9) loses a larger share of its loss than the hard one.
    ratio = np.asarray(per_clip) / np.asarray(plain)
    assert ratio[0] < ratio[1]
    assert float(focal(y, p)) == pytest.approx(float(np.mean(per_clip)), rel=1e-5)


def test_balanced_class_weights_follow_the_counts():
    from actionrec.train import balanced_class_weights

    weights = balanced_class_weights(np.array([0, 0, 0, 1]), 3)
    assert weights == {0: pytest.approx(4 / 6), 1: pytest.approx(2.0), 2: 1.0}


def test_a_diverging_search_trial_scores_nan_and_is_never_chosen(tiny_data, tmp_path):
    import math

    from actionrec.search import SearchSettings, choose
    from actionrec.train import run_trial

    settings = SearchSettings.from_config({"epochs": 1})
    section = {"backbone": "smallcnn", "weights": "none", "batch_size": 4}
    diverged = run_trial(1e12, tiny_data["data"], section, settings, tmp_path, seed=0)
    fine = run_trial(1e-3, tiny_data["data"], section, settings, tmp_path, seed=0)
    assert math.isnan(diverged["val_loss"]) and math.isfinite(fine["val_loss"])
    table = pd.DataFrame([{"trial": 1, **diverged}, {"trial": 2, **fine}])
    assert choose({"bayes": table})["lr"] == 1e-3
