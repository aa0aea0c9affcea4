"""actionrec as a package: a wheel that works installed anywhere, with only a
model file and its class names at hand."""

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from actionrec import __version__
from actionrec.predict import find_videos
from actionrec.settings import defaults
from conftest import REPO

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project built as a wheel, as pip builds it for a user."""
    out, source = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("source")
    # From a copy: a build leaves its folders beside the project, not in the checkout.
    shutil.copy2(REPO / "pyproject.toml", source)
    for folder in ("scripts", "config"):
        shutil.copytree(REPO / folder, source / folder, symlinks=True)
    # Without build isolation where setuptools is at hand: no download.
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        *isolation,
        "-w",
        str(out),
        str(source),
    ]
    built = subprocess.run(["timeout", "-k", "10", "300", *cmd], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (path,) = out.glob("actionrec-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The wheel installed into a folder of its own, far from the checkout."""
    target = tmp_path_factory.mktemp("site")
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target)]
    out = subprocess.run([*cmd, str(wheel)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return target


def run_installed(installed: Path, cwd: Path, *args: str, timeout: int = 300):
    """``python -m actionrec ARGS`` from ``cwd`` with only the installed wheel
    on the path ahead of the environment's libraries (not the checkout)."""
    env = {**os.environ, "PYTHONPATH": str(installed)}
    cmd = ["timeout", "-k", "10", str(timeout), sys.executable, "-m", "actionrec", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)


def test_the_wheel_carries_what_the_package_reads(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "actionrec/schema.yaml" in names
    schema = zipfile.ZipFile(wheel).read("actionrec/schema.yaml").decode()
    assert schema == (REPO / "config/schema.yaml").read_text()
    assert f"actionrec-{__version__}.dist-info/METADATA" in names


def test_the_installed_command_runs_outside_the_checkout(installed, tmp_path):
    where = run_installed(installed, tmp_path, "--version")
    assert where.returncode == 0 and where.stdout.strip() == f"actionrec {__version__}"
    out = run_installed(installed, tmp_path, "--help")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "predict" in out.stdout and "export" in out.stdout
    code = (
        "import actionrec.settings as s; print(s.SCHEMA); print(s.defaults('data')['extensions'])"
    )
    env = {**os.environ, "PYTHONPATH": str(installed)}
    shown = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert shown.stdout.splitlines()[0].startswith(str(installed))


def test_the_installed_command_classifies_with_a_model_and_its_classes(
    installed, tiny_run, tmp_path
):
    model, classes = tmp_path / "model.keras", tmp_path / "classes.txt"
    model.write_bytes((tiny_run / "results/final/model.keras").read_bytes())
    classes.write_text((tiny_run / "results/data/classes.txt").read_text())
    video = sorted((tiny_run / "results/demo/UCF-101").glob("*/*.avi"))[0]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    args = ("predict", str(video), "--model", str(model), "--classes", str(classes), "--top", "2")
    out = run_installed(installed, elsewhere, *args)
    assert out.returncode == 0, out.stderr[-3000:]
    names = classes.read_text().split()
    assert video.name in out.stdout and any(name in out.stdout for name in names)
    assert "oneDNN" not in out.stderr and "cpu_feature_guard" not in out.stderr


def test_the_rule_and_the_command_take_the_same_videos(tmp_path):
    for name in ("a.avi", "b.MKV", "c.mp4", "d.webm", "e.txt"):
        (tmp_path / name).write_bytes(b"")
    default = {p.name for p in find_videos([tmp_path])}
    expected = {f".{p.split('.')[-1]}".lower() for p in default}
    assert expected == set(defaults("data")["extensions"])
    assert {p.name for p in find_videos([tmp_path], [".webm"])} == {"d.webm"}


def test_start_up_noise_is_dropped_and_real_messages_pass(tmp_path):
    code = "\n".join(
        [
            "import os, sys",
            "from actionrec.logs import quiet_startup",
            "quiet_startup()",
            "os.write(2, b'I0000 00:00 port.cc:153] oneDNN custom operations are on. You may\\n')",
            "os.write(2, b'E0000 00:00 cuda_platform.cc:52] failed call to cuInit: (303)\\n')",
            "os.write(2, b'W0000 00:00 op_kernel.cc:1] a real warning\\n')",
            "print('error: v.avi: no video stream', file=sys.stderr)",
            "os.write(2, b'a last line without its newline')",
        ]
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "scripts")}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "oneDNN" not in out.stderr
    assert ("cuInit" in out.stderr) == os.path.exists("/dev/nvidia0")
    for kept in ("a real warning", "error: v.avi: no video stream", "a last line without"):
        assert kept in out.stderr
