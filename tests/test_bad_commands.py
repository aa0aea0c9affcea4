"""A command given a bad model file, argument, output path or source stops
before its work with exit status 2 and one line that names what is wrong and
the fix, and loses nothing: no partial file is left and earlier outputs stay
as they were. Names are drawn and written as they are."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from actionrec.tables import read_tsv
from conftest import (
    REPO,
    CommandTimedOut,
    actionrec_in_process,
    collect_if_threads_left,
    make_backbone_file,
)
from test_video import ramp_video

EARLIER = b"an earlier output\n"
# Names that mathtext would set as mathematics ("Jump$x$") or fail to draw.
MATH_NAMES = ["Jump$x$", "x$\\frac$y", "plain"]
CLIPS = np.random.default_rng(0).integers(0, 256, (3, 4, 32, 32, 3), dtype=np.uint8)


def run(monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    """``actionrec ARGV`` in this process: its exit status, stdout and stderr."""
    out = actionrec_in_process(monkeypatch, capsys, *argv)
    return out.returncode, out.stdout, out.stderr


def test_a_command_run_in_the_test_process_that_hangs_is_ended(monkeypatch, capsys):
    import signal
    import time

    from actionrec import __main__ as cli

    monkeypatch.setattr(cli, "main", lambda argv: time.sleep(60))
    handler = signal.getsignal(signal.SIGALRM)
    started = time.monotonic()
    with pytest.raises(CommandTimedOut, match="actionrec predict x.avi ran past 1 s"):
        actionrec_in_process(monkeypatch, capsys, "predict", "x.avi", timeout=1)
    assert time.monotonic() - started < 30
    # The alarm is off and the handler before it back.
    assert signal.getsignal(signal.SIGALRM) is handler and signal.alarm(0) == 0


def test_what_a_test_leaves_running_in_a_cycle_is_freed_after_it(monkeypatch):
    import gc
    import threading
    import weakref

    import conftest

    class Holder:
        pass

    def cycle_ending(event: threading.Event) -> None:
        held = Holder()
        held.me = held  # freed only by a collection
        weakref.finalize(held, event.set)

    ended, kept = threading.Event(), threading.Event()
    gc.disable()  # no collection of Python's own in between
    try:
        with collect_if_threads_left():
            cycle_ending(ended)
            reader = threading.Thread(target=ended.wait, daemon=True)  # ends with the cycle
            reader.start()
        assert ended.is_set()
        reader.join(10)
        assert not reader.is_alive()
        # No thread left: the cycle waits for Python's own collection. (The threads
        # seen are fixed here: one that another test left could start meanwhile.)
        assert conftest.collect_if_threads_left is collect_if_threads_left
        monkeypatch.setattr(conftest, "_threads", lambda: {"1"})
        with collect_if_threads_left():
            cycle_ending(kept)
        assert not kept.is_set()
    finally:
        gc.enable()
    gc.collect()
    assert kept.is_set()


def error_line(err: str) -> str:
    """The one line the user is told, with no traceback around it."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error: " in line]
    assert len(lines) == 1, err
    return lines[0]


def no_part_files(folder: Path) -> None:
    left = [p.name for p in folder.rglob("*") if ".part" in p.name or p.name.startswith(".")]
    assert not left, left


