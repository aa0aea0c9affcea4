import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from actionrec.video import BadVideo, decode_clip, sample_indices, windows, write_video
from conftest import count_frames_with_ffmpeg


def ramp_video(path: Path, n: int, w: int = 64, h: int = 48, fps: float = 25.0) -> None:
    """Frame k is a flat grey of level 8 * k (up to 248): its index is readable after decoding."""
    write_video(path, (np.full((h, w, 3), 8 * k, np.uint8) for k in range(n)), w, h, fps)


def decoded_index(frame: np.ndarray) -> int:
    return int(round(float(frame.mean()) / 8))


def test_sample_indices_centre_of_equal_segments():
    assert sample_indices(100, 4).tolist() == [12, 37, 62, 87]
    assert sample_indices(8, 8).tolist() == list(range(8))
    # Fewer source frames than T: frames repeat, in order.
    assert sample_indices(3, 8).tolist() == [0, 0, 0, 1, 1, 2, 2, 2]


@pytest.mark.parametrize("container", ["avi", "mkv"])
def test_frames_are_sampled_uniformly_over_the_clip(tmp_path, container):
    # AVI: the header's frame count lets ffmpeg pick the frames; MKV: all stream past.
    ramp_video(tmp_path / f"ramp.{container}", 31)
    clip = decode_clip(tmp_path / f"ramp.{container}", 6, 16)
    assert clip.source_frames == 31
    assert [decoded_index(f) for f in clip.frames] == sample_indices(31, 6).tolist()
    assert not clip.padded
    assert clip.fps == 25.0
    assert clip.duration == pytest.approx(31 / 25, abs=0.05)


def test_short_clip_is_padded_by_repeating_frames(tmp_path):
    ramp_video(tmp_path / "short.avi", 3)
    clip = decode_clip(tmp_path / "short.avi", 8, 16)
    assert clip.padded and clip.source_frames == 3
    assert [decoded_index(f) for f in clip.frames] == [0, 0, 0, 1, 1, 2, 2, 2]


def test_wrong_frame_count_in_the_avi_header_is_corrected(tmp_path):
    path = tmp_path / "ramp.avi"
    ramp_video(path, 31)
    data = bytearray(path.read_bytes())
    at = data.find(b"avih") + 24
    assert int.from_bytes(data[at : at + 4], "little") == 31
    data[at : at + 4] = (40).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    clip = decode_clip(path, 6, 16)
    assert clip.source_frames == 31
    assert [decoded_index(f) for f in clip.frames] == sample_indices(31, 6).tolist()


def test_long_clip_is_sampled_within_a_bounded_buffer(tmp_path):
    ramp_video(tmp_path / "long.mkv", 31)
    # Room for 8 frames of 16x16: the decoder keeps every 4th frame of 31.
    clip = decode_clip(tmp_path / "long.mkv", 4, 16, buffer_bytes=8 * 16 * 16 * 3)
    got = [decoded_index(f) for f in clip.frames]
    want = sample_indices(31, 4)
    assert clip.source_frames == 31
    assert all(abs(g - w) <= 2 for g, w in zip(got, want, strict=True)), (got, want)
    assert got == sorted(got)


@pytest.mark.parametrize("container", ["avi", "mkv"])
def test_a_clip_shorter_than_a_window_gives_the_extracted_frames(tmp_path, container):
    path = tmp_path / f"ramp.{container}"
    ramp_video(path, 23)
    (only, covered), *rest = list(windows(path, 6, 16, window_seconds=10.0))
    assert not rest and covered == 23
    np.testing.assert_array_equal(only, decode_clip(path, 6, 16).frames)


def test_long_video_streams_as_consecutive_windows(tmp_path):
    path = tmp_path / "long.mkv"
    ramp_video(path, 31, fps=10.0)
    # Windows of 1 s at 10 fps: frames 0-9, 10-19, 20-29, then the last frame alone.
    got = [([decoded_index(f) for f in clip], n) for clip, n in windows(path, 2, 16, 1.0)]
    assert got == [([2, 7], 10), ([12, 17], 10), ([22, 27], 10), ([30, 30], 1)]


def test_windows_of_a_bad_video_raise_with_a_reason(tmp_path):
    path = tmp_path / "text.avi"
    path.write_text("not a video\n" * 100)
    with pytest.raises(BadVideo, match="Invalid data"):
        list(windows(path, 4, 16, 10.0))
    with pytest.raises(BadVideo, match="missing"):
        list(windows(tmp_path / "absent.avi", 4, 16, 10.0))


