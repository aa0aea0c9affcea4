"""snakemake killed with SIGKILL during extraction and during training, then
rerun with the same command: the outputs equal an uninterrupted run's. The
extraction kill runs the data stage alone (what follows it only reads its
outputs); the training kill starts from a finished data stage."""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from actionrec.tables import read_tsv
from conftest import SHORT_ARGS as ARGS
from conftest import local_env, snakemake, snakemake_cmd
from conftest import short_workflow as prepared

pytestmark = pytest.mark.workflow


DATA = ("results/data/split.tsv",)
# What the comparison reads: the trained model and its history, not what is made from them.
TRAINED = ("results/final/model.keras",)
DATA_TABLES = ("data/manifest.tsv", "data/split.tsv", "data/extract_report.tsv")


def rerun(workdir: Path, *targets: str) -> None:
    """What the README says to do after a kill: unlock, then the same command."""
    unlock = snakemake(workdir, "--unlock", *targets, *ARGS, timeout=120)
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    out = snakemake(workdir, *targets, *ARGS, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]


def kill_when(workdir: Path, temp: Path, ready, *targets: str, timeout: float = 300) -> None:
    """Run snakemake in its own process group; SIGKILL the group once ``ready()``.
    What the killed jobs leave in their temp folder (such as ffmpeg's private link
    to a clip, which a killed reader cannot remove) stays in ``temp``."""
    cmd = [*snakemake_cmd(), "--cores", "2", *targets, *ARGS]
    log = open(workdir / "killed_run.log", "w")
    (temp / "killed-run-tmp").mkdir()
    proc = subprocess.Popen(
        cmd,
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**local_env(), "TMPDIR": str(temp / "killed-run-tmp")},
    )
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, "the run ended before it could be interrupted"
            assert time.monotonic() < deadline, "timed out waiting to interrupt"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def assert_same_tables(a: Path, b: Path, tables) -> None:
    for table in tables:
        x, y = read_tsv(a / "results" / table), read_tsv(b / "results" / table)
        x, y = (t.drop(columns=[c for c in ("path",) if c in t]) for t in (x, y))
        pd.testing.assert_frame_equal(x, y, obj=table)


def assert_same_data(a: Path, b: Path) -> None:
    """The same tables and shards, and no temporary file left behind."""
    assert_same_tables(a, b, DATA_TABLES)
    shards = sorted((b / "results/data/shards").glob("shard-*.h5"))
    assert [s.name for s in sorted((a / "results/data/shards").glob("shard-*.h5"))] == [
        s.name for s in shards
    ]
    for shard in shards:
        with h5py.File(shard) as x, h5py.File(a / "results/data/shards" / shard.name) as y:
            np.testing.assert_array_equal(x["frames"][:], y["frames"][:])
    assert not list((a / "results").rglob("*.part")), "a temporary file was left behind"


def assert_same_training(a: Path, b: Path) -> None:
    """The same data, every epoch's numbers and the same weights (and so the same
    evaluation, which reads nothing else)."""
    from test_train import assert_same_weights

    assert_same_data(a, b)
    history = [read_tsv(w / "results/final/history.tsv").drop(columns="seconds") for w in (a, b)]
    pd.testing.assert_frame_equal(*history)
    assert_same_weights(a / "results/final/model.keras", b / "results/final/model.keras")


def test_killed_during_extraction(short_run, tmp_path):
    workdir = prepared(tmp_path)
    shards = workdir / "results/data/shards"
    kill_when(
        workdir, tmp_path, lambda: shards.is_dir() and any(shards.glob(".shard-*.h5.part")), *DATA
    )
    done = sorted(shards.glob("shard-*.h5"))
    assert len(done) < 4  # the kill came before extraction finished
    rerun(workdir, *DATA)
    assert_same_data(workdir, short_run)


def with_data_of(run: Path, folder: Path) -> Path:
    """A copy of ``run`` up to its data stage: its files, times and snakemake's
    records, without what training and evaluation made."""
    workdir = folder / "wf"
    shutil.copytree(run, workdir, symlinks=True)
    for made in ("results/final", "logs/train", ".snakemake/locks", ".snakemake/incomplete"):
        shutil.rmtree(workdir / made, ignore_errors=True)
    return workdir


def test_killed_during_training(short_run, tmp_path):
    workdir = with_data_of(short_run, tmp_path)
    meta = workdir / "results/final/work/full/backup/training_metadata.json"

    def one_epoch_saved():
        try:
            return json.loads(meta.read_text())["epoch"] >= 1
        except (OSError, ValueError):
            return False

    kill_when(workdir, tmp_path, one_epoch_saved, *TRAINED)
    assert not (workdir / "results/final/model.keras").exists()
    rerun(workdir, *TRAINED)
    assert "resuming after epoch" in (workdir / "logs/train/train.log").read_text()
    assert_same_training(workdir, short_run)
