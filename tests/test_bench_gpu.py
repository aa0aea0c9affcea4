"""Seconds-long CPU runs of the benchmarks that read the tiny workflow run's data:
bench/gpu.py, so that the GPU check cannot rot before a GPU is lent, and
bench/input_pipeline.py. Their numbers belong to bench/, not here. (Kept apart from
test_bench.py, whose tests need no workflow run: a module that uses the tiny run
goes whole to the worker that made it.)"""

import re
import subprocess
import sys

from test_bench import bench

from conftest import REPO, make_clip_backbone_file

TINY = ("--backbone", "smallcnn", "--frames", "4", "--size", "32", "--batch", "2", "--steps", "2")
NUMBER = r"([0-9]+\.[0-9]+)"


def gpu_bench(*args: str) -> subprocess.CompletedProcess:
    cmd = ["timeout", "-k", "10", "900", sys.executable, str(REPO / "bench" / "gpu.py")]
    return subprocess.run([*cmd, *TINY, *args], capture_output=True, text=True)


def rows(stdout: str, mode: str, backbone: str) -> list[float]:
    """The three throughputs of a table row; fails when the row is missing."""
    pattern = rf"^\| {re.escape(mode)} +\| {re.escape(backbone)} +\| \w+ +" + (
        rf"\| +{NUMBER} " * 3
    )
    found = re.search(pattern, stdout, re.MULTILINE)
    assert found, f"no row {mode} / {backbone} in:\n{stdout}"
    return [float(v) for v in found.groups()]


def test_the_gpu_benchmark_runs_both_backbones_and_the_loader(tiny_run, tmp_path):
    clip = make_clip_backbone_file(tmp_path / "clip.keras")
    data = tiny_run / "results/data"
    out = gpu_bench(
        *("--modes", "mixed+xla", "--clip-backbone", str(clip)),
        *("--data", str(data), "--loader-batches", "3", "--augment"),
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "device CPU" in out.stdout and "TensorFlow" in out.stdout
    for backbone in ("smallcnn", f"{tmp_path.name}/clip.keras"):
        assert all(v > 0 for v in rows(out.stdout, "mixed+xla", backbone))
        # Mixed precision reaches a backbone file's layers too.
        compute = rf"^\| mixed\+xla +\| {re.escape(backbone)} +\| float16 "
        assert re.search(compute, out.stdout, re.MULTILINE), out.stdout
    loader = re.search(rf"^loader: {NUMBER} clips/s", out.stdout, re.MULTILINE)
    assert loader and float(loader.group(1)) > 0 and "augmented (" in out.stdout, out.stdout
    ratio = re.search(rf"^  mixed\+xla +smallcnn +{NUMBER}  (yes|NO)$", out.stdout, re.MULTILINE)
    assert ratio and float(ratio.group(1)) > 0, out.stdout


def test_the_input_pipeline_benchmark_runs(tiny_run):
    # The small backbone: EfficientNetB0's build and first trace take most of a minute on CPU.
    data = ("--data", str(tiny_run / "results/data"))
    out = bench("input_pipeline.py", *data, "--steps", "2", "--backbone", "smallcnn")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "tf.data from HDF5 shards" in out.stdout and "OpenCV on-the-fly" in out.stdout
    assert "training consumes (smallcnn)" in out.stdout and "pipeline / training" in out.stdout
