"""snakemake killed with SIGKILL during extraction and during training, then
rerun with the same command: the final outputs equal an uninterrupted run's."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from actionrec.tables import read_tsv
from conftest import copy_workflow, snakemake, snakemake_cmd

pytestmark = pytest.mark.workflow

# Longer, larger clips than tiny.yaml's, so that extraction takes long enough to be
# interrupted; no searches or comparison, so that the runs stay short.
CONFIG = """demo: {min_frames: 60, max_frames: 120, width: 320, height: 240}
search: {methods: []}
compare: {backbones: []}
train: {lr: 0.0015, max_epochs: 3, patience: 5}
"""
ARGS = ("--configfile", "tiny.yaml", "interrupt.yaml")


def prepared(folder: Path) -> Path:
    workdir = copy_workflow(folder)
    (workdir / "tiny.yaml").write_text((Path(__file__).with_name("tiny.yaml")).read_text())
    (workdir / "interrupt.yaml").write_text(CONFIG)
    return workdir


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = prepared(tmp_path_factory.mktemp("whole"))
    out = snakemake(workdir, *ARGS, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir


def kill_when(workdir: Path, ready, timeout: float = 300) -> None:
    """Run snakemake in its own process group; SIGKILL the group once ``ready()``."""
    cmd = [*snakemake_cmd(), "--cores", "2", *ARGS]
    log = open(workdir / "killed_run.log", "w")
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, "the run ended before it could be interrupted"
            assert time.monotonic() < deadline, "timed out waiting to interrupt"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def assert_same_results(a: Path, b: Path) -> None:
    for table in ("data/manifest.tsv", "data/split.tsv", "data/extract_report.tsv",
                  "final/predictions.tsv", "final/per_class.tsv"):  # fmt: skip
        x, y = read_tsv(a / "results" / table), read_tsv(b / "results" / table)
        x, y = (t.drop(columns=[c for c in ("path",) if c in t]) for t in (x, y))
        pd.testing.assert_frame_equal(x, y, obj=table)
    history = [read_tsv(w / "results/final/history.tsv").drop(columns="seconds") for w in (a, b)]
    pd.testing.assert_frame_equal(*history)
    assert json.loads((a / "results/final/metrics.json").read_text()) == json.loads(
        (b / "results/final/metrics.json").read_text()
    )
    shards = sorted((b / "results/data/shards").glob("shard-*.h5"))
    assert [s.name for s in sorted((a / "results/data/shards").glob("shard-*.h5"))] == [
        s.name for s in shards
    ]
    for shard in shards:
        with h5py.File(shard) as x, h5py.File(a / "results/data/shards" / shard.name) as y:
            np.testing.assert_array_equal(x["frames"][:], y["frames"][:])
    assert not list((a / "results").rglob("*.part")), "a temporary file was left behind"


def test_killed_during_extraction(reference, tmp_path):
    workdir = prepared(tmp_path)
    shards = workdir / "results/data/shards"
    kill_when(workdir, lambda: shards.is_dir() and any(shards.glob(".shard-*.h5.part")))
    done = sorted(shards.glob("shard-*.h5"))
    assert len(done) < 4  # the kill came before extraction finished
    out = snakemake(workdir, *ARGS, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert_same_results(workdir, reference)


def test_killed_during_training(reference, tmp_path):
    workdir = prepared(tmp_path)
    meta = workdir / "results/final/work/backup/training_metadata.json"

    def one_epoch_saved():
        try:
            return json.loads(meta.read_text())["epoch"] >= 1
        except (OSError, ValueError):
            return False

    kill_when(workdir, one_epoch_saved)
    assert not (workdir / "results/final/model.keras").exists()
    out = snakemake(workdir, *ARGS, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming after epoch" in (workdir / "logs/train/train.log").read_text()
    assert_same_results(workdir, reference)