def with_config(source: Path, target: Path, config: bytes) -> Path:
    """A copy of the .keras archive ``source`` with another config.json."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            new.writestr(item, config if item.filename == "config.json" else old.read(item))
    return target


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A tiny clip model (T=4, S=32) with classes beside it, another of the
    same shape, a video, and model files that are no clip model."""
    import keras

    from actionrec.model import build_model

    folder = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(0)
    build_model(3, 4, 32, "smallcnn").save(folder / "model.keras")
    (folder / "classes.txt").write_text("".join(f"{n}\n" for n in MATH_NAMES))
    keras.utils.set_random_seed(1)
    other = folder / "other/model.keras"
    other.parent.mkdir()
    build_model(3, 4, 32, "smallcnn").save(other)
    ramp_video(folder / "clip.avi", 12, 64, 48)

    clip = keras.Input((4, None, None, 3))
    pooled = keras.layers.GlobalAveragePooling3D()(keras.layers.Conv3D(4, 3)(clip))
    free = keras.Model(clip, keras.layers.Dense(3, activation="softmax")(pooled))
    free.save(folder / "free_size.keras")
    plain = keras.Sequential(
        [keras.Input((4, 32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(3, "softmax")]
    )
    plain.save(folder / "plain.keras")

    frame = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 7, strides=4)(frame)
    x = keras.layers.Conv2D(4, 7, strides=4)(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 7)(x))
    keras.Model(frame, x).save(folder / "shrinks.keras")
    return {
        "folder": folder,
        "model": folder / "model.keras",
        "other": other,
        "video": folder / "clip.avi",
        "plain": folder / "plain.keras",
        "not_json": with_config(folder / "model.keras", folder / "not_json.keras", b"{not json"),
        "no_config": with_config(
            folder / "model.keras",
            folder / "no_config.keras",
            json.dumps({"class_name": "Functional"}).encode(),
        ),
        "free_size": folder / "free_size.keras",
        "backbone": make_backbone_file(folder / "backbone.keras"),
        "shrinks": folder / "shrinks.keras",
    }


@pytest.fixture(scope="module")
def data_folder(tiny_data, tmp_path_factory) -> Path:
    """A run's results/data folder of the tiny data (T=4, S=32)."""
    folder = tmp_path_factory.mktemp("data")
    shutil.copy(tiny_data["split"], folder / "split.tsv")
    (folder / "shards").symlink_to(tiny_data["shards"])
    (folder / "classes.txt").write_text("Grow\nChecker\nStripes\n")
    return folder


# --- Model files that are no clip model ------------------------------------------

BAD_MODELS = [
    ("not_json", "holds a config.json that is not valid JSON"),
    ("no_config", "holds a config.json without 'config'"),
    ("free_size", "of fixed T and S, got (None, 4, None, None, 3)"),
    ("backbone", "expected a model with input [batch, T, S, S, 3], got (None, None, None, 3)"),
]


@pytest.mark.parametrize("command", ["predict", "explain", "export"])
@pytest.mark.parametrize("kind, problem", BAD_MODELS)
def test_a_bad_model_file_is_named_and_nothing_is_lost(
    files, data_folder, tmp_path, monkeypatch, capsys, command, kind, problem
):
    model = files[kind]
    earlier = tmp_path / ("why.png" if command == "explain" else "earlier.tsv")
    earlier.write_bytes(EARLIER)
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "model.onnx").write_bytes(EARLIER)
    argv = {
        "predict": ["predict", str(files["video"]), "--output", str(earlier)],
        "explain": ["explain", str(files["video"]), "--out", str(earlier)],
        "export": ["export", "--out", str(exports), "--data", str(data_folder)],
    }[command]
    argv += ["--formats", "onnx"] if command == "export" else []
    rc, out, err = run(monkeypatch, capsys, *argv, "--model", str(model))
    line = error_line(err)
    assert rc == 2 and out == ""
    assert line.startswith(f"error: model file {model} ") and problem in line, line
    assert "--model" in line
    assert earlier.read_bytes() == EARLIER and (exports / "model.onnx").read_bytes() == EARLIER
    no_part_files(tmp_path)


