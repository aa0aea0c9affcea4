import atexit
import contextlib
import functools
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = Path(os.environ.get("UCF101_SAMPLE", REPO.parent / "shared/data/ucf101-sample"))


# The suite runs on two workers (pyproject's addopts: -n 2). A session-scoped workflow
# run is made once by each worker that needs it, and tests that rerun snakemake in it
# must not run at the same time, so every module that uses one of these runs goes to
# one worker, the two runs to different workers, first; every other module goes whole
# to one worker, so that a module-scoped fixture is made once. The workers, which
# collect the tests, write each test's group to a file that the scheduler reads.
SHARED_RUNS = ("tiny_run", "short_run")
# After them, the slowest other modules (pytest --durations), slowest first, so that the
# suite ends on short modules and both workers finish together.
SLOWEST = (
    "tests/test_clip_backbones.py",
    "tests/test_slurm.py",
    "tests/test_train.py",
    "tests/test_bench.py",
    "tests/test_devices.py",
    "tests/test_transfer.py",
    "tests/test_bench_scale.py",
)
GROUPS_FILE = "ACTIONREC_TEST_GROUPS"


def pytest_configure(config):
    if GROUPS_FILE not in os.environ and not os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tempfile.mkdtemp(prefix="actionrec-test-groups-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        os.environ[GROUPS_FILE] = os.path.join(folder, "groups.json")


def pytest_collection_modifyitems(config, items):
    if not os.environ.get("PYTEST_XDIST_WORKER") or GROUPS_FILE not in os.environ:
        return
    module_group: dict[str, str] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        # A module that asks for a run lazily (request.getfixturevalue) names it in SHARED_RUN.
        lazily = getattr(getattr(item, "module", None), "SHARED_RUN", None)
        wanted = {*getattr(item, "fixturenames", ()), lazily}
        shared = [name for name in SHARED_RUNS if name in wanted]
        if shared:
            module_group[module] = shared[0]
        else:
            module_group.setdefault(module, module)
    groups = {item.nodeid: module_group[item.nodeid.split("::")[0]] for item in items}
    path = Path(os.environ[GROUPS_FILE])
    part = path.with_name(f"{path.name}.{os.environ['PYTEST_XDIST_WORKER']}")
    part.write_text(json.dumps(groups))
    part.replace(path)


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class SharedRuns(LoadScopeScheduling):
        """xdist's loadscope, with the scope of a test from the workers' groups,
        the shared runs' groups handed out first and the slowest modules next."""

        groups: dict[str, str] | None = None
        ordered = False

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:
                path = Path(os.environ.get(GROUPS_FILE, "/nonexistent"))
                self.groups = json.loads(path.read_text()) if path.is_file() else {}
            return self.groups.get(nodeid) or nodeid.split("::")[0]

        def _assign_work_unit(self, node) -> None:
            if not self.ordered:
                self.ordered = True
                for name in reversed(SLOWEST):
                    if name in self.workqueue:
                        self.workqueue.move_to_end(name, last=False)
            for name in reversed(SHARED_RUNS):
                if name in self.workqueue and not self.assigned_work.get(node):
                    self.workqueue.move_to_end(name, last=False)
                    break
            super()._assign_work_unit(node)

    return SharedRuns(config, log)


def _threads() -> set[str]:
    """The ids of this process's threads, TensorFlow's own (which Python does not
    list) among them."""
    return set(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else set()


@contextlib.contextmanager
def collect_if_threads_left():
    """A full garbage collection on leaving, if a thread runs that did not on
    entering (threads that ended meanwhile do not hide it).
    Training leaves tf.data iterators in reference cycles, each with its reading
    and autotuning threads. Freed minutes later by a full collection that Python
    starts on its own, such an iterator held that collection, and whichever test
    was running, for 53-107 s while its destructor waited on the autotuning
    thread; freed straight after the test that left it, none took over 1.3 s."""
    before = _threads()
    yield
    if _threads() - before:
        gc.collect()


@pytest.fixture(autouse=True)
def free_what_a_test_left_running():
    with collect_if_threads_left():
        yield


@pytest.fixture(scope="session")
def sample() -> Path:
    """The real UCF101 clips and split lists; absent on a user's fresh clone."""
    if not (SAMPLE / "UCF-101").is_dir():
        pytest.skip(f"real UCF101 sample not found at {SAMPLE} (set UCF101_SAMPLE)")
    return SAMPLE


@pytest.fixture(scope="session")
def ffmpeg_exe() -> str:
    from actionrec.video import find_ffmpeg

    return find_ffmpeg()


def count_frames_with_ffmpeg(exe: str, path: Path) -> int:
    """The frame count plain ffmpeg reports when decoding to the null muxer."""
    out = subprocess.run(
        [exe, "-nostdin", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=True,
    )
    last = [line for line in out.stderr.replace("\r", "\n").splitlines() if "frame=" in line][-1]
    return int(last.split("frame=")[1].split()[0])


def copy_workflow(dest: Path) -> Path:
    """A copy of the workflow's files (not results) to run in isolation."""
    for name in ("Snakefile", "rules", "scripts", "config", "envs", "report", "profiles"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def snakemake_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("snakemake")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "snakemake"]


@functools.cache
def _failing_slurm_tools() -> str:
    """A temporary folder of stand-ins for SLURM's client tools that fail at
    once. Where the real ones are installed (the SLURM test installs them) but
    no controller runs, each snakemake start waits about 9 s for them: its
    SLURM plugin asks them for the cluster's settings as it loads."""
    folder = Path(tempfile.mkdtemp(prefix="no-slurm-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    for tool in ("scontrol", "sinfo", "sacct", "squeue"):
        (folder / tool).write_text("#!/bin/sh\nexit 1\n")
        (folder / tool).chmod(0o755)
    return str(folder)


def local_env() -> dict[str, str]:
    """The environment of a snakemake run on this machine, not on SLURM."""
    return {**os.environ, "PATH": _failing_slurm_tools() + os.pathsep + os.environ["PATH"]}


def snakemake(
    workdir: Path, *args: str, timeout: int = 300, slurm: bool = False
) -> subprocess.CompletedProcess:
    """snakemake on 2 cores in ``workdir``, bounded by ``timeout`` seconds
    (``slurm``: with SLURM's tools, for a run submitted to the cluster)."""
    cmd = ["timeout", "-k", "10", str(timeout), *snakemake_cmd(), "--cores", "2", *args]
    env = None if slurm else local_env()
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env)


class CommandTimedOut(Exception):
    pass


def actionrec_in_process(
    monkeypatch, capsys, *argv, cwd=None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """``actionrec ARGV`` run in this process, in ``cwd``: its exit status, stdout and
    stderr. It spares the test a process of its own and its import of TensorFlow
    (6-9 s); tests of the installed entry point, live streams and signals start one.
    As ``timeout -k`` bounds a command in a process of its own, an alarm after
    ``timeout`` seconds ends one that hangs here, failing the test."""
    from actionrec import __main__ as cli

    def give_up(signum, frame):
        raise CommandTimedOut(f"actionrec {' '.join(argv)} ran past {timeout} s")

    capsys.readouterr()  # what the test printed before is not the command's
    with monkeypatch.context() as patch:
        # Both act on the whole process: its stderr, and the root logger for good.
        patch.setattr(cli, "quiet_startup", lambda: None)
        patch.setattr(cli.logging, "basicConfig", lambda **settings: None)
        if cwd is not None:
            patch.chdir(cwd)
        argv = [str(arg) for arg in argv]
        earlier = signal.signal(signal.SIGALRM, give_up)
        signal.alarm(timeout)
        try:
            rc = cli.main(argv)
        except SystemExit as end:
            rc = end.code
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, earlier)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(argv, rc, out, err)


@pytest.fixture
def actionrec_here(monkeypatch, capsys):
    """:func:`actionrec_in_process` with the test's fixtures: ``run(*argv, cwd=None)``."""
    return functools.partial(actionrec_in_process, monkeypatch, capsys)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A copy of the workflow run to the end on tests/tiny.yaml (18 clips)."""
    workdir = copy_workflow(tmp_path_factory.mktemp("wf"))
    shutil.copy(Path(__file__).with_name("tiny.yaml"), workdir / "tiny.yaml")
    out = snakemake(workdir, "--configfile", "tiny.yaml", timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    # What the user saw: for the tests of the console.
    (workdir / "console.txt").write_text(out.stdout + out.stderr)
    return workdir


# tiny.yaml with longer, larger clips (so that extraction lasts long enough to be
# interrupted), no searches or comparison and the small backbone: short runs of
# every data, training and evaluation rule.
SHORT_YAML = """demo: {min_frames: 60, max_frames: 120, width: 320, height: 240}
search: {methods: []}
compare: {backbones: []}
train: {lr: 0.0015, max_epochs: 3, patience: 5, backbone: smallcnn}
"""
SHORT_ARGS = ("--configfile", "tiny.yaml", "short.yaml")


def short_workflow(folder: Path) -> Path:
    """A copy of the workflow with tiny.yaml and short.yaml beside it."""
    workdir = copy_workflow(folder)
    shutil.copy(Path(__file__).with_name("tiny.yaml"), workdir / "tiny.yaml")
    (workdir / "short.yaml").write_text(SHORT_YAML)
    return workdir


@pytest.fixture(scope="session")
def short_run(tmp_path_factory) -> Path:
    """The short config run on this machine to the test predictions, as a
    reference: what the interrupted runs and the SLURM run are compared with
    (the figures, explanations and model card that follow are not)."""
    workdir = short_workflow(tmp_path_factory.mktemp("short"))
    out = snakemake(workdir, "results/final/predictions.tsv", *SHORT_ARGS, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """Shards and a group split of a tiny demo: 3 classes x 4 groups x 3 clips,
    T=4, S=32, in 3 shards."""
    from actionrec.extract import extract_shard, shard_rows
    from actionrec.manifest import build_manifest
    from actionrec.pipeline import Data
    from actionrec.split import make_split
    from actionrec.synthetic import render_dataset
    from actionrec.tables import write_tsv

    root = tmp_path_factory.mktemp("tiny")
    render_dataset(
        root / "videos",
        classes=["Grow", "Checker", "Stripes"],
        groups=4,
        clips_per_group=3,
        min_frames=6,
        max_frames=12,
        width=96,
        height=72,
        seed=3,
        workers=2,
    )
    manifest = build_manifest(root / "videos")
    reports = []
    for k in range(3):
        name = f"shard-{k:04d}"
        rows = shard_rows(manifest, k, 12)
        shard, report = root / f"shards/{name}.h5", root / f"shards/{name}.tsv"
        reports.append(extract_shard(rows, shard, report, frames=4, size=32))
    import pandas as pd

    split, _ = make_split(pd.concat(reports, ignore_index=True), "group", seed=0)
    write_tsv(split, root / "split.tsv")
    write_tsv(manifest, root / "manifest.tsv")
    return {
        "split": root / "split.tsv",
        "shards": root / "shards",
        "classes": 3,
        "manifest": root / "manifest.tsv",
        "clips_per_shard": 12,
        "data": Data.of(root / "split.tsv", root / "shards", 3),
    }


def make_backbone_file(path: Path, pooled: bool = True, seed: int = 0) -> Path:
    """A small pretrained-looking backbone saved as a Keras model file: RGB
    frames 0..255 of any size in, features out; two conv blocks with batch
    norm whose moving statistics are far from their initial 0 and 1."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(seed)
    frame = keras.Input((None, None, 3), name="rgb")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="stem_scale")(frame)
    for i, width in enumerate((16, 32), 1):
        x = keras.layers.Conv2D(width, 3, strides=2, padding="same", name=f"block{i}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"block{i}_bn")(x)
        x = keras.layers.ReLU(name=f"block{i}_relu")(x)
    if pooled:
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    net = keras.Model(frame, x, name="test_backbone")
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            mean, var = rng.normal(0.2, 0.1, mean.shape), rng.uniform(0.5, 2.0, var.shape)
            layer.set_weights([gamma, beta, mean, var])
    net.save(path)
    return path


def make_clip_backbone_file(
    path: Path, maps: bool = False, seed: int = 0, shortest: int | None = None
) -> Path:
    """A small pretrained-looking video backbone (a clip backbone, as I3D)
    saved as a Keras model file: RGB clips 0..255 [T, H, W, 3] of any length
    and size in, ceil(T / 2) steps of 16 features out (of maps [h, w, 16]
    with ``maps``); two Conv3D units with batch norm named as I3D's
    (Conv3d_1a, Mixed_2b) whose moving statistics are far from 0 and 1.
    ``shortest``: a first temporal convolution without padding, so that
    clips shorter than that many frames cannot pass."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(seed)
    clip = keras.Input((None, None, None, 3), name="rgb")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="to_minus1_1")(clip)
    if shortest:
        x = keras.layers.Conv3D(3, (shortest, 1, 1), name="Conv3d_0a_valid")(x)
    for name, width in (("Conv3d_1a", 8), ("Mixed_2b", 16)):
        stride = (2, 2, 2) if name == "Conv3d_1a" else (1, 2, 2)
        x = keras.layers.Conv3D(
            width, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv"
        )(x)
        x = keras.layers.BatchNormalization(scale=False, name=f"{name}_bn")(x)
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    if not maps:
        # I3D's pooling: the mean over h, then w, of every step (stock layers).
        x = keras.layers.AveragePooling3D((1, 256, 1), padding="same", name="mean_h")(x)
        x = keras.layers.AveragePooling3D((1, 1, 256), padding="same", name="mean_w")(x)
        x = keras.layers.Reshape((-1, 16), name="features")(x)
    net = keras.Model(clip, x, name="test_clip_backbone")
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            beta, mean, var = layer.get_weights()
            mean, var = rng.normal(0.2, 0.1, mean.shape), rng.uniform(0.5, 2.0, var.shape)
            layer.set_weights([beta, mean, var])
    net.save(path)
    return path


def assert_loads_with_keras_alone(model, path: Path, needless: Path, tmp_path: Path) -> None:
    """The model saved at ``path`` loads (safe mode on) and predicts as
    ``model`` in a fresh process that imports Keras alone, while the file
    ``needless`` (the backbone file it was built from) is moved away."""
    import numpy as np

    frames, size = model.input_shape[1:3]
    clips = np.random.default_rng(4).integers(0, 256, (3, frames, size, size, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", clips)
    np.save(tmp_path / "p.npy", model.predict(clips, verbose=0))
    moved = needless.with_suffix(".moved")
    needless.rename(moved)
    try:
        code = (
            "import sys, numpy as np, keras\n"
            f"m = keras.saving.load_model({str(path)!r}, safe_mode=True)\n"
            f"p = m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0)\n"
            "assert not any(k.startswith('actionrec') for k in sys.modules)\n"
            f"print(float(np.abs(p - np.load({str(tmp_path / 'p.npy')!r})).max()))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    finally:
        moved.rename(needless)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.strip().splitlines()[-1]) < 1e-5


def shared_file(path: Path, what: str) -> Path:
    """A file of ../shared, or a skip that names it."""
    if not path.is_file():
        pytest.skip(f"{what} is absent ({path})")
    return path


def real_clip_data(sample: Path, classes: list[str], folder: Path, backbone: Path, **extract):
    """Three real UCF101 classes of the sample in one shard, a group split,
    and ``backbone``'s cached features: a Data with features."""
    from actionrec.extract import extract_shard
    from actionrec.features import cache_features
    from actionrec.manifest import build_manifest
    from actionrec.pipeline import Data
    from actionrec.split import make_split
    from actionrec.tables import write_tsv

    manifest = build_manifest(sample / "UCF-101")
    manifest = manifest[manifest["class"].isin(classes)]
    manifest = manifest.reset_index(drop=True).assign(label=lambda m: m["class"].factorize()[0])
    shard, features = folder / "shard-0000.h5", folder / "features/shard-0000.h5"
    report = extract_shard(manifest, shard, folder / "r.tsv", **extract)
    split, _ = make_split(report, "group", seed=0)
    write_tsv(split, folder / "split.tsv")
    cache_features(shard, features, str(backbone), "none")
    return Data.of(folder / "split.tsv", [shard], len(classes), [features])
