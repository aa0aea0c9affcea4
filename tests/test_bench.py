"""Seconds-long runs of the benchmarks on tiny data, so that they cannot rot;
their numbers belong to bench/, not here."""

import subprocess
import sys

from conftest import REPO, make_backbone_file, make_clip_backbone_file


def on_tiny_clips(script: str, tiny_data, tmp_path, *args: str) -> subprocess.CompletedProcess:
    """A benchmark on real clips run on the tiny demo's videos, 4 frames of
    32 px, with a small backbone file."""
    videos = tiny_data["split"].parent / "videos"
    backbone = make_backbone_file(tmp_path / "small.keras")
    common = ("--clips", str(videos), "--backbone", str(backbone), "--size", "32", "--frames", "4")
    return bench(script, *common, *args)


def work_and_table(tmp_path) -> tuple[str, ...]:
    """A benchmark's cache folder and markdown table under ``tmp_path``."""
    return ("--work", str(tmp_path / "work"), "--out", str(tmp_path / "table.md"))


def test_the_recipe_benchmark_runs_every_stage(tiny_data, tmp_path):
    out = on_tiny_clips(
        "recipe.py",
        tiny_data,
        tmp_path,
        *("--per-segment", "2", "--seeds", "1", "--finetune-epochs", "1", "--frozen-epochs", "2"),
        *work_and_table(tmp_path),
        *("--train", "finetune.accumulate=2"),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    table = (tmp_path / "table.md").read_text()
    for column in ("logistic regression", "frozen + temporal sampling", "K views x 3 crops"):
        assert column in table
    assert "Fine-tuning, every epoch" in table and "'accumulate': 2" in out.stdout
    # Fine-tuning's epoch follows the frozen stage's 2 (--frozen-epochs; 30 by default).
    curve = table.split("Fine-tuning, every epoch")[1].splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in curve if "|" in line]
    assert [row[1] for row in cells if row[0] == "0"] == ["3"], curve
    wrong = table.split("Wrong test clips by source video")[1].split("Seconds per stage")[0]
    assert "| logistic regression" in wrong and "| the recipe" in wrong
    mean = next(line for line in table.splitlines() if line.startswith("| mean"))
    accuracies = [float(cell) for cell in mean.strip("|").split("|")[2:]]
    assert len(accuracies) == 8 and all(0 <= a <= 1 for a in accuracies)


def bench(script: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = ["timeout", "-k", "10", str(timeout), sys.executable, str(REPO / "bench" / script)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True)


def test_the_extraction_benchmark_runs(tiny_data):
    videos = tiny_data["split"].parent / "videos"
    out = bench(
        "extract_throughput.py",
        "--clips",
        str(videos),
        "--frames",
        "4",
        "--size",
        "32",
        "--repeat",
        "1",
        "--workers",
        "2",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "decode_clip (1 thread)" in out.stdout and "shards on 2 workers" in out.stdout


def test_the_groups_benchmark_runs(tiny_data, tmp_path):
    out = on_tiny_clips(
        "groups.py",
        tiny_data,
        tmp_path,
        *("--seeds", "2", "--thresholds", "0.1", "0.3"),
        *work_and_table(tmp_path),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    table = (tmp_path / "table.md").read_text()
    assert "adjusted Rand index" in table and "| mean" in table
    assert "estimate (shipped curve)" in table and "Logistic curve fitted here" in table
    # The copy hides the groups: no clip name carries one.
    names = [p.stem for p in (tmp_path / "work/videos").rglob("*.avi")]
    assert len(names) == 36 and not any("_g" in name for name in names)


def test_the_heads_benchmark_runs():
    out = bench(
        "heads.py",
        "--train-scenes",
        "1",
        "--test-scenes",
        "1",
        "--pretrain-epochs",
        "1",
        "--epochs",
        "1",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line.split() for line in out.stdout.splitlines() if "frozen backbone" in line]
    assert len(rows) == 5 and all(0 <= float(row[3]) <= 1 for row in rows)


def test_the_transfer_benchmark_runs(tiny_data, tmp_path):
    out = on_tiny_clips(
        "transfer.py",
        tiny_data,
        tmp_path,
        *("--seeds", "1", "--epochs", "1", "--frozen-epochs", "2"),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "logistic regr." in out.stdout and "\nmean " in out.stdout


def test_the_cached_heads_benchmark_runs(tmp_path):
    out = bench(
        "cached_heads.py",
        *("--train-clips", "30", "--frames", "2", "--classes", "3", "--batches", "2", "8"),
        *("--epochs", "1", "--repeats", "1", "--work", str(tmp_path / "work")),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    table = out.stdout.split("\n\n")[-1]
    assert "streamed from HDF5" in table and table.count("in memory") == 2


def test_the_clip_backbones_benchmark_runs(tiny_data, tmp_path):
    clip_backbone = make_clip_backbone_file(tmp_path / "clip.keras")
    out = on_tiny_clips(
        "clip_backbones.py",
        tiny_data,
        tmp_path,
        *("--i3d", str(clip_backbone), "--i3d-frames", "6", "--seeds", "1", "--epochs", "1"),
        *("--work", str(tmp_path / "work")),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # Two geometries extracted, one split for both backbones' heads.
    assert sorted(p.parent.name for p in (tmp_path / "work").glob("t*/shard-0000.h5")) == [
        "t4-s32",
        "t6-s32",
    ]
    mean = next(line for line in out.stdout.splitlines() if line.startswith("| mean"))
    accuracies = [float(cell) for cell in mean.strip("|").split("|")[2:]]
    assert len(accuracies) == 4 and all(0 <= a <= 1 for a in accuracies)
    backbones = out.stdout.split("\nBackbones\n")[1]
    i3d = next(line for line in backbones.splitlines() if line.startswith("| I3D"))
    cells = [cell.strip() for cell in i3d.strip("|").split("|")]
    assert cells[2:5] == ["6", "32", "3"] and "video-pretrained" in cells[-1]  # T, S, T'


def test_the_openset_benchmark_runs(tiny_data, tmp_path):
    from actionrec.synthetic import render_dataset

    other = tmp_path / "other"
    small = {"min_frames": 6, "max_frames": 12, "width": 64, "height": 48}
    render_dataset(other, seed=1, classes=["Bounce", "Swing"], groups=2, clips_per_group=1, **small)
    out = on_tiny_clips(
        "openset.py",
        tiny_data,
        tmp_path,
        *("--unknown", str(other), "--i3d", str(make_clip_backbone_file(tmp_path / "clip.keras"))),
        *("--i3d-frames", "4", "--seeds", "2", "--limit", "4"),
        *work_and_table(tmp_path),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    table = (tmp_path / "table.md").read_text()
    for needed in ("ECE before", "probability AUROC", "distance FPR95", "| Lite0", "| I3D"):
        assert needed in table
