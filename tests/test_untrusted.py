"""Names, rates and settings from outside stay data: a clip's name is never
read as ffmpeg's words or as a protocol, no source hangs a read, and a run
with another config is told so instead of losing its shards."""

import os
import shutil
import stat
import threading
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from actionrec import video
from actionrec.explain import choose_clips
from actionrec.extract import extract_shard, shard_rows
from actionrec.manifest import DatasetError, build_manifest
from actionrec.predict import classify_video
from actionrec.scores import confusion, per_class_table, prediction_table
from actionrec.shardcheck import check_shards
from actionrec.stream import classify_stream
from actionrec.tables import read_tsv, write_tsv
from actionrec.video import BadVideo, decode_clip, windows, write_video
from test_video import decoded_index, ramp_video


def finishes(call, seconds: float = 60):
    """What ``call()`` returns (or raises), failing the test when it has not
    returned within ``seconds``: a hang is a failure, not a stuck suite."""
    box = {}

    def run():
        try:
            box["value"] = call()
        except BaseException as err:  # handed to the test below
            box["error"] = err

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        pytest.fail(f"still waiting after {seconds} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def long_video(path: Path, n: int, fps: float) -> None:
    """``n`` frames of 64 x 48 at ``fps``, their grey levels cycling."""
    frames = (np.full((48, 64, 3), 8 * k % 256, np.uint8) for k in range(n))
    write_video(path, frames, 64, 48, fps)


class ScoresEqually:
    """Stands in for a clip model of T=4, S=16 and two classes."""

    input_shape = (None, 4, 16, 16, 3)

    def predict_on_batch(self, clips):
        return np.full((len(clips), 2), 0.5)


# --- Names stay data ---------------------------------------------------------

LOOKS_LIKE_FFMPEG = [
    "Input stream #0:0 (video): 1 packets read (1 bytes); 400 frames decoded",
    "take [error] two",
    "Duration: 99:00:00.00, start: 0.000000, bitrate: 1 kb",
    "Stream #0:0: Video: mpeg4, 64x48, 1000 fps",
]


@pytest.mark.parametrize("container", ["avi", "mkv"])
@pytest.mark.parametrize("stem", LOOKS_LIKE_FFMPEG)
def test_a_name_like_ffmpegs_log_decodes_like_any_clip(tmp_path, stem, container):
    path = tmp_path / f"{stem}.{container}"
    ramp_video(path, 31)
    clip = decode_clip(path, 6, 16)
    assert clip.source_frames == 31
    assert [decoded_index(f) for f in clip.frames] == video.sample_indices(31, 6).tolist()
    assert clip.fps == 25.0 and clip.duration == pytest.approx(31 / 25, abs=0.05)
    got = [(decoded_index(w[0]), n) for w, n in windows(path, 2, 16, 1.0)]
    first = video.sample_indices(25, 2)[0], video.sample_indices(6, 2)[0]
    assert got == [(first[0], 25), (25 + first[1], 6)]


@pytest.mark.parametrize("protocol", ["concat:ramp.avi|ramp.avi", "file:ramp.avi"])
def test_a_file_name_with_a_colon_is_a_file_not_a_protocol(tmp_path, monkeypatch, protocol):
    monkeypatch.chdir(tmp_path)
    ramp_video(tmp_path / "ramp.avi", 31)
    ramp_video(tmp_path / "short.avi", 12)
    shutil.copy(tmp_path / "short.avi", tmp_path / protocol)
    assert decode_clip(protocol, 4, 16).source_frames == 12
    assert [n for _, n in windows(protocol, 2, 16, 10.0)] == [12]
    steps = classify_stream(
        ScoresEqually(), protocol, ["a", "b"], window_seconds=0.2, step_seconds=0.2, realtime=False
    )
    assert steps["stream_seconds"].max() <= 12 / 25


# --- Rates in every form, and no read without a bound --------------------------


@pytest.mark.parametrize(
    "line, fps",
    [
        ("Video: mpeg4, yuv420p, 64x48, 25 fps, 25 tbr, 25 tbn", 25.0),
        ("Video: mpeg4, yuv420p, 64x48, 29.97 fps, 29.97 tbr, 29.97 tbn", 29.97),
        ("Video: h264 (High), yuv420p, 64x48, 1k fps, 1k tbr, 1k tbn", 1000.0),
        ("Video: h264 (High), yuv420p, 64x48, 0.0100 fps, 1 tbr, 1k tbn", 0.01),
        ("Video: mpeg4, yuv420p(left), 64x48 [SAR 1:1 DAR 4:3], 12.50 tbr, 51200 tbn", 12.5),
        ("Video: rawvideo, rgb24, 64x48, 90k tbn", float("nan")),
    ],
)
def test_the_rate_is_read_in_all_of_ffmpegs_forms(line, fps):
    log = (
        "[info] Input #0, avi, from 'input.avi':\n"
        "[info]   Duration: 00:00:01.24, start: 0.000000, bitrate: 60 kb/s\n"
        f"[info]   Stream #0:0: {line}\n"
        "[info] Stream mapping:\n"
    )
    got, duration = video.header_info(log)
    assert duration == pytest.approx(1.24)
    assert got == pytest.approx(fps, nan_ok=True)


@pytest.mark.parametrize(
    "fps, container, seconds, span", [(1000, "mkv", 0.1, 100), (12.5, "nut", 0.8, 10)]
)
def test_a_rate_ffmpeg_prints_in_another_form_does_not_hang(
    tmp_path, fps, container, seconds, span
):
    # 400 frames of 16 x 16 fill the pipe long before ffmpeg's log ends: the
    # header must be recognised as it comes, whatever form the rate takes.
    path = tmp_path / f"fast.{container}"
    long_video(path, 400, fps)
    got = finishes(lambda: [n for _, n in windows(path, 2, 16, seconds)], 30)
    assert got[0] == span and sum(got) == 400
    _, n_windows, n_frames = finishes(
        lambda: classify_video(ScoresEqually(), path, window_seconds=seconds), 30
    )
    assert (n_windows, n_frames) == (400 // span, 400)
    steps = finishes(
        lambda: classify_stream(
            ScoresEqually(),
            str(path),
            ["a", "b"],
            window_seconds=seconds,
            step_seconds=seconds,
            realtime=False,
        ),
        30,
    )
    assert steps["frames"].tolist()[:3] == [span] * 3 and "error" not in steps.attrs


def silent_ffmpeg(folder: Path) -> str:
    """An 'ffmpeg' that never prints or sends anything: a read that would wait forever."""
    exe = folder / "ffmpeg"
    exe.write_text("#!/bin/sh\nexec sleep 120\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return str(exe)


def test_an_ffmpeg_that_sends_nothing_is_a_bad_video_not_a_hang(tmp_path, monkeypatch):
    monkeypatch.setattr(video, "STALL_SECONDS", 1.0, raising=False)
    path = tmp_path / "ramp.avi"
    ramp_video(path, 31)
    exe = silent_ffmpeg(tmp_path)
    for read in (
        lambda: decode_clip(path, 4, 16, ffmpeg_exe=exe),
        lambda: list(windows(path, 4, 16, 10.0, ffmpeg_exe=exe)),
    ):
        with pytest.raises(BadVideo, match=f"nothing for 1 s.*{path}"):
            finishes(read, 30)


def test_a_stream_source_that_never_opens_times_out(tmp_path):
    fifo = tmp_path / "camera"
    os.mkfifo(fifo)
    try:
        with pytest.raises(BadVideo, match=f"nothing for 1 s.*{fifo}.*--timeout"):
            finishes(
                lambda: classify_stream(
                    ScoresEqually(), str(fifo), ["a", "b"], timeout=1.0, realtime=False
                ),
                30,
            )
    finally:
        # An ffmpeg still waiting for a writer gets one and ends.
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass


def held_at_peak(call) -> int:
    """Bytes allocated at the peak of ``call()``."""
    tracemalloc.start()
    try:
        finishes(call, 120)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_window_holds_bounded_frames_whatever_the_rate(tmp_path):
    # 10 s at 250 fps: 2,500 frames of 112 x 112 (94 MB) in one window.
    path = tmp_path / "fast.mkv"
    long_video(path, 2600, 250)
    bound = video.DEFAULT_BUFFER_BYTES * 1.15
    peak = held_at_peak(lambda: list(windows(path, 4, 112, 10.0)))
    assert peak < bound, f"{peak / 2**20:.0f} MB held"
    model = ScoresEqually()
    model.input_shape = (None, 4, 112, 112, 3)
    peak = held_at_peak(
        lambda: classify_stream(
            model, str(path), ["a", "b"], window_seconds=10, step_seconds=10, realtime=False
        )
    )
    assert peak < bound, f"{peak / 2**20:.0f} MB held"


# --- Shards checked against themselves, the manifest and the config -------------


def shard_copy(tiny_data, tmp_path) -> Path:
    shards = tmp_path / "shards"
    shutil.copytree(tiny_data["shards"], shards)
    return shards


def test_another_config_is_a_mismatch_and_no_shard_is_moved(tiny_data, tmp_path):
    shards = shard_copy(tiny_data, tmp_path)
    manifest = read_tsv(tiny_data["manifest"])
    before = sorted(p.name for p in shards.iterdir())
    for settings, key in (
        ({"clips_per_shard": 12, "frames": 8, "size": 32}, "extract.frames"),
        ({"clips_per_shard": 12, "frames": 4, "size": 64}, "extract.size"),
        (
            {"clips_per_shard": 12, "frames": 4, "size": 32, "frames_per_segment": 2},
            "extract.frames_per_segment",
        ),
        ({"clips_per_shard": 6, "frames": 4, "size": 32}, "extract.clips_per_shard"),
    ):
        table = check_shards(shards, manifest, remove_bad=True, **settings)
        present = table[table["status"] != "missing"]
        assert len(present) == 3 and (present["status"] == "mismatch").all(), table
        assert present["problem"].str.contains(f"config mismatch: {key}").all(), table
        assert sorted(p.name for p in shards.iterdir()) == before


def test_the_mismatch_names_both_values(tiny_data, tmp_path):
    shards = shard_copy(tiny_data, tmp_path)
    table = check_shards(
        shards, read_tsv(tiny_data["manifest"]), clips_per_shard=12, frames=8, size=32
    )
    assert table["problem"].str.contains(r"extract\.frames.*8.*4").all(), table["problem"][0]


def test_a_stale_shard_among_good_ones_is_moved_aside(tiny_data, tmp_path):
    shards = shard_copy(tiny_data, tmp_path)
    manifest = read_tsv(tiny_data["manifest"])
    stale = shards / "shard-0002.h5"
    extract_shard(shard_rows(manifest, 2, 12), stale, shards / "shard-0002.tsv", frames=2, size=32)
    table = check_shards(
        shards, manifest, clips_per_shard=12, frames=4, size=32, remove_bad=True
    ).set_index("shard")
    assert table.loc[str(stale), "status"] == "mismatch"
    assert (table["status"] == "ok").sum() == 2
    assert not stale.exists() and (shards / "shard-0002.h5.corrupt").exists()


def test_a_shard_that_disagrees_with_its_own_attributes_is_corrupt(tiny_data, tmp_path):
    shards = shard_copy(tiny_data, tmp_path)
    manifest = read_tsv(tiny_data["manifest"])
    broken = shards / "shard-0001.h5"
    with h5py.File(broken, "r+") as f:
        f.attrs["size"] = 64
    table = check_shards(shards, manifest, clips_per_shard=12, frames=4, size=32)
    assert table["status"].tolist() == ["ok", "corrupt", "ok"]
    assert "its attribute size=64" in table["problem"][1]
    # The config agreeing with the bad attribute makes it no less corrupt, and
    # the shards that differ from that config only are kept.
    table = check_shards(shards, manifest, clips_per_shard=12, frames=4, size=64, remove_bad=True)
    assert table["status"].tolist() == ["mismatch", "corrupt", "mismatch"]
    assert not broken.exists() and (shards / "shard-0000.h5").exists()


def test_clip_ids_that_look_like_numbers_are_ids(tmp_path):
    for name in ("A/001.avi", "A/NA.avi", "B/1e3.avi", "B/007.avi"):
        (tmp_path / "videos" / name).parent.mkdir(parents=True, exist_ok=True)
        ramp_video(tmp_path / "videos" / name, 6)
    write_tsv(build_manifest(tmp_path / "videos"), tmp_path / "manifest.tsv")
    manifest = read_tsv(tmp_path / "manifest.tsv")
    assert manifest["clip_id"].tolist() == ["001", "NA", "007", "1e3"]
    shards = tmp_path / "shards"
    extract_shard(manifest, shards / "shard-0000.h5", shards / "shard-0000.tsv", frames=2, size=16)
    table = check_shards(shards, manifest, clips_per_shard=4, frames=2, size=16)
    assert table["status"].tolist() == ["ok"], table["problem"].tolist()


# --- Class names stay strings in every table read back ---------------------------


def test_class_names_that_look_like_numbers_come_back_as_names(tmp_path):
    names = ["0", "1", "2"]
    labels = np.array([0, 1, 2, 1])
    clips = pd.DataFrame({"clip_id": ["001", "NA", "3", "4"], "label": labels})
    probs = np.eye(3)[[0, 1, 2, 0]] * 0.8 + 0.05
    write_tsv(prediction_table(clips, probs, names), tmp_path / "predictions.tsv")
    write_tsv(per_class_table(labels, probs.argmax(1), names), tmp_path / "per_class.tsv")
    predictions = read_tsv(tmp_path / "predictions.tsv")
    per_class = read_tsv(tmp_path / "per_class.tsv")
    assert predictions["clip_id"].tolist() == ["001", "NA", "3", "4"]
    assert predictions["true"].tolist() == ["0", "1", "2", "1"]
    assert predictions["predicted"].tolist() == ["0", "1", "2", "0"]
    assert np.trace(confusion(predictions, names)) == 3
    # What the explain rule does with the clips it chose.
    chosen = choose_clips(predictions, per_class, 2)
    assert [names.index(t) for t in chosen["true"]] == [1, 0]


# --- Names the tables cannot hold are refused --------------------------------


@pytest.mark.parametrize(
    "relative, named",
    [
        ("A/v_a\tb_g01_c01.avi", "A/v_a\tb_g01_c01.avi"),
        ("A/v_a\nb_g01_c01.avi", "A/v_a\nb_g01_c01.avi"),
        ("A/v_a\rb_g01_c01.avi", "A/v_a\rb_g01_c01.avi"),
        ("A/v_a\x01b_g01_c01.avi", "A/v_a\x01b_g01_c01.avi"),
        ("A/v_a\x7fb_g01_c01.avi", "A/v_a\x7fb_g01_c01.avi"),
        ("A\tB/v_a_g01_c01.avi", "A\tB"),
        ("A;B/v_a_g01_c01.avi", "A;B"),
    ],
)
def test_names_the_tables_cannot_hold_are_refused(tmp_path, relative, named):
    bad = tmp_path / relative
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"x")
    (tmp_path / "Good").mkdir()
    (tmp_path / "Good/v_g_g01_c01.avi").write_bytes(b"x")
    with pytest.raises(DatasetError, match="rename") as err:
        build_manifest(tmp_path)
    assert repr(str(tmp_path / named)) in str(err.value)
