"""The tiny workflow submitted to a real single-node SLURM cluster through
profiles/slurm, checked against the controller's records and against a local
run; and the checks that the cluster's harness keeps to its own folder."""

import os
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

import slurm_cluster
from actionrec.tables import read_tsv
from conftest import SHORT_ARGS, short_workflow, snakemake
from slurm_cluster import MARKER, LocalSlurm, Unavailable, existing_slurm, leftovers


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.environ.get("ACTIONREC_SLURM_TEST") != "1":
        pytest.skip(
            "set ACTIONREC_SLURM_TEST=1 to run it: it installs SLURM and munge with apt-get "
            "when missing and starts a single-node cluster of its own in a temporary folder"
        )
    try:
        with (
            LocalSlurm(tmp_path_factory.mktemp("slurm-cluster")) as running,
            pytest.MonkeyPatch.context() as env,
        ):
            # For the snakemake runs, which take the tests' environment.
            for name in ("SLURM_CONF", "PATH"):
                env.setenv(name, running.env[name])
            yield running
    except Unavailable as why:
        pytest.skip(str(why))


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
    out = snakemake(
        workdir,
        "--workflow-profile",
        "profiles/slurm",
        *SHORT_ARGS,
        "gpu.yaml",
        "--slurm-init-seconds-before-status-checks",
        "1",
        # Without accounting sacct cannot answer, and the plugin would wait for it forever.
        "--slurm-status-command",
        "squeue",
        timeout=900,
        slurm=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir, out


@pytest.mark.workflow
@pytest.mark.slurm
def test_every_rule_ran_as_a_completed_slurm_job(cluster, slurm_run):
    workdir, out = slurm_run
    jobs = [
        {k: j.get(k, "") for k in ("JobId", "Comment", "JobState", "ExitCode", "JOB_GRES")}
        for j in cluster.jobs()
    ]
    print("\n".join("|".join(j.values()) for j in jobs))  # the records, for the log
    rules = {j["Comment"].split("_wildcards")[0].removeprefix("rule_") for j in jobs}
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
    assert all(j["JobState"] == "COMPLETED" and j["ExitCode"] == "0:0" for j in jobs), jobs
    shards = [j for j in jobs if j["Comment"].startswith("rule_extract_shard")]
    assert len(shards) == 4
    # The model jobs asked sbatch for the GPU of resources.gpus, and got it; the others none.
    train = next(j for j in jobs if j["Comment"] == "rule_train")
    assert train["JOB_GRES"] == "gpu:1", train
    assert all(j["JOB_GRES"] == "(null)" for j in shards), shards
    for log in (
        "logs/train/train.log",
        "logs/extract_shard/shard-0000.log",
        "benchmarks/train/train.tsv",
    ):
        assert (workdir / log).stat().st_size > 0


@pytest.mark.workflow
@pytest.mark.slurm
def test_slurm_results_equal_a_local_run(slurm_run, request):
    workdir = slurm_run[0]
    # Asked for only now: as an argument, this session fixture would run (about a minute)
    # before the cluster's fixture could skip the test.
    short_run = request.getfixturevalue("short_run")
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


# -- the harness itself: no SLURM, no root, no opt-in needed ---------------------------


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``folder`` with its size and modification time."""
    if not folder.exists():
        return {}
    return {
        str(p): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in [folder, *folder.rglob("*")]
    }


def test_the_configuration_stays_in_its_own_folder(tmp_path):
    etc_before = _tree(Path("/etc/slurm")), _tree(Path("/etc/munge"))
    folder = tmp_path / "cluster"
    local = LocalSlurm(folder)
    written = local.write_config()
    assert etc_before == (_tree(Path("/etc/slurm")), _tree(Path("/etc/munge")))
    assert local.conf in written
    assert all(p.resolve().is_relative_to(folder.resolve()) for p in written), written
    assert {str(p) for p in folder.rglob("*")} <= {str(p) for p in written}
    assert local.env["SLURM_CONF"] == str(local.conf)
    # The client tools a job's srun finds first name this configuration too.
    assert local.env["PATH"].split(os.pathsep)[0] == str(local.bin)
    assert all(f"SLURM_CONF={local.conf} " in p.read_text() for p in local.bin.iterdir())
    conf = local.conf.read_text()
    # Every file the daemons write (state, spool, pid files, logs, the munge socket) is ours.
    paths = re.findall(r"=(?:socket=)?(/[^\s,]+)", conf)
    assert len(paths) >= 9, paths
    assert all(Path(p).is_relative_to(folder.resolve()) for p in paths if p != "/bin/true"), paths
    # No database, hence no password anywhere.
    assert "AccountingStorageType=accounting_storage/none" in conf
    assert "Storage" not in conf.replace("AccountingStorageType", "")
    assert (folder / "etc/munge.key").stat().st_mode & 0o077 == 0


def _process(proc: Path, pid: int, name: str, state: str = "S", slurm_conf: Path | None = None):
    """A stand-in for /proc/<pid>."""
    (proc / str(pid)).mkdir(parents=True)
    (proc / f"{pid}/comm").write_text(name + "\n")
    (proc / f"{pid}/stat").write_text(f"{pid} ({name}) {state} 1 {pid} {pid}\n")
    environ = b"PATH=/usr/bin\0" + (f"SLURM_CONF={slurm_conf}\0".encode() if slurm_conf else b"")
    (proc / f"{pid}/environ").write_bytes(environ)


def test_a_machine_with_its_own_slurm_is_left_alone(tmp_path, monkeypatch):
    own = tmp_path / "etc-slurm/slurm.conf"
    own.parent.mkdir()
    own.write_text("ClusterName=theirs\n")
    proc = tmp_path / "proc"
    _process(proc, 1, "bash")
    _process(proc, 7, "slurmstepd", state="Z")  # ended, not yet reaped
    monkeypatch.setattr(slurm_cluster, "PROC", proc)
    absent = [tmp_path / "absent/slurm.conf"]
    assert existing_slurm({}, absent) is None
    assert str(own) in existing_slurm({}, [own])
    assert str(own) in existing_slurm({"SLURM_CONF": str(own)}, absent)
    _process(proc, 4242, "slurmctld")
    assert "slurmctld 4242" in existing_slurm({}, absent)

    # start() refuses before it installs, writes or starts anything.
    def forbidden(*args, **kwargs):
        raise AssertionError("touched a machine that has a SLURM of its own")

    monkeypatch.setattr(slurm_cluster, "SYSTEM_CONFS", (own,))
    monkeypatch.setattr(slurm_cluster, "install", forbidden)
    monkeypatch.setattr(LocalSlurm, "write_config", forbidden)
    monkeypatch.setattr(slurm_cluster.subprocess, "Popen", forbidden)
    monkeypatch.setattr(slurm_cluster.os, "kill", forbidden)
    folder = tmp_path / "cluster"
    with pytest.raises(Unavailable, match="configuration of its own"), LocalSlurm(folder):
        pass
    assert not folder.exists()


def test_only_this_harness_s_own_leftovers_are_stopped(tmp_path, monkeypatch):
    proc = tmp_path / "proc"
    monkeypatch.setattr(slurm_cluster, "PROC", proc)
    confs = {}
    for name, first_line in (("dead", MARKER), ("live", MARKER), ("theirs", "ClusterName=x")):
        confs[name] = tmp_path / f"{name}/etc/slurm.conf"
        confs[name].parent.mkdir(parents=True)
        confs[name].write_text(first_line + "\n")
    # A killed test run's: its daemons died with it, a job step and its job did not.
    _process(proc, 10, "slurmstepd", slurm_conf=confs["dead"])
    _process(proc, 11, "sleep", slurm_conf=confs["dead"])
    # Another test run's, still running; and a cluster not of this harness.
    _process(proc, 20, "slurmd", slurm_conf=confs["live"])
    _process(proc, 21, "slurmstepd", slurm_conf=confs["live"])
    _process(proc, 30, "slurmstepd", slurm_conf=confs["theirs"])
    _process(proc, 40, "bash")
    assert sorted(leftovers()) == [10, 11]


def test_scontrol_records_are_read_key_by_key():
    line = (
        "JobId=7 JobName=a b JobState=COMPLETED ExitCode=0:0 Socks/Node=* "
        "JOB_GRES=gpu:1   Nodes=vm CPU_IDs=0 GRES= Comment=rule_train  Command=/x y"
    )
    fields = slurm_cluster._fields(line)
    assert fields["JobName"] == "a b"
    assert fields["JOB_GRES"] == "gpu:1"
    assert fields["Comment"] == "rule_train"
    assert fields["Command"] == "/x y"
    assert fields["GRES"] == ""