def test_explain_refuses_a_model_this_workflow_did_not_make(files, tmp_path):
    """Through the installed entry point: the exit status and the one line."""
    earlier = tmp_path / "why.png"
    earlier.write_bytes(EARLIER)
    env = {**os.environ, "PYTHONPATH": str(REPO / "scripts")}
    cmd = [sys.executable, "-m", "actionrec", "explain", str(files["video"])]
    cmd += ["--model", str(files["plain"]), "--out", str(earlier)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    line = error_line(out.stderr)
    assert out.returncode == 2, out.stderr[-2000:]
    assert line == (
        f"error: model file {files['plain']} has no 'backbone' and no 'head' part; explain "
        "takes a model this workflow trained (results/final/model.keras); actionrec predict "
        "classifies with any clip model"
    )
    assert earlier.read_bytes() == EARLIER
    no_part_files(tmp_path)


def test_predict_takes_any_clip_model(files, tmp_path, monkeypatch, capsys):
    table = tmp_path / "p.tsv"
    rc, out, err = run(
        monkeypatch,
        capsys,
        *("predict", str(files["video"]), "--model", str(files["plain"])),
        *("--output", str(table)),
    )
    assert rc == 0, err
    assert read_tsv(table)["status"].tolist() == ["ok"]


@pytest.mark.parametrize(
    "kind, size, problem",
    [
        ("not_json", 32, "holds a config.json that is not valid JSON"),
        ("no_config", 32, "holds a config.json without 'config'"),
        ("shrinks", 32, "leave nothing of 32x32 frames; set extract.size to 128 or more"),
    ],
)
def test_a_bad_backbone_file_is_named(files, kind, size, problem):
    from actionrec.model import build_model

    with pytest.raises(ValueError) as err:
        build_model(3, 4, size, str(files[kind]))
    message = str(err.value)
    assert message.startswith(f"backbone file {files[kind]} ") and problem in message, message
    assert "\n" not in message


# --- Outputs: folders made, names kept, earlier files intact -----------------------


def drawn_figures(monkeypatch) -> list:
    """The figures closed from now on (each one drawn and saved first)."""
    import matplotlib.pyplot as plt

    closed, close = [], plt.close

    def keep(fig=None):
        closed.append(fig)
        close(fig)

    monkeypatch.setattr(plt, "close", keep)
    return closed


def assert_literal(figure, names: list[str]) -> None:
    """Every text of ``figure`` that holds a ``$`` is drawn as written (by
    matplotlib's rules: not as mathematics, an escaped ``\\$`` as ``$``),
    and every name appears in one of them."""
    from matplotlib.cbook import is_math_text
    from matplotlib.text import Text

    drawn = []
    for text in figure.findobj(Text):
        if "$" in text.get_text():
            assert not text.get_usetex(), text.get_text()
            if text.get_parse_math():
                assert not is_math_text(text.get_text()), text.get_text()
                drawn.append(text.get_text().replace("\\$", "$"))
            else:
                drawn.append(text.get_text())
    assert drawn
    for name in names:
        assert any(name in text for text in drawn), name


def test_explain_makes_the_folders_of_out_and_draws_names_as_written(
    files, tmp_path, monkeypatch, capsys
):
    closed = drawn_figures(monkeypatch)
    out_file = tmp_path / "new/deeper/why.png"
    argv = ["explain", str(files["video"]), "--model", str(files["model"]), "--out", str(out_file)]
    rc, out, err = run(monkeypatch, capsys, *argv, "--true", MATH_NAMES[1])
    assert rc == 0, err
    assert out_file.read_bytes()[:4] == b"\x89PNG" and str(out_file) in out
    assert_literal(closed[-1], MATH_NAMES[:2])
    no_part_files(tmp_path)


def test_figures_draw_names_as_written(tmp_path, monkeypatch):
    from actionrec import figures

    closed = drawn_figures(monkeypatch)
    names = MATH_NAMES
    per_class = pd.DataFrame({"class": names, "f1": [0.2, 0.5, 0.9]})
    pairs = pd.DataFrame(
        {"true": names[:2], "predicted": names[1:], "share": [0.5, 0.25], "count": [2, 1]}
    )
    history = pd.DataFrame({"epoch": [1, 2], "val_accuracy": [0.3, 0.6]})
    summary = pd.DataFrame(
        {"backbone": names, "head": ["a$b", "gru", "average"], "train_seconds_total": [1, 2, 3]}
    ).assign(test_accuracy=[0.4, 0.5, 0.6])
    near = pd.DataFrame(
        {
            "split": ["test"],
            "clip_id": [names[0]],
            "train_clip": [names[1]],
            "similarity": [0.9],
            "same_group": [False],
        }
    )
    strip = np.zeros((2, 8, 8, 3), np.uint8)
    draw = {
        "per_class_f1": lambda p: figures.per_class_f1(per_class, p, weakest=2),
        "confusion_matrix": lambda p: figures.confusion_matrix(np.eye(3, dtype=int), names, p),
        "confused_pairs": lambda p: figures.confused_pairs(pairs, p),
        "compare_curves": lambda p: figures.compare_curves(dict.fromkeys(names, history), p),
        "compare_time": lambda p: figures.compare_time(summary, p),
        "near_duplicates": lambda p: figures.near_duplicates(near, [(strip, strip)], p),
    }
    for name, drawing in draw.items():
        path = tmp_path / f"{name}.png"
        drawing(path)
        assert path.read_bytes()[:4] == b"\x89PNG", name
        assert_literal(closed[-1], names[:2])


def test_a_name_that_is_not_utf8_is_kept(files, tmp_path, monkeypatch, capsys):
    video = tmp_path / os.fsdecode(b"clip\xff.avi")
    shutil.copy(files["video"], video)
    table = tmp_path / os.fsdecode(b"out\xff.tsv")
    argv = ["predict", str(video), "--model", str(files["model"]), "--output", str(table)]
    rc, out, err = run(monkeypatch, capsys, *argv)
    assert rc == 0, err
    assert b"out\xff.tsv" in os.listdir(os.fsencode(tmp_path))
    written = read_tsv(table)
    shown = str(tmp_path / "clip") + "\\xff.avi"
    assert written["video"].tolist() == [shown] and written["status"].tolist() == ["ok"]
    assert out.startswith(shown)
    no_part_files(tmp_path)


@pytest.mark.parametrize(
    "where, problem",
    [("folder", "is a folder: name a new or existing file"), ("file/t.tsv", "is a file, not a")],
)
def test_an_output_that_cannot_be_written_stops_predict_first(
    files, tmp_path, monkeypatch, capsys, where, problem
):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder/kept.tsv").write_bytes(EARLIER)
    (tmp_path / "file").write_bytes(EARLIER)
    output = tmp_path / where
    argv = ["predict", str(files["video"]), "--model", str(files["model"]), "--output"]
    rc, out, err = run(monkeypatch, capsys, *argv, str(output))
    line = error_line(err)
    assert rc == 2 and out == "", out
    assert line.startswith(f"error: --output {output} ") and problem in line, line
    assert (tmp_path / "folder/kept.tsv").read_bytes() == EARLIER
    assert (tmp_path / "file").read_bytes() == EARLIER
    no_part_files(tmp_path)


def test_onnx_is_converted_from_the_model_given_not_an_older_saved_model(files, tmp_path):
    import keras

    from actionrec.export import export_model

    out = tmp_path / "exports"
    keras.saving.load_model(files["other"]).export(
        str(out / "saved_model"), format="tf_saved_model", verbose=False
    )
    older = {p: p.read_bytes() for p in (out / "saved_model").rglob("*") if p.is_file()}
    table = export_model(files["model"], out, CLIPS, formats=("onnx",), repeats=1)
    onnx = table.set_index("format").loc["onnx"]
    assert onnx["error"] == "" and onnx["within_tolerance"], onnx.to_dict()
    assert onnx["same_top1"] == len(CLIPS)
    # The older SavedModel is left as it was, and nothing temporary is.
    assert {p: p.read_bytes() for p in (out / "saved_model").rglob("*") if p.is_file()} == older
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "saved_model"]


