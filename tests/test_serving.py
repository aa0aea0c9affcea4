"""The final model beyond the workflow: the command line, export to serving
formats, explanations, and classifying a live stream."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from actionrec.tables import read_tsv
from conftest import snakemake

pytestmark = pytest.mark.workflow

COMMANDS = ("predict", "export", "explain", "check-shards")


def actionrec() -> list[str]:
    """The installed command (the README's set-up installs it)."""
    return [str(Path(sys.executable).with_name("actionrec"))]


def test_the_command_lists_its_commands_with_examples():
    out = subprocess.run([*actionrec(), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert all(name in out.stdout for name in COMMANDS)
    for name in COMMANDS:
        sub = subprocess.run([*actionrec(), name, "--help"], capture_output=True, text=True)
        assert sub.returncode == 0 and "example" in sub.stdout and f"actionrec {name}" in sub.stdout


def test_exports_agree_with_the_keras_model(tiny_run):
    out = snakemake(tiny_run, "results/export/summary.tsv", "--configfile", "tiny.yaml")
    assert out.returncode == 0, out.stderr[-3000:]
    table = read_tsv(tiny_run / "results/export/summary.tsv").set_index("format")
    assert list(table.index) == ["keras", "saved_model", "litert", "onnx", "openvino"]
    assert (table["same_top1"] == table["clips"]).all() and table["within_tolerance"].all()
    assert (table["size_mb"] > 0).all() and (table["ms_per_clip"] > 0).all()
    for name in ("saved_model/saved_model.pb", "model.tflite", "model.onnx", "model.xml"):
        assert (tiny_run / "results/export/models" / name).exists()


def test_a_format_that_cannot_take_the_model_says_why(tiny_run, tmp_path, monkeypatch):
    import numpy as np

    from actionrec import export

    def refuse(model, fmt, out_dir):
        if fmt == "litert":
            raise RuntimeError("converter error\n'tfl.conv_3d' op is not supported")
        return original(model, fmt, out_dir)

    original = export.export_format
    monkeypatch.setattr(export, "export_format", refuse)
    clips = np.zeros((2, 4, 32, 32, 3), np.uint8)
    model = tiny_run / "results/final/model.keras"
    table = export.export_model(model, tmp_path, clips, formats=("litert", "onnx"), repeats=1)
    rows = table.set_index("format")
    assert rows.loc["litert", "error"] == "RuntimeError: 'tfl.conv_3d' op is not supported"
    assert not rows.loc["litert", "within_tolerance"]
    assert rows.loc["onnx", "within_tolerance"] and rows.loc["onnx", "error"] == ""


def test_explanations_are_drawn_for_chosen_test_clips(tiny_run):
    figures = sorted((tiny_run / "results/final/explain").glob("*.png"))
    test = read_tsv(tiny_run / "results/final/predictions.tsv")
    assert len(figures) == min(4, len(test))
    assert {f.stem for f in figures} <= set(test["clip_id"])
    assert all(f.read_bytes()[:4] == b"\x89PNG" for f in figures)


def test_the_explain_command_draws_any_video(tiny_run, tmp_path, actionrec_here):
    video = read_tsv(tiny_run / "results/data/manifest.tsv")["path"][0]
    model = str(tiny_run / "results/final/model.keras")
    cmd = ["explain", video, "--model", model, "--out", str(tmp_path / "why.png")]
    out = actionrec_here(*cmd, "--true", "Grow", cwd=tiny_run)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "why.png").read_bytes()[:4] == b"\x89PNG" and "predicted" in out.stdout
    wrong = actionrec_here(*cmd, "--true", "Fly", cwd=tiny_run)
    assert wrong.returncode == 2 and "'Fly' is not one of the model's classes" in wrong.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A shell hands a command it starts in the background (`nohup ... &`, as CI may
# run the suite) SIGINT ignored, and Python then never raises KeyboardInterrupt:
# the reader gets SIGINT's default back, as Ctrl-C in a terminal finds it.
WITH_CTRL_C = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


class Reader:
    """``actionrec predict --stream`` in the background, its lines kept as they come."""

    def __init__(self, workdir: Path, source: str, *args: str):
        model = str(workdir / "results/final/model.keras")
        cmd = [sys.executable, "-c", WITH_CTRL_C, *actionrec(), "predict", "--stream", source]
        cmd += ["--model", model, *args]
        self.proc = subprocess.Popen(
            cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for_lines(self, n: int, timeout: float = 300) -> None:
        """Until ``n`` lines came, however slow the machine; fails, naming why,
        if the command ends first or ``timeout`` seconds pass (a hang)."""
        deadline = time.monotonic() + timeout
        while len(self.lines) < n:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                err = self.proc.stderr.read()[-2000:]
                raise AssertionError(f"{len(self.lines)} of {n} lines came: {err}")
            time.sleep(0.1)

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        rc = self.proc.wait(timeout=timeout)
        self._thread.join(timeout=10)
        return rc, self.proc.stderr.read()


def listening(port: int) -> bool:
    """Whether a socket on this machine listens on TCP ``port`` (Linux's /proc)."""
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        # Each row: sl, local address:port (hex), remote, state (0A is LISTEN), ...
        for row in table.read_text().splitlines()[1:] if table.exists() else []:
            _, local, _, state, *_ = row.split()
            if int(local.rsplit(":", 1)[1], 16) == port and state == "0A":
                return True
    return False


def send(clip: str, port: int) -> subprocess.Popen:
    """ffmpeg playing ``clip`` in a loop, at its own pace, to a TCP listener on
    127.0.0.1 until it is stopped: a live stream. Starts once the listener
    listens, however long that takes it (a reader imports TensorFlow first)."""
    from actionrec.video import find_ffmpeg

    deadline = time.monotonic() + 300
    while not listening(port):
        assert time.monotonic() < deadline, f"nothing listened on port {port} in 300 s"
        time.sleep(0.05)
    cmd = [find_ffmpeg(), "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1"]
    cmd += ["-i", clip, "-c:v", "mpeg4", "-f", "mpegts", f"tcp://127.0.0.1:{port}"]
    return subprocess.Popen(cmd, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def known_clip(tiny_run) -> tuple[str, str]:
    """A clip the model classifies right with the highest confidence, and its class."""
    manifest = read_tsv(tiny_run / "results/data/manifest.tsv")
    out_tsv = tiny_run / "all.tsv"
    cmd = [*actionrec(), "predict", *manifest["path"], "--output", str(out_tsv), "--top", "1"]
    done = subprocess.run(cmd, cwd=tiny_run, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    table = read_tsv(out_tsv).assign(path=list(manifest["path"]), true=list(manifest["class"]))
    right = table[table["predicted"] == table["true"]].sort_values("probability")
    assert len(right), "the tiny model classifies no clip right"
    best = right.iloc[-1]
    return str(tiny_run / best["path"]), best["true"]


def test_a_live_stream_is_classified_line_by_line_while_it_runs(tiny_run, known_clip, tmp_path):
    clip, label = known_clip
    port = free_port()
    steps = tmp_path / "steps.tsv"
    options = ["--window-seconds", "0.5", "--step-seconds", "0.25", "--output", str(steps)]
    reader = Reader(tiny_run, f"tcp://127.0.0.1:{port}?listen=1", *options, "--top", "2")
    sender = send(clip, port)
    try:
        reader.wait_for_lines(10)
        # The lines came while the stream was still playing, not all at its end.
        assert sender.poll() is None
    finally:
        sender.terminate()  # ffmpeg ends the stream as a camera would
        sender.wait(timeout=60)
    rc, err = reader.finish()
    assert rc == 0, err[-2000:]
    table = pd.read_csv(steps, sep="\t")
    assert table["predicted"].value_counts().idxmax() == label
    assert table["stream_seconds"].is_monotonic_increasing


def test_a_stream_that_never_opens_is_named(tiny_run):
    port = free_port()  # nobody listens there
    reader = Reader(tiny_run, f"tcp://127.0.0.1:{port}", "--timeout", "3", "--allow-scheme", "tcp")
    rc, err = reader.finish(timeout=300)
    assert rc == 2 and f"error: tcp://127.0.0.1:{port}: could not be read" in err


def test_a_stream_that_stalls_is_reported_as_dropped(tiny_run, known_clip):
    port = free_port()
    # 10 s with nothing read is a stall: from the listener's start to the first
    # frame as well, which a loaded machine may take seconds to reach.
    reader = Reader(tiny_run, f"tcp://127.0.0.1:{port}?listen=1", "--timeout", "10")
    sender = send(known_clip[0], port)
    try:
        reader.wait_for_lines(1)
        os.kill(sender.pid, signal.SIGSTOP)  # the camera freezes: no more data
        rc, err = reader.finish(timeout=120)
    finally:
        os.kill(sender.pid, signal.SIGKILL)
        sender.wait()
    assert rc == 1 and "the stream dropped after" in err and reader.lines


def test_a_network_read_that_times_out_is_a_drop_not_an_end(tiny_run, known_clip, monkeypatch):
    """ffmpeg ends a timed-out network read with status 0; only its log says
    why. Without the watchdog, that still counts as a drop."""
    import keras

    from actionrec import stream

    monkeypatch.setattr(stream._Watchdog, "_watch", lambda self: None)
    model = keras.models.load_model(tiny_run / "results/final/model.keras")
    names = (tiny_run / "results/data/classes.txt").read_text().split()
    port = free_port()
    result = {}
    stepped = threading.Event()

    def listen():
        source = f"tcp://127.0.0.1:{port}?listen=1"
        result["table"] = stream.classify_stream(
            model, source, names, timeout=2, on_step=lambda row: stepped.set()
        )

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    sender = send(known_clip[0], port)
    try:
        # The camera freezes once a step is classified, however long the first one takes.
        assert stepped.wait(timeout=60), "no step was classified in 60 s"
        os.kill(sender.pid, signal.SIGSTOP)
        listener.join(timeout=60)
    finally:
        os.kill(sender.pid, signal.SIGKILL)
        sender.wait()
    table = result["table"]
    assert len(table) and "Connection timed out" in table.attrs["error"]


def test_ctrl_c_stops_a_stream_cleanly(tiny_run, known_clip, tmp_path):
    port = free_port()
    steps = tmp_path / "steps.tsv"
    reader = Reader(tiny_run, f"tcp://127.0.0.1:{port}?listen=1", "--output", str(steps))
    sender = send(known_clip[0], port)
    try:
        reader.wait_for_lines(1)
        reader.proc.send_signal(signal.SIGINT)
        rc, err = reader.finish(timeout=120)
    finally:
        sender.kill()
        sender.wait()
    assert rc == 0, err[-2000:]
    assert len(pd.read_csv(steps, sep="\t")) >= 1


def test_the_report_holds_the_explanations(tiny_run):
    html = tiny_run / "results/report.html"
    if not html.exists():
        out = snakemake(tiny_run, "--configfile", "tiny.yaml", "--report", str(html))
        assert out.returncode == 0, out.stderr[-2000:]
    names = [f.name for f in (tiny_run / "results/final/explain").glob("*.png")]
    text = html.read_text()
    assert names and all(name in text for name in names)
