"""The workflow run end to end by snakemake, on a tiny demo config."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import h5py
import pytest

from actionrec.tables import read_tsv
from conftest import (
    REPO,
    copy_workflow,
    local_env,
    make_backbone_file,
    snakemake,
    snakemake_cmd,
)

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


# A config change over a finished tiny run, and exactly the jobs a dry run
# schedules for it: each job's params and inputs are what it reads.
# The calibration is fitted for the model file and the evaluation's views; the reliability
# diagram is drawn from metrics.json.
AFTER_EVALUATION = {"calibrate": 1, "evaluate": 1, "reliability": 1, "figures": 1}
AFTER_TRAINING = {"train": 1, **AFTER_EVALUATION, "model_card": 1, "explain": 1}
RERUNS = [
    # One more grid rate: its point, the gathered grid, the choice and the model
    # card that reports it. What uses the rate is decided once the choice is made
    # (see the real run below).
    (
        "search: {grid: [0.001, 0.003, 1.0e-6]}",
        {"search_grid_point": 1, "search_grid": 1, "best_lr": 1, "model_card": 1},
    ),
    ("search: {bayes: {n_calls: 3}}", {"search_bayes": 1, "best_lr": 1, "model_card": 1}),
    # One more backbone: its comparison (one job per head) and the summary.
    (
        "compare: {backbones: [smallcnn, mobilenetv3small]}",
        {"compare_backbone": 2, "compare_summary": 1},
    ),
    # Settings of the final training alone (the trials and comparisons set their own).
    ("train: {max_epochs: 3}", AFTER_TRAINING),
    ("train: {finetune: {lr: 0.0001}}", AFTER_TRAINING),
    ("evaluate: {views: 1}", {**AFTER_EVALUATION, "model_card": 1, "explain": 1}),
]


@pytest.fixture(scope="module")
def rerun_dry_runs(tiny_run, tmp_path_factory):
    """A dry run of every change in RERUNS over the finished tiny run, two at a time."""
    from concurrent.futures import ThreadPoolExecutor

    folder = tmp_path_factory.mktemp("changes")

    def dry_run(k):
        change = folder / f"change-{k}.yaml"
        change.write_text(RERUNS[k][0] + "\n")
        return snakemake(tiny_run, "-n", "--configfile", "tiny.yaml", str(change))

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(dry_run, range(len(RERUNS))))


@pytest.mark.parametrize("k", range(len(RERUNS)), ids=[c for c, _ in RERUNS])
def test_a_change_reruns_exactly_what_reads_it(rerun_dry_runs, k):
    out = rerun_dry_runs[k]
    assert out.returncode == 0, out.stderr[-2000:]
    assert jobs_run(out) == {**RERUNS[k][1], "all": 1}


def test_an_edit_to_a_module_reruns_the_jobs_that_import_it(tiny_run):
    module = tiny_run / "scripts/actionrec/model_card.py"
    text, stat = module.read_text(), module.stat()
    module.write_text(text + "\n# an edit\n")
    try:
        out = snakemake(tiny_run, "-n", "--configfile", "tiny.yaml")
    finally:
        module.write_text(text)
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert out.returncode == 0, out.stderr[-2000:]
    assert jobs_run(out) == {"model_card": 1, "all": 1}


def ran(out: subprocess.CompletedProcess) -> list[str]:
    """The rules of the jobs a real run ran, in order."""
    return re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):$", out.stdout + out.stderr, re.M)


def test_what_uses_the_rate_reruns_only_when_the_choice_moves(tiny_run, tmp_path):
    work = shutil.copytree(tiny_run, tmp_path / "run", symlinks=True)
    chosen = json.loads((work / "results/search/best_lr.json").read_text())
    # A rate far too small to learn in a search's epoch: the choice stays.
    (work / "worse.yaml").write_text("search: {grid: [0.001, 0.003, 1.0e-7]}\n")
    out = snakemake(work, "results/final/model.keras", "--configfile", "tiny.yaml", "worse.yaml")
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((work / "results/search/best_lr.json").read_text())["lr"] == chosen["lr"]
    assert sorted(ran(out)) == ["best_lr", "search_grid", "search_grid_point"]
    # The grid alone: the choice moves to it, and what uses the rate reruns.
    (work / "grid.yaml").write_text("search: {methods: [grid]}\n")
    args = ("results/final/model.keras", "--configfile", "tiny.yaml", "worse.yaml", "grid.yaml")
    out = snakemake(work, *args)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((work / "results/search/best_lr.json").read_text())["search"] == "grid"
    assert sorted(ran(out)) == ["best_lr", "chosen_lr", "train"]
    out = snakemake(work, "-n", *args)
    assert "Nothing to be done" in out.stdout + out.stderr


def test_a_backbone_file_of_a_generic_name_is_named_by_its_folder():
    from actionrec.catalog import backbone_key

    assert backbone_key("models/i3d-kinetics400/backbone.keras") == "file-i3d-kinetics400"
    assert backbone_key("models/efficientnet-lite0/model.keras") == "file-efficientnet-lite0"
    assert backbone_key("nets/lite0.keras") == "file-lite0"
    assert backbone_key("backbone.keras") == "file-backbone"
    assert backbone_key("efficientnetb0") == "efficientnetb0"


def test_a_backbone_file_replaced_with_an_older_time_reruns_its_features(tiny_run):
    make_backbone_file(tiny_run / "net.keras")
    (tiny_run / "file.yaml").write_text(
        "train: {backbone: net.keras, lr: 0.001}\nsearch: {methods: []}\ncompare: {backbones: []}\n"
    )
    args = ("results/features/file-net/shard-0000.h5", "--configfile", "tiny.yaml", "file.yaml")
    out = snakemake(tiny_run, *args)
    assert out.returncode == 0, out.stderr[-2000:]
    dry = snakemake(tiny_run, "-n", *args)
    assert "Nothing to be done" in dry.stdout + dry.stderr
    # cp -p, rsync -a or tar x of another network: an older modification time.
    stat = (tiny_run / "net.keras").stat()
    make_backbone_file(tiny_run / "net.keras", seed=1)
    os.utime(tiny_run / "net.keras", ns=(stat.st_atime_ns, stat.st_mtime_ns - 10**9))
    out = snakemake(tiny_run, "-n", *args)
    assert out.returncode == 0, out.stderr[-2000:]
    assert jobs_run(out) == {"features": 1}


def tool(name: str) -> str:
    """A command-line tool of the test environment (beside snakemake), else PATH's."""
    beside = Path(snakemake_cmd()[0]).with_name(name)
    return str(beside) if beside.exists() else shutil.which(name) or name