# --- Numbers in range -----------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--window-seconds", "0"], "argument --window-seconds: must be more than 0 and at"),
        (["--window-seconds", "-2"], "argument --window-seconds: must be more than 0"),
        (["--window-seconds", "nan"], "argument --window-seconds: must be more than 0"),
        (["--window-seconds", "inf"], "argument --window-seconds: must be more than 0"),
        (["--window-seconds", "ten"], "argument --window-seconds: expected a number, not 'ten'"),
        (["--views", "0"], "argument --views: must be at least 1 and at most 64, not 0"),
        (["--views", "65"], "argument --views: must be at least 1 and at most 64, not 65"),
        (["--views", "1.5"], "argument --views: expected a whole number, not '1.5'"),
        (["--frames-per-segment", "0"], "argument --frames-per-segment: must be at least 1"),
        (["--frames-per-segment", "1000"], "argument --frames-per-segment: must be at least 1"),
        (["--top", "0"], "argument --top: must be at least 1 and at most 1000, not 0"),
        (["--step-seconds", "0"], "argument --step-seconds: must be more than 0 and at most"),
        (["--timeout", "-1"], "argument --timeout: must be more than 0 and at most 3600"),
        (["--allow-scheme", "a b"], "argument --allow-scheme: expected a URL scheme"),
    ],
)
def test_a_number_out_of_range_is_refused_by_the_parser(monkeypatch, capsys, argv, message):
    rc, out, err = run(monkeypatch, capsys, "predict", "--stream", "-", *argv)
    assert rc == 2 and message in err.splitlines()[-1], err


