"""Timelines of long videos: windows at a stride, segments, the figure, the
command line (files, a folder with a broken file, a stream), the rule, and
bounded memory for an hour of video."""

import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from actionrec.tables import read_tsv
from actionrec.timeline import UNKNOWN, Timeline, segments, timed_windows
from conftest import REPO, snakemake

HERE = Path(__file__).resolve().parent

COLOURS = ["red", "green", "blue"]
# (class, seconds) of the joined video: the boundaries at 3, 8 and 12 s.
PLAN = [(0, 3.0), (1, 5.0), (2, 4.0), (0, 3.0)]
FPS = 10


def colour_model(size: int = 16):
    """A clip model that tells red, green and blue clips apart: the mean
    colour, softmax."""
    import keras

    clip = keras.Input((4, size, size, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(clip)
    x = keras.layers.GlobalAveragePooling3D()(x)
    init = keras.initializers.Identity(8.0)
    out = keras.layers.Dense(3, activation="softmax", kernel_initializer=init)(x)
    return keras.Model(clip, out)


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory):
    """The colour model saved as a .keras file, and a video joined from clips
    of the three colours with known boundaries: noisy frames, so that
    windows across a boundary mix two classes."""
    from actionrec.video import write_video

    root = tmp_path_factory.mktemp("colours")
    colour_model().save(root / "colour.keras")
    (root / "classes.txt").write_text("\n".join(COLOURS) + "\n")
    rng = np.random.default_rng(0)

    def frames():
        for label, seconds in PLAN:
            for _ in range(int(seconds * FPS)):
                frame = rng.integers(0, 60, (48, 64, 3), dtype=np.uint8)
                frame[..., label] = 200
                yield frame

    write_video(root / "joined.avi", frames(), 64, 48, fps=FPS)
    return root


def truth_at(times: np.ndarray) -> np.ndarray:
    ends = np.cumsum([s for _, s in PLAN])
    return np.array([COLOURS[PLAN[int(np.searchsorted(ends, t, side="right"))][0]] for t in times])


def check_segments(segs: pd.DataFrame, stride: float) -> None:
    """The joined video's four segments, each boundary within one stride."""
    assert segs["class"].tolist() == ["red", "green", "blue", "red"]
    boundaries = segs["end"].to_numpy()[:-1]
    assert np.all(np.abs(boundaries - [3.0, 8.0, 12.0]) <= stride), boundaries
    assert segs["start"].iloc[0] == 0 and segs["end"].iloc[-1] == pytest.approx(15.0, abs=0.2)


def test_a_joined_video_gives_segments_at_the_right_times(colour_run, tmp_path, actionrec_here):
    out = actionrec_here(
        *("predict", "--timeline", "joined.avi", "--model", "colour.keras"),
        *("--classes", "classes.txt", "--window-seconds", "1", "--stride", "0.5"),
        *("--min-duration", "1", "--output", str(tmp_path / "out")),
        cwd=colour_run,
    )
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "out/joined"
    check_segments(read_tsv(folder / "segments.tsv"), 0.5)
    about = json.loads((folder / "segments.json").read_text())
    assert about["stride"] == 0.5 and about["window_seconds"] == 1.0
    assert [s["class"] for s in about["segments"]] == ["red", "green", "blue", "red"]
    windows = read_tsv(folder / "windows.tsv")
    # Windows of 1 s every 0.5 s over 15 s: their starts 0, 0.5, ... 14.
    np.testing.assert_allclose(windows["start"], np.arange(len(windows)) * 0.5)
    assert len(windows) == 28 and set(COLOURS) <= set(windows.columns)
    inside = windows[(windows["end"] <= 3) | (windows["start"] >= 3) & (windows["end"] <= 8)]
    assert (inside["predicted"] == truth_at((inside["start"] + inside["end"]) / 2)).all()
    assert (folder / "timeline.png").read_bytes()[:4] == b"\x89PNG"


def test_a_broken_file_in_a_folder_is_reported_and_the_others_get_timelines(
    colour_run, tmp_path, actionrec_here
):
    folder = tmp_path / "videos"
    folder.mkdir()
    good = (colour_run / "joined.avi").read_bytes()
    (folder / "a.avi").write_bytes(good)
    (folder / "b.avi").write_bytes(good[: len(good) // 3])  # cut short
    (folder / "c.avi").write_bytes(good)
    out = actionrec_here(
        *("predict", "--timeline", str(folder), "--model", "colour.keras"),
        *("--classes", "classes.txt", "--window-seconds", "1", "--stride", "1"),
        cwd=colour_run,
    )
    assert out.returncode == 1
    assert f"error: {folder / 'b.avi'}: truncated" in out.stderr
    for name in ("a", "c"):
        check_segments(read_tsv(folder / f"{name}.timeline/segments.tsv"), 1.0)
    assert not (folder / "b.timeline").exists()


def test_a_stream_with_output_gives_the_same_timeline(colour_run, tmp_path, actionrec_here):
    out = actionrec_here(
        *("predict", "--stream", "joined.avi", "--as-fast-as-possible", "--timeline"),
        *("--model", "colour.keras", "--classes", "classes.txt", "--window-seconds", "1"),
        *("--output", str(tmp_path / "live")),
        cwd=colour_run,
    )
    assert out.returncode == 0, out.stderr
    check_segments(read_tsv(tmp_path / "live/segments.tsv"), 1.0)
    assert len(read_tsv(tmp_path / "live/windows.tsv")) == 15
    assert (tmp_path / "live/timeline.png").exists()


def test_a_stream_timeline_needs_an_output_folder(actionrec_here):
    out = actionrec_here("predict", "--stream", "x.avi", "--timeline")
    assert out.returncode == 2 and "needs --output" in out.stderr


def timeline_of(labels: list[int], stride: float = 1.0, unknown=()) -> Timeline:
    """Windows of 2 s every ``stride`` s whose top class is each of ``labels``."""
    line = Timeline("v.mp4", ["a", "b", "c"], 2.0, stride, threshold=0.5)
    for i, label in enumerate(labels):
        probs = np.full(3, 0.1)
        probs[label] = 0.8
        line.add(probs, 0.8, i in unknown, i * stride, i * stride + 2, np.zeros((4, 4, 3)))
    line.duration = (len(labels) - 1) * stride + 2
    return line


def test_a_run_shorter_than_the_minimum_joins_a_neighbour():
    labels = [0] * 6 + [1] + [0] * 3 + [2] * 5
    assert segments(timeline_of(labels), 0)["class"].tolist() == ["a", "b", "a", "c"]
    segs = segments(timeline_of(labels), 2.0)
    assert segs["class"].tolist() == ["a", "c"]
    # Each window stands for the time nearest its centre: the boundary between
    # the last a (centre 10) and the first c (centre 11) is 10.5.
    assert segs["end"].tolist() == [10.5, 16.0] and segs["windows"].tolist() == [10, 5]


def test_unknown_windows_make_unknown_segments():
    segs = segments(timeline_of([0] * 4 + [1] * 4 + [2] * 4, unknown={4, 5, 6, 7}), 1.0)
    assert segs["class"].tolist() == ["a", UNKNOWN, "c"]
    assert segs.loc[1, "score"] == pytest.approx(0.8)


def test_windows_hold_bounded_frames_at_any_rate():
    """10 s windows of a 1000 fps source every 2 s: the frames held stay
    within the bound (10,000 frames a window would be 1 GB here)."""
    fps, frame_bytes = 1000.0, 100_000

    def frames():
        for n in range(int(40 * fps)):
            yield np.full(frame_bytes, n % 251, np.uint8), n / fps

    tracemalloc.start()
    try:
        got = [(clip.shape, span[:2]) for clip, span in timed_windows(frames(), 8, 10, 2, fps, 50)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [span for _, span in got] == [(2.0 * k, 2.0 * k + 10) for k in range(15)]
    assert all(shape == (8, frame_bytes) for shape, _ in got)
    assert peak < 200 * frame_bytes, peak


PEAK = textwrap.dedent(
    """
    import resource, sys
    from test_timeline import colour_model
    from actionrec.timeline import score_video
    line = score_video(colour_model(64), sys.argv[1], ["red", "green", "blue"],
                       window_seconds=4, stride=float(sys.argv[2]))
    print(len(line.starts), round(line.end), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


def test_an_hour_long_video_runs_in_bounded_memory(ffmpeg_exe, tmp_path):
    """An hour of 10 fps video takes no more memory than a minute of it (its
    36,000 frames of 64 x 64 would take 440 MB)."""
    peaks = {}
    for seconds in (60, 3600):
        video = tmp_path / f"{seconds}.mp4"
        subprocess.run(
            [ffmpeg_exe, "-nostdin", "-loglevel", "error", "-f", "lavfi"]
            + ["-i", f"testsrc=size=80x64:rate=10:duration={seconds}"]
            + ["-c:v", "mpeg4", "-q:v", "20", str(video)],
            check=True,
            timeout=300,
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "scripts"), str(HERE)])}
        out = subprocess.run(
            ["timeout", "-k", "10", "400", sys.executable, "-c", PEAK, str(video), "15"],
            capture_output=True,
            text=True,
            env=env,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        windows, end, peak_kb = map(int, out.stdout.split()[-3:])
        assert end == seconds and windows == (seconds - 4) // 15 + 1
        peaks[seconds] = peak_kb
    assert peaks[3600] - peaks[60] < 60_000, peaks


@pytest.mark.workflow
def test_the_predict_rule_writes_a_timeline_per_video(tiny_run):
    folder = tiny_run / "predict/long"
    folder.mkdir(parents=True, exist_ok=True)
    videos = sorted((tiny_run / "results/demo/UCF-101").glob("*/*.avi"))[:2]
    for video in videos:
        (folder / video.name).write_bytes(video.read_bytes())
    (folder / "broken.avi").write_bytes(videos[0].read_bytes()[:500])
    (tiny_run / "timeline.yaml").write_text("predict: {timeline: {enabled: true, stride: 0.1}}\n")
    out = snakemake(
        tiny_run, "results/predict/long.tsv", "--configfile", "tiny.yaml", "timeline.yaml"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    made = tiny_run / "results/predict/long"
    for video in videos:
        segs = read_tsv(made / video.stem / "segments.tsv")
        assert len(segs) >= 1 and segs["start"].iloc[0] == 0
        assert (made / video.stem / "timeline.png").exists()
    assert not (made / "broken").exists()
    assert "broken.avi: no timeline" in (tiny_run / "logs/predict/long.log").read_text()


def test_the_timeline_benchmark_runs(sample, tmp_path):
    """A seconds-long run of bench/timeline.py: three real clips a class, a
    small backbone, one joined video."""
    from conftest import make_backbone_file

    real3 = sample.parent / "ucf101-real3-train/UCF-101"
    if not real3.is_dir():
        pytest.skip(f"real training clips not found at {real3}")
    backbone = make_backbone_file(tmp_path / "small.keras")
    cmd = [sys.executable, str(REPO / "bench/timeline.py"), "--limit", "3"]
    cmd += ["--clips", str(real3), "--sample", str(sample / "UCF-101"), "--backbone", str(backbone)]
    cmd += ["--size", "32", "--frames", "4", "--work", str(tmp_path / "work")]
    cmd += ["--out", str(tmp_path / "table.md"), "--figure", str(tmp_path / "timeline.png")]
    out = subprocess.run(["timeout", "-k", "10", "300", *cmd], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    table = (tmp_path / "table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("|")][2:]
    assert len(rows) == 6  # one stride x 3 minimum durations x without and with rejection
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert all(0 <= float(c) <= 1 for c in cells[3:6]) and float(cells[6]) > 0
    assert "joined-0-0.avi" in out.stdout and " unknown " in out.stdout
    assert (tmp_path / "timeline.png").read_bytes()[:4] == b"\x89PNG"
