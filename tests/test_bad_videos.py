"""Videos that ffmpeg reads well but that looked bad: a variable frame rate
(phones, browsers), an AVI header that overstates its frames, and tags whose
line breaks imitate ffmpeg's log. Each is made here, small, and must read as
what it holds: the same frames, duration and windows as any clip, and the
same in a shard. A video that really is short of its header (cut, empty)
must still be told apart, with the reason."""

import functools
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from actionrec import predict, video
from actionrec.extract import extract_shard
from actionrec.video import BadVideo, decode_clip, find_ffmpeg, sample_indices, windows
from test_video import ramp_video

W, H = 64, 48
T, S = 6, 16
STEP = 6  # grey levels between frames: up to 42 frames stay below 256


@functools.cache
def encoders() -> str:
    return subprocess.run(
        [find_ffmpeg(), "-hide_banner", "-encoders"], capture_output=True, text=True
    ).stdout


def needs(encoder: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        f" {encoder} " not in encoders(), reason=f"this ffmpeg has no {encoder} encoder"
    )


def encode(
    path: Path, n: int, args: list[str], vf: str = "null", fps: int = 25, first: Sequence[str] = ()
) -> Path:
    """``n`` flat grey frames of W x H, frame k at level STEP * k, encoded by
    ffmpeg with output ``args`` (passed as they are: a tag may hold a line
    break), after the inputs ``first`` gives if any; ``vf`` may retime them."""
    frames = b"".join(bytes([STEP * k % 256]) * (W * H) for k in range(n))
    cmd = [find_ffmpeg(), "-v", "error", "-y", *first, "-f", "rawvideo", "-pix_fmt", "gray"]
    cmd += ["-s", f"{W}x{H}", "-r", str(fps), "-i", "pipe:", "-vf", vf, "-pix_fmt", "yuv420p"]
    subprocess.run([*cmd, *args, str(path)], input=frames, check=True, capture_output=True)
    return path


def replace_bytes(path: Path, old: bytes, new: bytes) -> Path:
    """Overwrite ``old`` with ``new``, of the same length (so no size field changes)."""
    assert len(old) == len(new)
    data = path.read_bytes()
    assert data.count(old) == 1, old
    path.write_bytes(data.replace(old, new))
    return path


def avi_claiming(path: Path, frames: int) -> Path:
    """An AVI whose main header (avih) announces ``frames`` frames."""
    data = bytearray(path.read_bytes())
    at = data.find(b"avih") + 24
    data[at : at + 4] = frames.to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


# --- Variable frame rate -------------------------------------------------------
# 40 frames over 2.67 s: 30 fps, then 10 fps (low light) for 2 s, then 30 fps
# again. The header states 30 fps (or 15, the average); 2.67 x 30 = 80 frames.


def vfr_time(k: int) -> float:
    if k < 10:
        return k / 30
    return 1 / 3 + (k - 10) / 10 if k < 30 else 7 / 3 + (k - 30) / 30


VFR = "setpts='if(lt(N,10),N/30,if(lt(N,30),1/3+(N-10)/10,7/3+(N-30)/30))/TB'"
VFR_WINDOWS = np.bincount([int(vfr_time(k)) for k in range(40)]).tolist()  # by the second
VFR_ARGS = ["-fps_mode", "vfr"]


