"""Training end to end on tiny shards: outputs, resume after SIGKILL, determinism."""

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
sys.path.insert(0, {scripts!r})
from actionrec.train import TrainConfig, train
cfg = TrainConfig(**json.loads({cfg!r}))
train({split!r}, {shards!r}, 3, {out!r} + "/model.keras", {out!r} + "/history.tsv",
      {out!r} + "/work", cfg)
"""
CFG = {"max_epochs": 3, "patience": 10, "batch_size": 4, "seed": 5,
       "augment": {"crop": 0.2, "brightness": 0.1}}  # fmt: skip


def start(tiny_data, out: Path, **overrides) -> subprocess.Popen:
    code = RUN.format(
        scripts=str(REPO / "scripts"), cfg=json.dumps({**CFG, **overrides}),
        split=str(tiny_data["split"]), shards=str(tiny_data["shards"]), out=str(out),
    )  # fmt: skip
    log = open(out / "log.txt", "a")
    return subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, out: Path, timeout: int = 600) -> str:
    assert proc.wait(timeout=timeout) == 0, (out / "log.txt").read_text()[-3000:]
    return (out / "log.txt").read_text()


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    finish(start(tiny_data, out), out)
    return out


def test_training_writes_model_and_history(uninterrupted):
    history = pd.read_csv(uninterrupted / "history.tsv", sep="\t")
    assert history["epoch"].tolist() == [1, 2, 3]
    for column in ("loss", "accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy"):
        assert history[column].notna().all(), column
    assert np.allclose(history["learning_rate"], 0.0015)
    assert (uninterrupted / "model.keras").stat().st_size > 1e6
    # The work folder of a finished run is gone: a rerun trains afresh.
    assert not (uninterrupted / "work").exists()


def test_sigkill_then_rerun_resumes_from_the_saved_epoch(tiny_data, tmp_path, uninterrupted):
    proc = start(tiny_data, tmp_path)
    backup = tmp_path / "work/backup/training_metadata.json"

    def saved_epoch() -> int:
        try:
            return json.loads(backup.read_text())["epoch"]
        except (OSError, ValueError):
            return 0

    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and saved_epoch() < 1:
        time.sleep(0.1)
    assert proc.poll() is None, "training ended before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = saved_epoch()
    assert 1 <= done < 3 and not (tmp_path / "model.keras").exists()

    log = finish(start(tiny_data, tmp_path), tmp_path)
    rerun = log.split("resuming after epoch")[1]
    assert rerun.startswith(f" {done} ")
    # The rerun trained only the epochs that were missing.
    assert f"Epoch {done}/3" not in rerun and f"Epoch {done + 1}/3" in rerun
    history = pd.read_csv(tmp_path / "history.tsv", sep="\t")
    assert history["epoch"].tolist() == [1, 2, 3]
    # Every epoch, before and after the kill, is that of an uninterrupted run with the
    # same seeds, and so is the saved model.
    whole = pd.read_csv(uninterrupted / "history.tsv", sep="\t")
    columns = ["loss", "accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy"]
    pd.testing.assert_frame_equal(history[columns], whole[columns])
    assert_same_weights(tmp_path / "model.keras", uninterrupted / "model.keras")


def assert_same_weights(a: Path, b: Path) -> None:
    import keras

    wa = keras.saving.load_model(a).get_weights()
    wb = keras.saving.load_model(b).get_weights()
    assert len(wa) == len(wb)
    for x, y in zip(wa, wb, strict=True):
        np.testing.assert_array_equal(x, y)


def test_same_config_and_seed_give_the_same_weights(tiny_data, tmp_path, uninterrupted):
    finish(start(tiny_data, tmp_path), tmp_path)
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "history.tsv", sep="\t").drop(columns="seconds"),
        pd.read_csv(uninterrupted / "history.tsv", sep="\t").drop(columns="seconds"),
    )
    assert_same_weights(tmp_path / "model.keras", uninterrupted / "model.keras")
