"""The tiny workflow submitted to a real single-node SLURM cluster with the command
line profiles/slurm documents, checked against the controller's records (every
rule that runs a model got the config's GPU in the GPU partition, the others
none) and against a local run; the rules' resources and the profile checked
without SLURM; and the checks that the cluster's harness keeps to its own folder."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

import slurm_cluster
from actionrec.tables import read_tsv
from conftest import REPO, short_workflow
from slurm_cluster import MARKER, LocalSlurm, Unavailable, existing_slurm, leftovers

PROFILE = "profiles/slurm"
# Test-only flags beside the documented command: the private cluster has no
# accounting, so sacct cannot answer and the plugin would wait for it forever;
# and a first status check after 1 s instead of the profile's 20. And snakemake is
# started through slurm_snakemake.py, which keeps the plugin's status checks 2 s apart
# (it waits 10 s longer after each check that finds no job done: minutes here).
TEST_ONLY = ("--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1")
# Its comparison with a local run asks for the short run only when the cluster runs:
# the test scheduler (conftest.py) still sends this module to the worker that makes it.
SHARED_RUN = "short_run"
# The short config's rules (rule all), and the two that run a model on request.
# Export (minutes of conversions) is left out: its resources are checked in the rules below.
TARGETS = ("all", "results/predict/clips.tsv")


def documented_command() -> list[str]:
    """The cluster command line that profiles/slurm/config.yaml tells a user to type."""
    text = (REPO / PROFILE / "config.yaml").read_text()
    lines = [line.lstrip("#").strip() for line in text.splitlines() if "--profile" in line]
    assert len(lines) == 1, lines
    return shlex.split(lines[0])


def rule_blocks() -> dict[str, str]:
    """Each rule's text in rules/*.smk, by name."""
    text = "".join(p.read_text() for p in sorted((REPO / "rules").glob("*.smk")))
    parts = re.split(r"^(?:rule|checkpoint) (\w+):\n", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def model_rules() -> set[str]:
    """The rules a cluster runs as jobs that run a model: those whose conda env
    holds TensorFlow, local rules (downloads where Snakemake runs) left out."""
    text = "".join(p.read_text() for p in (REPO / "rules").glob("*.smk"))
    local = {
        name
        for block in re.findall(r"^localrules:((?:\n +\w+,?)+)", text, re.M)
        for name in re.findall(r"\w+", block)
    }
    tensorflow = {
        f"envs/{p.name}"
        for p in (REPO / "envs").glob("*.yaml")
        if any(d.startswith("tensorflow=") for d in yaml.safe_load(p.read_text())["dependencies"])
    }
    found = set()
    for rule, block in rule_blocks().items():
        env = re.search(r'conda:\n\s+"\.\./(envs/[\w.]+)"', block).group(1)
        if env in tensorflow and rule not in local:
            found.add(rule)
    return found


def ucf101_resources() -> dict:
    """What config/ucf101.yaml, the documented cluster config, asks for a model job."""
    return yaml.safe_load((REPO / "config/ucf101.yaml").read_text())["resources"]


def partitions(workdir: Path = REPO) -> dict[str, dict]:
    return yaml.safe_load((workdir / PROFILE / "partitions.yaml").read_text())["partitions"]


def test_every_rule_that_runs_a_model_asks_for_the_configs_resources():
    models = model_rules()
    assert {"train", "evaluate", "predict", "export", "explain", "features"} <= models, models
    for rule, block in rule_blocks().items():
        asks = [
            f'{key}=config["resources"]["{value}"]' in block
            for key, value in (("gpu", "gpus"), ("mem_mb", "mem_mb"), ("runtime", "runtime"))
        ]
        if rule in models:
            assert all(asks), f"rule {rule} runs a model but not on the config's resources"
        else:
            assert not asks[0], f"rule {rule} runs no model but asks for the config's GPUs"


def test_the_profile_documents_the_ucf101_command_and_feeds_every_model_job():
    command = documented_command()
    assert command[:3] == ["snakemake", "--profile", PROFILE], command
    assert command[command.index("--configfile") + 1] == "config/ucf101.yaml", command
    assert ucf101_resources()["gpus"] >= 1
    profile = yaml.safe_load((REPO / PROFILE / "config.yaml").read_text())
    assert model_rules() <= set(profile["set-threads"]) <= set(profile["set-resources"])
    # The plugin chooses a partition by GPUs from this file: it names one with and one without.
    assert profile["slurm-partition-config"] == "partitions.yaml"
    gpus = {name: limits.get("max_gpu", 0) for name, limits in partitions().items()}
    assert min(gpus.values()) == 0 and max(gpus.values()) >= ucf101_resources()["gpus"], gpus


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


def prepared(folder: Path, cluster: LocalSlurm) -> Path:
    workdir = short_workflow(folder)
    # The profile as shipped, but asking for no more CPUs than this node has.
    profile = workdir / PROFILE / "config.yaml"
    spec = yaml.safe_load(profile.read_text())
    cpus = os.cpu_count()
    for resources in spec["set-resources"].values():
        if "cpus_per_task" in resources:
            resources["cpus_per_task"] = min(resources["cpus_per_task"], cpus)
    spec["set-threads"] = {rule: min(n, cpus) for rule, n in spec["set-threads"].items()}
    profile.write_text(yaml.safe_dump(spec))
    # The partitions the profile's partitions.yaml names, each on the one node (it
    # has a fake GPU): the plugin chooses among them by what a job asks for.
    for name in partitions(workdir):
        subprocess.run(
            ["scontrol", "create", f"PartitionName={name}", f"Nodes={cluster.host}", "State=UP"],
            env=cluster.env,
            check=True,
            capture_output=True,
        )
    # In place of config/ucf101.yaml: its resources, the memory bounded by this node.
    resources = ucf101_resources()
    resources["mem_mb"] = min(resources["mem_mb"], 4000)
    (workdir / "ucf101-resources.yaml").write_text(yaml.safe_dump({"resources": resources}))
    # Two videos to classify: results/predict/clips.tsv.
    from actionrec.synthetic import render_dataset

    render_dataset(
        workdir / "predict/clips",
        classes=["Grow", "Checker"],
        groups=1,
        clips_per_group=1,
        min_frames=30,
        max_frames=40,
        width=96,
        height=72,
        seed=1,
        workers=1,
    )
    return workdir


def cluster_command() -> list[str]:
    """The documented command with the test's configs in place of config/ucf101.yaml."""
    command = documented_command()
    at = command.index("config/ucf101.yaml")
    configs = ["tiny.yaml", "short.yaml", "ucf101-resources.yaml"]
    snakemake = [sys.executable, str(Path(__file__).with_name("slurm_snakemake.py"))]
    return [*snakemake, *TARGETS, *command[1:at], *configs, *command[at + 1 :], *TEST_ONLY]


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    workdir = prepared(tmp_path_factory.mktemp("slurm"), cluster)
    out = subprocess.run(
        ["timeout", "-k", "10", "1800", *cluster_command()],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir, out


def minutes(limit: str) -> int:
    """scontrol's TimeLimit, [days-]hours:minutes:seconds, in minutes."""
    days, _, clock = limit.rpartition("-")
    hours, mins, _ = (int(x) for x in clock.split(":"))
    return int(days or 0) * 1440 + hours * 60 + mins


@pytest.mark.workflow
@pytest.mark.slurm
def test_every_rule_ran_as_a_completed_slurm_job(cluster, slurm_run):
    workdir, out = slurm_run
    keys = ("JobId", "Comment", "JobState", "ExitCode", "JOB_GRES", "Partition", "TimeLimit")
    jobs = [{k: j.get(k, "") for k in keys} for j in cluster.jobs()]
    print("\n".join("|".join(j.values()) for j in jobs))  # the records, for the log
    for job in jobs:
        job["rule"] = job["Comment"].split("_wildcards")[0].removeprefix("rule_")
    rules = {j["rule"] for j in jobs}
    wanted = {
        "render_demo",
        "manifest",
        "extract_shard",
        "extract_report",
        "split",
        "audit_split",
        "train",
        "evaluate",
        "explain",
        "figures",
        "model_card",
        "predict",
    }
    assert wanted <= rules, (wanted - rules, jobs)
    assert all(j["JobState"] == "COMPLETED" and j["ExitCode"] == "0:0" for j in jobs), jobs
    shards = [j for j in jobs if j["rule"] == "extract_shard"]
    assert len(shards) == 4
    # Every job that runs a model asked sbatch for config/ucf101.yaml's GPUs and time
    # and got them, in a partition with GPUs; every other job no GPU, in one without.
    asked = ucf101_resources()
    with_gpus = {name for name, limits in partitions(workdir).items() if limits.get("max_gpu")}
    without = set(partitions(workdir)) - with_gpus
    models = model_rules()
    for job in jobs:
        if job["rule"] in models:
            assert job["JOB_GRES"] == f"gpu:{asked['gpus']}", job
            assert job["Partition"] in with_gpus, job
            assert minutes(job["TimeLimit"]) == asked["runtime"], job
        else:
            assert job["JOB_GRES"] == "(null)", job
            assert job["Partition"] in without, job
    for log in (
        "logs/train/train.log",
        "logs/evaluate/evaluate.log",
        "logs/extract_shard/shard-0000.log",
        "benchmarks/train/train.tsv",
    ):
        assert (workdir / log).stat().st_size > 0
    assert read_tsv(workdir / "results/predict/clips.tsv")["status"].tolist() == ["ok", "ok"]


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