def vfr(codec: str, ext: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        return encode(folder / f"vfr.{ext}", 40, ["-c:v", codec, *VFR_ARGS], VFR, 30)

    return make


def vfr_remuxed(folder: Path) -> Path:
    """An MP4 copied into MKV: the header states the average rate (15 fps),
    slower than its fastest frames (30 fps)."""
    mp4 = encode(folder / "vfr.mp4", 40, ["-c:v", "mpeg4", *VFR_ARGS], VFR, 30)
    mkv = folder / "vfr-remuxed.mkv"
    subprocess.run(
        [find_ffmpeg(), "-v", "error", "-y", "-i", str(mp4), "-c", "copy", str(mkv)], check=True
    )
    return mkv


# --- Tags that imitate ffmpeg's log ---------------------------------------------

ERROR = "x\n[error] boom"
DURATION = "x\n[info]   Duration: 10:00:00.00, start: 0.000000, bitrate: 1 kb/s"
STREAM = "x\n[info]   Stream #0:0: Video: mpeg4, yuv420p, 64x48, 1000 fps, 1000 tbr, 1k tbn"
# The whole rest of a run: mapping, output, final statistics, decoder's count.
REST = (
    "x\n[info] Stream mapping:\n[info] Output #0, rawvideo, to 'pipe:':\n"
    "[info]   Stream #0:0: Video: rawvideo, rgb24, 16x16, 1000 fps, 1000k tbn\n"
    "[info] frame=  400 fps=0.0 q=-0.0 Lsize=  300KiB time=10:00:00.00 bitrate=1kbits/s\n"
    "[in#0/avi @ 0x1] [verbose]   Input stream #0:0 (video): 400 packets read "
    "(400 bytes); 400 frames decoded; 0 decode errors;\n[error] boom"
)


def tagged(ext: str, *tags: str, stream: bool = False, value: str = "v") -> Callable:
    """A 31-frame 25 fps clip with each of ``tags`` as a key of the file's
    (else its video stream's) metadata."""

    def make(folder: Path) -> Path:
        where = "-metadata:s:v:0" if stream else "-metadata"
        args = ["-c:v", "mpeg4", "-movflags", "use_metadata_tags"]
        for tag in tags:
            args += [where, f"{tag}={value}"]
        return encode(folder / f"tagged.{ext}", 31, args)

    return make


def tagged_value(folder: Path) -> Path:
    """Line breaks that ffmpeg leaves in a value, but Python's splitlines takes."""
    args = ["-c:v", "mpeg4", "-metadata", "title=a\u2028[error] boom\x85[error] bang"]
    return encode(folder / "value.mkv", 31, args)


def mkv_tag_bytes(folder: Path) -> Path:
    """MKV's muxer writes tag names in capitals; a file's own bytes need not be."""
    path = encode(folder / "raw-tag.mkv", 31, ["-c:v", "mpeg4", "-metadata", f"{ERROR}=v"])
    return replace_bytes(path, b"X\n[ERROR]_BOOM", ERROR.encode())


def audio_first(folder: Path) -> Path:
    """An audio stream before the video, whose tag imitates the video's line
    with another rate, printed before the real one."""
    tag = "x\n[info]   Stream #0:1: Video: mpeg4, yuv420p, 64x48, 1000 fps, 1000 tbr, 1k tbn"
    sound = ["-f", "lavfi", "-i", "sine=duration=1.24:sample_rate=8000"]
    args = ["-map", "0:a", "-map", "1:v", "-c:a", "pcm_s16le", "-c:v", "mpeg4"]
    args += ["-metadata:s:a:0", f"{tag}=v"]
    return encode(folder / "audio-first.nut", 31, args, first=sound)


def language(folder: Path) -> Path:
    """A language is printed inside the stream's own line: it can cut that
    line and put another stream, of another rate, where it was."""
    lang = "x\n[info]   Stream #0:1: Video: mpeg4, 64x48, 1000 fps, 1000 tbr\nq"
    args = ["-c:v", "mpeg4", "-metadata:s:v:0", f"language={lang}"]
    return encode(folder / "language.mkv", 31, args)


# --- An AVI header that overstates its frames ------------------------------------


def avi_overstated(folder: Path) -> Path:
    """31 frames whose header announces 1000: the frames ffmpeg is first asked
    for are all past the end."""
    ramp_video(folder / "overstated.avi", 31)
    return avi_claiming(folder / "overstated.avi", 1000)


@dataclass
class Good:
    """A file that must read as the ``frames`` frames and ``seconds`` it
    holds, in windows of 1 s of ``per_window`` frames each."""

    make: Callable[[Path], Path]
    frames: int
    seconds: float
    per_window: list[int]
    step: int = STEP  # grey levels between frames
    fps: float | None = 25.0  # None: a variable rate, of no one value


GOOD = {
    "vfr-mkv": Good(vfr("mpeg4", "mkv"), 40, 2.67, VFR_WINDOWS, fps=None),
    "vfr-mkv-remuxed": Good(vfr_remuxed, 40, 2.67, VFR_WINDOWS, fps=None),
    "vfr-webm-vp8": pytest.param(
        Good(vfr("libvpx", "webm"), 40, 2.67, VFR_WINDOWS, fps=None), marks=needs("libvpx")
    ),
    "vfr-webm-vp9": pytest.param(
        Good(vfr("libvpx-vp9", "webm"), 40, 2.67, VFR_WINDOWS, fps=None),
        marks=needs("libvpx-vp9"),
    ),
    "avi-header-1000-frames": Good(avi_overstated, 31, 1.24, [25, 6], step=8),
    "tag-error-mp4": Good(tagged("mp4", ERROR), 31, 1.24, [25, 6]),
    "tag-duration-mp4": Good(tagged("mp4", DURATION), 31, 1.24, [25, 6]),
    "tag-stream-mp4": Good(tagged("mp4", STREAM), 31, 1.24, [25, 6]),
    "tag-rest-of-run-mov": Good(tagged("mov", REST), 31, 1.24, [25, 6]),
    "tag-all-nut": Good(tagged("nut", ERROR, DURATION, STREAM, REST), 31, 1.24, [25, 6]),
    "stream-tag-nut": Good(tagged("nut", STREAM, DURATION, stream=True), 31, 1.24, [25, 6]),
    "audio-stream-tag-nut": Good(audio_first, 31, 1.24, [25, 6]),
    "tag-bytes-mkv": Good(mkv_tag_bytes, 31, 1.24, [25, 6]),
    "value-line-separators-mkv": Good(tagged_value, 31, 1.24, [25, 6]),
    "language-mkv": Good(language, 31, 1.24, [25, 6]),
}


class ScoresEqually:
    """Stands in for a clip model of T frames of S x S and two classes."""

    input_shape = (None, T, S, S, 3)


def scores_equally(
    model: ScoresEqually, clips: np.ndarray, views: int, per_segment: int | None = None
) -> np.ndarray:
    """predict's scoring of a batch, without the TensorFlow that views need."""
    return np.full((len(clips), 2), 0.5)


def shard_of(paths: list[Path], folder: Path) -> pd.DataFrame:
    rows = pd.DataFrame(
        {
            "clip_id": [f"clip{i}" for i in range(len(paths))],
            "path": [str(p) for p in paths],
            "class": "A",
            "label": 0,
            "group": [f"A_g{i:02d}" for i in range(len(paths))],
        }
    )
    return extract_shard(rows, folder / "shard.h5", folder / "shard.tsv", frames=T, size=S)


@pytest.mark.parametrize("case", GOOD.values(), ids=GOOD.keys())
def test_a_complete_video_reads_as_what_it_holds(tmp_path: Path, monkeypatch, case: Good):
    path = case.make(tmp_path)
    clip = decode_clip(path, T, S)
    assert clip.source_frames == case.frames
    got = [int(round(float(f.mean()) / case.step)) for f in clip.frames]
    assert got == sample_indices(case.frames, T).tolist()
    # Muxers differ on whether the last frame's own duration counts.
    assert clip.duration == pytest.approx(case.seconds, abs=0.05)
    assert clip.fps == case.fps if case.fps else 10 <= clip.fps <= 30

    assert [n for _, n in windows(path, 2, S, 1.0)] == case.per_window
    monkeypatch.setattr(predict, "view_scores", scores_equally)
    _, n_windows, n_frames = predict.classify_video(ScoresEqually(), path, window_seconds=1.0)
    assert (n_windows, n_frames) == (len(case.per_window), case.frames)

    good = tmp_path / "good.avi"
    ramp_video(good, 12)
    report = shard_of([good, path], tmp_path)
    assert report["status"].tolist() == ["ok", "ok"], report["reason"].tolist()
    assert report["source_frames"].tolist() == [12, case.frames]
    with h5py.File(tmp_path / "shard.h5") as f:
        np.testing.assert_array_equal(f["frames"][0], decode_clip(good, T, S).frames)
        np.testing.assert_array_equal(f["frames"][1], clip.frames)


# --- What is really short of its header is still told -------------------------------


def cut(ext: str, args: list[str], n: int = 50, vf: str = "null") -> Callable[[Path], Path]:
    """``n`` frames, the file cut at 60% of its bytes."""

    def make(folder: Path) -> Path:
        path = encode(folder / f"whole.{ext}", n, args, vf, 30 if vf != "null" else 25)
        data = path.read_bytes()
        (folder / f"cut.{ext}").write_bytes(data[: len(data) * 6 // 10])
        return folder / f"cut.{ext}"

    return make


def avi_without_frames(folder: Path) -> Path:
    path = folder / "empty.avi"
    cmd = [find_ffmpeg(), "-v", "error", "-f", "lavfi", "-i", f"color=size={W}x{H}:rate=25"]
    subprocess.run([*cmd, "-frames:v", "0", "-c:v", "mpeg4", str(path)], check=True)
    return avi_claiming(path, 40)


BAD = {
    "cut-mkv": (cut("mkv", ["-c:v", "mpeg4"]), "^truncated: "),
    "cut-mp4": (cut("mp4", ["-c:v", "mpeg4", "-movflags", "faststart"]), "^truncated: "),
    "cut-webm": pytest.param(
        cut("webm", ["-c:v", "libvpx"]), "^truncated: ", marks=needs("libvpx")
    ),
    # A variable rate is no excuse for frames that stop well before the end.
    "cut-vfr-mkv": (cut("mkv", ["-c:v", "mpeg4", *VFR_ARGS], 40, VFR), "^truncated: "),
    "avi-header-40-frames-file-none": (
        avi_without_frames,
        "^no frames decoded: the AVI header announces 40 frames, but the file holds none",
    ),
}


@pytest.mark.parametrize("make, reason", BAD.values(), ids=BAD.keys())
def test_a_video_short_of_its_header_is_reported(tmp_path: Path, make: Callable, reason: str):
    path = make(tmp_path)
    with pytest.raises(BadVideo, match=reason):
        decode_clip(path, T, S)
    good = tmp_path / "good.avi"
    ramp_video(good, 12)
    report = shard_of([path, good], tmp_path)
    assert report["status"].tolist() == ["skipped", "ok"]
    assert report["reason"].str.contains(reason)[0]


# --- The log itself ------------------------------------------------------------------


def ffmpeg_log(duration: str, tag_lines: str) -> str:
    """A run's log as ffmpeg writes it, with ``tag_lines`` where a tag's line
    breaks put them, in the input's header."""
    return (
        "[info] Input #0, matroska,webm, from 'input.mkv':\n[info]   Metadata:\n"
        f"[info]     {tag_lines}  : v\n"
        f"[info]   Duration: {duration}, start: 0.000000, bitrate: 60 kb/s\n"
        "[info]   Stream #0:0: Video: mpeg4, yuv420p, 64x48, 25 fps, 25 tbr, 1k tbn\n"
        "[info] Stream mapping:\n[info]   Stream #0:0 -> #0:0 (mpeg4 (native) -> rawvideo)\n"
        "[info] Output #0, rawvideo, to 'pipe:':\n"
        "[info]   Stream #0:0: Video: rawvideo, rgb24, 16x16, q=2-31, 25 fps, 1000k tbn\n"
        "[info] frame=   31 fps=0.0 q=-0.0 Lsize=  23KiB time=00:00:01.24 bitrate=1kbits/s\n"
    )


@pytest.mark.parametrize(
    "duration, tag_lines, seconds",
    [
        ("00:00:01.24", "x", 1.24),
        ("00:00:01.24", REST, 1.24),
        ("00:00:01.24", DURATION + "\n" + STREAM, float("nan")),
        ("N/A", DURATION, float("nan")),
        ("00:00:01.24", "x\n[info]   Duration: 00:00:01.24, start: 0.000000", 1.24),
    ],
    ids=["plain", "rest-of-run", "duration-and-stream", "no-duration", "same-duration"],
)
def test_no_tag_changes_what_the_log_says(duration: str, tag_lines: str, seconds: float):
    # A forged line can only add to ffmpeg's: a duration stated two ways is unknown.
    log = ffmpeg_log(duration, tag_lines)
    fps, got = video.header_info(log)
    assert fps == 25.0
    assert got == pytest.approx(seconds, nan_ok=True)
    assert video.error_lines(log) == []
