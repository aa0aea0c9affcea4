"""The workflow run end to end by snakemake, on a tiny demo config."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import h5py
import pytest

from actionrec.tables import read_tsv
from conftest import REPO, copy_workflow, snakemake, snakemake_cmd

pytestmark = pytest.mark.workflow


def test_demo_to_split(tiny_run):
    data = tiny_run / "results/data"
    manifest = read_tsv(data / "manifest.tsv")
    assert len(manifest) == 18 and manifest["class"].nunique() == 3
    shards = sorted((data / "shards").glob("shard-*.h5"))
    assert [s.name for s in shards] == [f"shard-{i:04d}.h5" for i in range(4)]
    with h5py.File(shards[0]) as f:
        assert f["frames"].shape == (5, 4 * 2, 32, 32, 3)
    report = read_tsv(data / "extract_report.tsv")
    assert (report["status"] == "ok").all() and len(report) == 18
    split = read_tsv(data / "split.tsv")
    assert len(split) == 18 and set(split["split"]) == {"train", "val", "test"}
    assert split.groupby("group")["split"].nunique().max() == 1
    summary = json.loads((data / "leakage.json").read_text())
    assert summary["method"] == "group" and summary["leakage"] == {"val": 0.0, "test": 0.0}
    for log in ("render_demo/render_demo.log", "extract_shard/shard-0003.log", "split/split.log"):
        assert (tiny_run / "logs" / log).stat().st_size > 0


def test_training_is_part_of_the_run(tiny_run):
    history = read_tsv(tiny_run / "results/final/history.tsv")
    assert history["epoch"].tolist() == [1, 2]
    assert (tiny_run / "results/final/model.keras").exists()
    log = (tiny_run / "logs/train/train.log").read_text()
    assert "Epoch 2/2" in log and "saved results/final/model.keras" in log
    assert not (tiny_run / "results/final/work").exists()


def test_rerun_does_nothing(tiny_run):
    out = snakemake(tiny_run, "--configfile", "tiny.yaml", "-n")
    assert out.returncode == 0 and "Nothing to be done" in out.stdout + out.stderr


def test_one_shard_reruns_alone(tiny_run):
    shards = sorted((tiny_run / "results/data/shards").glob("shard-*.h5"))
    before = {s.name: s.stat().st_mtime_ns for s in shards}
    target = "results/data/shards/shard-0002.h5"
    out = snakemake(tiny_run, target, "--forcerun", "extract_shard", "--configfile", "tiny.yaml")
    assert out.returncode == 0, out.stderr[-2000:]
    changed = {s.name for s in shards if s.stat().st_mtime_ns != before[s.name]}
    assert changed == {"shard-0002.h5"}
    # Leave the run up to date for the other tests that share it.
    assert snakemake(tiny_run, "--touch", "--configfile", "tiny.yaml").returncode == 0


def jobs_run(out: subprocess.CompletedProcess) -> dict[str, int]:
    """Snakemake's job counts by rule, from its "Job stats" table."""
    stats = (out.stdout + out.stderr).split("Job stats:")[1]
    return {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", stats, re.M) if k != "total"}


def test_search_chooses_the_rate_that_training_uses(tiny_run):
    search = tiny_run / "results/search"
    best = json.loads((search / "best_lr.json").read_text())
    bayes, grid = read_tsv(search / "bayes.tsv"), read_tsv(search / "grid.tsv")
    assert len(bayes) == 2 and grid["lr"].tolist() == [0.001, 0.003]
    table = bayes if best["search"] == "bayes" else grid
    assert best["val_loss"] == table["val_loss"].min()
    history = read_tsv(tiny_run / "results/final/history.tsv")
    assert history["learning_rate"].to_numpy() == pytest.approx(best["lr"], rel=1e-6)
    assert f"lr auto: {best['lr']:g}" in (tiny_run / "logs/train/train.log").read_text()
    for name in ("bayes_convergence.png", "grid.png"):
        assert (search / "figures" / name).stat().st_size > 0


def test_one_grid_point_runs_alone(tiny_run):
    target = "results/search/grid/lr-0.003.json"
    out = snakemake(
        tiny_run, target, "--forcerun", "search_grid_point", "--configfile", "tiny.yaml"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert jobs_run(out) == {"search_grid_point": 1}
    assert snakemake(tiny_run, "--touch", "--configfile", "tiny.yaml").returncode == 0


@pytest.mark.parametrize(
    "change",
    ["split: {method: random}", "split: {fractions: {train: 0.5, val: 0.25, test: 0.25}}"],
    ids=["method", "fractions"],
)
def test_changing_the_split_reruns_only_the_split_and_what_follows(tiny_run, change, tmp_path):
    (tmp_path / "change.yaml").write_text(change + "\n")
    out = snakemake(tiny_run, "-n", "--configfile", "tiny.yaml", str(tmp_path / "change.yaml"))
    assert out.returncode == 0, out.stderr[-2000:]
    ran = set(jobs_run(out))
    assert {"split", "train", "evaluate"} <= ran
    assert not ran & {"render_demo", "manifest", "extract_shard", "extract_report"}, ran


BAD_CONFIGS = [
    ("extract: {size: -4}", "-4 is less than the minimum of 8"),
    ("extract: {frames: many}", "'many' is not of type 'integer'"),
    ("split: {method: leaky}", "'leaky' is not one of"),
    ("split: {fractions: {train: 0.7, val: 0.2, test: 0.2}}", "sum to 1"),
    ("data: {root: /no/such/folder}", "/no/such/folder"),
    ("colour: 1", "Additional properties are not allowed ('colour' was unexpected)"),
    ("extract: {size: 0}", "0 is less than the minimum of 8"),
    ("train: {backbone: vgg16}", "'vgg16' is not one of ['efficientnetb0'"),
    ("train: {head: lstm}", "'lstm' is not one of ['average', 'temporal_conv'"),
    ("train: {lr: fast}", "'fast' is not valid under any of the given schemas"),
    ("train: {augment: {blur: 1}}", "('blur' was unexpected)"),
    ("search: {bayes: {n_calls: 2, n_initial_points: 3}}", "n_initial_points (3) exceeds"),
    ("search: {low: 0.1, high: 0.01}", "search.low (0.1) must be below search.high"),
    ("evaluate: {views: 3}", "evaluate.views (3) exceeds extract.frames_per_segment (1)"),
    ("evaluate: {crops: 2}", "2 is not one of [1, 3]"),
    ("train: {finetune: {schedule: step}}", "'step' is not one of ['cosine', 'constant']"),
    ("train: {finetune: {accumulate: 0}}", "0 is less than the minimum of 1"),
]


@pytest.fixture(scope="module")
def bad_config_runs(tmp_path_factory):
    """Every bad config dry-run at once (each is a separate snakemake start-up)."""
    from concurrent.futures import ThreadPoolExecutor

    def run(k):
        workdir = copy_workflow(tmp_path_factory.mktemp(f"bad{k}"))
        (workdir / "bad.yaml").write_text(BAD_CONFIGS[k][0] + "\n")
        return workdir, snakemake(workdir, "-n", "--configfile", "bad.yaml", timeout=120)

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(run, range(len(BAD_CONFIGS))))


@pytest.mark.parametrize("k", range(len(BAD_CONFIGS)), ids=[b for b, _ in BAD_CONFIGS])
def test_bad_config_stops_before_any_job(bad_config_runs, k):
    workdir, out = bad_config_runs[k]
    assert out.returncode != 0
    assert BAD_CONFIGS[k][1] in out.stdout + out.stderr
    assert not (workdir / "results").exists()


def tool(name: str) -> str:
    """A command-line tool of the test environment (beside snakemake), else PATH's."""
    beside = Path(snakemake_cmd()[0]).with_name(name)
    return str(beside) if beside.exists() else shutil.which(name) or name


def test_lint_and_format_are_clean():
    lint = subprocess.run([*snakemake_cmd(), "--lint"], cwd=REPO, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    for cmd in (
        ["snakefmt", "--check", "."],
        ["ruff", "check", "."],
        # The formatter without exceptions: no skip comment holds code in shape.
        ["ruff", "format", "--check", "."],
    ):
        out = subprocess.run([tool(cmd[0]), *cmd[1:]], cwd=REPO, capture_output=True, text=True)
        assert out.returncode == 0, (cmd, out.stdout + out.stderr)
    marker = "# fmt" + ": skip"
    skips = [p for p in REPO.glob("**/*.py") if ".venv" not in p.parts and marker in p.read_text()]
    assert not skips, skips


def test_backbone_comparison_is_part_of_the_run(tiny_run):
    compare = tiny_run / "results/compare"
    summary = read_tsv(compare / "summary.tsv")
    assert summary["backbone"].tolist() == ["smallcnn"] * 2
    assert summary["head"].tolist() == ["average", "gru"]
    assert (compare / "smallcnn/gru/metrics.json").exists()
    assert (summary["flops_per_frame"] > 0).all() and (summary["parameters"] > 0).all()
    assert summary["test_accuracy"].between(0, 1).all()
    metrics = json.loads((compare / "smallcnn/average/metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["split_method"] == "group"
    assert metrics["peak_memory_mb"] > 0 and metrics["inference_clips_per_second"] > 0
    assert "says nothing about the original claim" in (compare / "summary.md").read_text()
    for name in ("accuracy_per_epoch.png", "accuracy_vs_time.png"):
        assert (compare / "figures" / name).stat().st_size > 0
    assert not (compare / "work").exists()
