"""The tiny workflow submitted to a real single-node SLURM cluster through
profiles/slurm, checked against sacct and against a local run."""

import os
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from actionrec.tables import read_tsv
from conftest import SHORT_ARGS, short_workflow, snakemake
from slurm_cluster import LocalSlurm, Unavailable, sacct_jobs

pytestmark = [pytest.mark.workflow, pytest.mark.slurm]


@pytest.fixture(scope="module")
def cluster():
    if os.environ.get("ACTIONREC_SLURM_TEST") != "1":
        pytest.skip(
            "set ACTIONREC_SLURM_TEST=1 to run it: it installs SLURM, MariaDB and munge "
            "with apt-get when missing and writes /etc/slurm and /etc/munge"
        )
    try:
        with LocalSlurm() as running:
            yield running
    except Unavailable as why:
        pytest.skip(f"no SLURM here: {why}")


def prepared(folder: Path) -> Path:
    workdir = short_workflow(folder)
    # The profile as shipped, but asking for no more CPUs than this node has.
    profile = workdir / "profiles/slurm/config.yaml"
    spec = yaml.safe_load(profile.read_text())
    cpus = os.cpu_count()
    for resources in spec["set-resources"].values():
        if "cpus_per_task" in resources:
            resources["cpus_per_task"] = min(resources["cpus_per_task"], cpus)
    spec["set-threads"] = {rule: min(n, cpus) for rule, n in spec["set-threads"].items()}
    profile.write_text(yaml.safe_dump(spec))
    # Model jobs ask for a GPU, as on a GPU cluster (the node has a fake one).
    (workdir / "gpu.yaml").write_text("resources: {gpus: 1}\n")
    return workdir


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    workdir = prepared(tmp_path_factory.mktemp("slurm"))
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 5))
    out = snakemake(
        workdir,
        "--workflow-profile",
        "profiles/slurm",
        *SHORT_ARGS,
        "gpu.yaml",
        "--slurm-init-seconds-before-status-checks",
        "1",
        timeout=900,
        slurm=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir, out, since


def test_every_rule_ran_as_a_completed_slurm_job(slurm_run):
    workdir, out, since = slurm_run
    jobs = sacct_jobs(since)
    print("\n".join("|".join(j.values()) for j in jobs))  # the sacct lines, for the record
    rules = {j["comment"].split("_wildcards")[0].removeprefix("rule_") for j in jobs}
    wanted = {
        "render_demo",
        "manifest",
        "extract_shard",
        "extract_report",
        "split",
        "train",
        "evaluate",
        "figures",
        "model_card",
    }
    assert wanted <= rules, (wanted - rules, jobs)
    assert all(j["state"] == "COMPLETED" and j["exit_code"] == "0:0" for j in jobs), jobs
    shards = [j for j in jobs if j["comment"].startswith("rule_extract_shard")]
    assert len(shards) == 4
    # The model jobs asked sbatch for the GPU of resources.gpus, and got it; the others none.
    train = next(j for j in jobs if j["comment"] == "rule_train")
    assert "gres/gpu=1" in train["tres"], train
    assert all("gpu" not in j["tres"] for j in shards), shards
    for log in (
        "logs/train/train.log",
        "logs/extract_shard/shard-0000.log",
        "benchmarks/train/train.tsv",
    ):
        assert (workdir / log).stat().st_size > 0


def test_slurm_results_equal_a_local_run(slurm_run, short_run):
    workdir = slurm_run[0]
    for table in ("data/manifest.tsv", "data/split.tsv", "data/extract_report.tsv"):
        a = read_tsv(workdir / "results" / table)
        b = read_tsv(short_run / "results" / table)
        if "path" in a:
            a, b = a.drop(columns="path"), b.drop(columns="path")
        assert a.equals(b), table
    for shard in sorted((short_run / "results/data/shards").glob("*.h5")):
        with h5py.File(shard) as x, h5py.File(workdir / "results/data/shards" / shard.name) as y:
            np.testing.assert_array_equal(x["frames"][:], y["frames"][:])
    for table in ("final/history.tsv", "final/predictions.tsv"):
        a, b = read_tsv(workdir / "results" / table), read_tsv(short_run / "results" / table)
        a = a.drop(columns=[c for c in ("seconds",) if c in a])
        b = b.drop(columns=[c for c in ("seconds",) if c in b])
        assert a.equals(b), table
