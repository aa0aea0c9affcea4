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
from conftest import SHORT_ARGS as ARGS
from conftest import local_env, snakemake, snakemake_cmd
from conftest import short_workflow as prepared

pytestmark = pytest.mark.workflow


def rerun(workdir: Path) -> None:
    """What the README says to do after a kill: unlock, then the same command."""
    unlock = snakemake(workdir, "--unlock", *ARGS, timeout=120)
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    out = snakemake(workdir, *ARGS, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]


def kill_when(workdir: Path, ready, timeout: float = 300) -> None:
    """Run snakemake in its own process group; SIGKILL the group once ``ready()``."""
    cmd = [*snakemake_cmd(), "--cores", "2", *ARGS]
    log = open(workdir / "killed_run.log", "w")
    proc = subprocess.Popen(
        cmd,
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=local_env(),
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


def assert_same_results(a: Path, b: Path) -> None:
    for table in (
        "data/manifest.tsv",
        "data/split.tsv",
        "data/extract_report.tsv",
        "final/predictions.tsv",
        "final/per_class.tsv",
    ):
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


def test_killed_during_extraction(short_run, tmp_path):
    workdir = prepared(tmp_path)
    shards = workdir / "results/data/shards"
    kill_when(workdir, lambda: shards.is_dir() and any(shards.glob(".shard-*.h5.part")))
    done = sorted(shards.glob("shard-*.h5"))
    assert len(done) < 4  # the kill came before extraction finished
    rerun(workdir)
    assert_same_results(workdir, short_run)


def test_killed_during_training(short_run, tmp_path):
    workdir = prepared(tmp_path)
    meta = workdir / "results/final/work/full/backup/training_metadata.json"

    def one_epoch_saved():
        try:
            return json.loads(meta.read_text())["epoch"] >= 1
        except (OSError, ValueError):
            return False

    kill_when(workdir, one_epoch_saved)
    assert not (workdir / "results/final/model.keras").exists()
    rerun(workdir)
    assert "resuming after epoch" in (workdir / "logs/train/train.log").read_text()
    assert_same_results(workdir, short_run)