def test_lint_and_format_are_clean():
    lint = subprocess.run(
        [*snakemake_cmd(), "--lint"], cwd=REPO, capture_output=True, text=True, env=local_env()
    )
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
    assert (summary["flops_per_clip"] > 0).all() and (summary["parameters"] > 0).all()
    assert summary["test_accuracy"].between(0, 1).all()
    metrics = json.loads((compare / "smallcnn/average/metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["split_method"] == "group"
    assert metrics["peak_memory_mb"] > 0 and metrics["inference_clips_per_second"] > 0
    assert "says nothing about the original claim" in (compare / "summary.md").read_text()
    for name in ("accuracy_per_epoch.png", "accuracy_vs_time.png"):
        assert (compare / "figures" / name).stat().st_size > 0
    assert not (compare / "work").exists()


# Lines TensorFlow prints on every start (CPU features, oneDNN, no CUDA driver).
STARTUP_LINES = ("oneDNN custom operations", "cpu_feature_guard", "cuInit", "absl::InitializeLog")


def test_the_console_and_logs_hold_no_start_up_noise(tiny_run):
    texts = {"console": (tiny_run / "console.txt").read_text()}
    texts.update({str(p): p.read_text() for p in (tiny_run / "logs").rglob("*.log")})
    assert any("logs/train/train.log" in name for name in texts)
    noisy = {name: line for name, text in texts.items() for line in STARTUP_LINES if line in text}
    assert not noisy, noisy


def test_imagenet_weights_are_fetched_once_per_backbone_for_every_job(tmp_path):
    work = copy_workflow(tmp_path)
    shutil.copy(REPO / "tests/tiny.yaml", work / "tiny.yaml")
    (work / "imagenet.yaml").write_text(
        "train: {backbone: efficientnetb0, weights: imagenet}\n"
        "compare: {backbones: [efficientnetb0, resnet50], heads: [average, gru]}\n"
    )
    out = snakemake(work, "-n", "-p", "--configfile", "tiny.yaml", "imagenet.yaml", timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    jobs = jobs_run(out)
    assert jobs["fetch_weights"] == 2 and jobs["compare_backbone"] == 4
    # Every model job reads the fetched file: it is among their inputs.
    blocks = (out.stdout + out.stderr).split("\n\n")
    readers = [b for b in blocks if re.search(r"rule (train|compare_backbone):", b)]
    assert len(readers) == 5
    for block in readers:
        assert re.search(r"input: .*resources/weights/(efficientnetb0|resnet50)-imagenet", block)