def test_colour_order_is_rgb(tmp_path):
    frame = np.zeros((120, 160, 3), np.uint8)
    frame[:, :80] = (220, 20, 20)  # red on the left
    frame[:, 80:] = (20, 20, 220)  # blue on the right
    write_video(tmp_path / "rb.avi", [frame] * 5, 160, 120)
    out = decode_clip(tmp_path / "rb.avi", 2, 32, resize="stretch").frames[0].astype(int)
    left, right = out[:, :12].mean(axis=(0, 1)), out[:, -12:].mean(axis=(0, 1))
    assert left[0] > 180 and left[2] < 60
    assert right[2] > 180 and right[0] < 60


@pytest.mark.parametrize("resize", ["crop", "pad", "stretch"])
def test_resize_modes_give_square_frames(sample, resize):
    clip = decode_clip(sample / "UCF-101/Archery/v_Archery_g01_c01.avi", 4, 48, resize=resize)
    assert clip.frames.shape == (4, 48, 48, 3) and clip.frames.dtype == np.uint8
    top_row = clip.frames[:, 0].astype(int)
    # 320x240 padded to a square gets black bars above and below; the others do not.
    assert (top_row.max() < 20) == (resize == "pad")


def test_real_clips_decode_with_the_right_frame_count(sample, ffmpeg_exe):
    clips = sorted((sample / "UCF-101").glob("*/*.avi"))[::6] + sorted(sample.glob("other/*.mp4"))
    for path in clips:
        clip = decode_clip(path, 16, 112)
        assert clip.frames.shape == (16, 112, 112, 3)
        assert clip.source_frames == count_frames_with_ffmpeg(ffmpeg_exe, path), path
        assert clip.fps in (25.0, 29.97, 30.0) or path.suffix == ".mp4"
        assert clip.duration == pytest.approx(clip.source_frames / clip.fps, rel=0.05)


def make_bad_videos(folder: Path, good: Path, ffmpeg_exe: str) -> dict[str, Path]:
    """One file of each kind of bad video, next to copies of a good clip."""
    folder.mkdir(parents=True, exist_ok=True)
    data = good.read_bytes()
    bad = {}
    bad["empty"] = folder / "v_Bad_g01_c01.avi"
    bad["empty"].write_bytes(b"")
    bad["truncated"] = folder / "v_Bad_g01_c02.avi"
    bad["truncated"].write_bytes(data[: len(data) * 6 // 10])
    bad["not_video"] = folder / "v_Bad_g01_c03.avi"
    bad["not_video"].write_text("this is a text file, not a video\n" * 50)
    bad["corrupt"] = folder / "v_Bad_g01_c04.avi"
    rng = np.random.default_rng(0)
    garbled = bytearray(data)
    start = len(data) // 3
    garbled[start : start + 20000] = rng.integers(0, 256, 20000, dtype=np.uint8).tobytes()
    bad["corrupt"].write_bytes(bytes(garbled))
    bad["no_video_stream"] = folder / "v_Bad_g01_c05.mkv"
    subprocess.run(
        [
            ffmpeg_exe,
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=1",
            str(bad["no_video_stream"]),
        ],
        check=True,
    )
    return bad


REASONS = {
    "empty": "empty file",
    "truncated": "truncated",
    "not_video": "Invalid data",
    "corrupt": "decode errors",
    "no_video_stream": "no video stream",
}


@pytest.mark.parametrize("kind", sorted(REASONS))
def test_bad_videos_raise_with_a_reason(sample, tmp_path, ffmpeg_exe, kind):
    good = sample / "UCF-101/Archery/v_Archery_g01_c01.avi"
    bad = make_bad_videos(tmp_path, good, ffmpeg_exe)
    with pytest.raises(BadVideo, match=REASONS[kind]):
        decode_clip(bad[kind], 4, 32)


def decode_as_nobody(path: Path) -> str:
    """Try to decode ``path`` in a child process that dropped root's rights
    (root reads any file); returns what the child saw."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_end)
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            decode_clip(path, 4, 32)
            msg = "decoded"
        except BadVideo as err:
            msg = f"BAD {err}"
        except BaseException as err:  # report anything else to the parent
            msg = f"ERROR {err!r}"
        os.write(write_end, msg.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as fh:
        msg = fh.read()
    os.waitpid(pid, 0)
    return msg


def test_unreadable_file_is_reported():
    # Outside pytest's private tmp folder, so that only the file's own mode bars it.
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        path = Path(folder) / "locked.avi"
        path.write_bytes(b"RIFF....AVI ")
        path.chmod(0)
        assert decode_as_nobody(path) == "BAD unreadable: Permission denied"