@pytest.mark.parametrize("clips", ["0", "5000"])
def test_export_clips_out_of_range_is_refused_by_the_parser(monkeypatch, capsys, clips):
    rc, out, err = run(monkeypatch, capsys, "export", "--clips", clips)
    assert rc == 2 and "argument --clips: must be at least 1 and at most 1024" in err, err


# --- Live sources: what a camera uses, unless widened -------------------------------

REFUSED = [
    ("file:///etc/passwd", "file"),
    ("gopher://127.0.0.1:70/x", "gopher"),
    ("tcp://127.0.0.1:22", "tcp"),
    ("TCP://127.0.0.1:22", "tcp"),
    ("tcp://127.0.0.1:22?listen=0", "tcp"),
    ("ftp://127.0.0.1/clip.mp4", "ftp"),
    ("unix:///run/docker.sock", "unix"),
]


@pytest.fixture
def no_ffmpeg(monkeypatch):
    """Starting ffmpeg fails the test."""
    from actionrec import stream

    def refuse(*args, **kwargs):
        raise AssertionError("ffmpeg was started")

    monkeypatch.setattr(stream, "FrameStream", refuse)


@pytest.mark.parametrize("source, scheme", REFUSED)
def test_a_stream_of_another_scheme_is_refused_before_anything_starts(
    tmp_path, monkeypatch, capsys, no_ffmpeg, source, scheme
):
    # No model there: the source is refused before the model is looked for.
    argv = ["predict", "--stream", source, "--model", str(tmp_path / "absent.keras")]
    rc, out, err = run(monkeypatch, capsys, *argv, "--output", str(tmp_path / "steps.tsv"))
    line = error_line(err)
    assert rc == 2 and out == ""
    assert line.startswith(f"error: {source}: ") and f"{scheme}:// is not read by default" in line
    assert line.endswith(f"add --allow-scheme {scheme} to read it"), line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "source", ["concat:/etc/hosts|/etc/hostname", "subfile:,,start,0,end,9,,:/etc/hosts"]
)
def test_a_protocol_name_is_a_file_name_for_a_stream(
    tmp_path, monkeypatch, capsys, no_ffmpeg, source
):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(monkeypatch, capsys, "predict", "--stream", source, "--model", "absent")
    assert rc == 2 and error_line(err) == f"error: {source}: no such file or device"


def test_camera_sources_are_taken_and_allow_scheme_widens_them(
    files, tmp_path, monkeypatch, capsys
):
    from actionrec.stream import check_source

    for source in [
        "rtsp://camera.local/live",
        "rtsps://camera.local:322/live",
        "rtmp://server/app/key",
        "rtmps://server/app/key",
        "http://camera.local/video.mjpg",
        "https://example.org/live.m3u8",
        "srt://camera.local:9000",
        "udp://0.0.0.0:5000",
        "rtp://0.0.0.0:5004",
        "tcp://0.0.0.0:5000?listen=1",
        "tcp://0.0.0.0:5000?listen",
        "-",
        "/dev/video0",
        str(files["video"]),
    ]:
        check_source(source)
    check_source("tcp://127.0.0.1:22", allow_schemes=["tcp"])
    check_source("file:///tmp/clip.avi", allow_schemes=["FILE"])
    # Widened, the source is read: here the absent model is what stops it.
    source = "tcp://127.0.0.1:9"
    argv = ["predict", "--stream", source, "--allow-scheme", "tcp", "--model", "absent.keras"]
    rc, out, err = run(monkeypatch, capsys, *argv)
    assert rc == 2 and error_line(err).startswith("error: no model at absent.keras")


def test_classify_stream_refuses_another_scheme_itself(no_ffmpeg):
    from actionrec.stream import classify_stream
    from actionrec.video import BadVideo

    class Model:
        input_shape = (None, 4, 16, 16, 3)

    with pytest.raises(BadVideo, match="gopher:// is not read by default"):
        classify_stream(Model(), "gopher://127.0.0.1/", ["a", "b"])
