"""Decoding and encoding video with ffmpeg, through ffmpeg-python.

Only the ``ffmpeg`` binary is needed (no ffprobe): the clip's frame rate and
duration are read from the header ffmpeg prints while it decodes, and the
frame count is the number of frames it actually delivers.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np

RESIZE_MODES = ("crop", "pad", "stretch")
# Frames kept in memory while one clip streams past, in bytes. Clips whose
# decoded frames fit are sampled exactly; longer ones from every k-th frame.
DEFAULT_BUFFER_BYTES = 64 * 2**20
# A clip that yields fewer frames than this share of what its header
# announces is reported as truncated.
TRUNCATION_TOLERANCE = 0.9


class BadVideo(Exception):
    """A clip that cannot be used; the message says why."""


@dataclass
class Clip:
    """T frames sampled from one clip, with what was measured while decoding."""

    frames: np.ndarray  # uint8 [T, S, S, 3], RGB
    source_frames: int  # frames the decoder delivered
    fps: float  # from the container header, NaN when unknown
    duration: float  # seconds, from the header, else source_frames / fps
    padded: bool  # fewer than T source frames: some frames repeat


def find_ffmpeg(explicit: str | None = None) -> str:
    """The ffmpeg binary: ``explicit`` if given, else the one on PATH, else
    the binary that the imageio-ffmpeg package ships."""
    if explicit:
        if shutil.which(explicit) is None:
            raise FileNotFoundError(
                f"ffmpeg binary {explicit!r} (extract.ffmpeg) was not found or is "
                "not executable; set it to a valid path or to null to use the "
                "default"
            )
        return explicit
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    try:
        import imageio_ffmpeg
    except ImportError as err:  # pragma: no cover - depends on the install
        raise FileNotFoundError(
            "no ffmpeg found: install it (apt install ffmpeg, conda install "
            "ffmpeg) or pip install imageio-ffmpeg"
        ) from err
    return imageio_ffmpeg.get_ffmpeg_exe()


def scale_filter(size: int, resize: str) -> str:
    """The ffmpeg filter that turns any frame into ``size`` x ``size``.

    crop: scale the shorter side to ``size``, cut the centre square;
    pad: scale the longer side to ``size``, pad with black bars;
    stretch: scale both sides to ``size``, ignoring the aspect ratio.
    """
    s = int(size)
    if resize == "crop":
        return f"scale={s}:{s}:force_original_aspect_ratio=increase:flags=area,crop={s}:{s}"
    if resize == "pad":
        return (
            f"scale={s}:{s}:force_original_aspect_ratio=decrease:flags=area,"
            f"pad={s}:{s}:(ow-iw)/2:(oh-ih)/2"
        )
    if resize == "stretch":
        return f"scale={s}:{s}:flags=area"
    raise ValueError(f"resize must be one of {RESIZE_MODES}, not {resize!r}")


def sample_indices(n_source: int, n_out: int) -> np.ndarray:
    """Indices of ``n_out`` frames spread uniformly over ``n_source``: the
    centre frame of each of ``n_out`` equal segments. With fewer source
    frames than ``n_out`` some indices repeat."""
    if n_source < 1:
        raise ValueError("a clip needs at least one frame")
    i = np.arange(n_out)
    return np.minimum(((i + 0.5) * n_source / n_out).astype(np.int64), n_source - 1)


_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_FPS = re.compile(r"Stream #\d+:\d+.*?: Video: .*?(\d+(?:\.\d+)?) fps")
_ERROR = re.compile(r"\[(error|fatal|panic)\]")


def _header_info(log: str) -> tuple[float, float]:
    """Frame rate and duration (seconds) from ffmpeg's input header."""
    duration = float("nan")
    fps = float("nan")
    m = _DURATION.search(log)
    if m:
        h, mnt, sec = m.groups()
        duration = int(h) * 3600 + int(mnt) * 60 + float(sec)
    m = _FPS.search(log)
    if m:
        fps = float(m.group(1))
    return fps, duration


def _error_lines(log: str) -> list[str]:
    return [line.strip() for line in log.splitlines() if _ERROR.search(line)]


def check_readable(path: str | os.PathLike) -> None:
    """Raise BadVideo when the file is missing, empty or cannot be opened."""
    p = Path(path)
    try:
        if not p.is_file():
            raise BadVideo("missing: no such file" if not p.exists() else "not a regular file")
        if p.stat().st_size == 0:
            raise BadVideo("empty file (0 bytes)")
        with open(p, "rb") as fh:
            fh.read(1)
    except OSError as err:
        raise BadVideo(f"unreadable: {err.strerror}") from err


def check_container(path: str | os.PathLike) -> None:
    """Raise BadVideo for an AVI (RIFF) file shorter than its header declares.

    ffmpeg decodes such a file up to the cut without complaint about the
    missing end, and estimates the duration from the bytes that are there.
    """
    with open(path, "rb") as fh:
        head = fh.read(12)
    if len(head) == 12 and head[:4] == b"RIFF":
        declared = int.from_bytes(head[4:8], "little") + 8
        actual = Path(path).stat().st_size
        if actual < declared:
            raise BadVideo(
                f"truncated: the AVI header declares {declared} bytes, the file has {actual}"
            )


def avi_frame_count(path: str | os.PathLike) -> int | None:
    """The total frame count in an AVI file's main header (avih), or None
    for other containers or when the header does not give one."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head[:4] != b"RIFF" or head[8:12] != b"AVI ":
        return None
    at = head.find(b"avih")
    if at < 0 or len(head) < at + 28:
        return None
    # MainAVIHeader: microseconds per frame, max bytes/s, padding, flags, total frames.
    total = int.from_bytes(head[at + 24 : at + 28], "little")
    return total or None


@dataclass
class _Decoded:
    frames: dict[int, np.ndarray]  # source frame index -> S x S x 3 frame
    decoded: int | None  # frames the decoder delivered, by its own count
    log: str


class _StderrDrain:
    """Reads a process's stderr in a thread, so a full pipe never blocks it."""

    def __init__(self, proc: subprocess.Popen):
        self._chunks: list[bytes] = []
        self._thread = threading.Thread(target=lambda: self._chunks.append(proc.stderr.read()))
        self._thread.start()

    def text(self) -> str:
        """Everything the process wrote to stderr (waits for it to close)."""
        self._thread.join()
        return b"".join(self._chunks).decode("utf-8", "replace")


def _start_decoder(
    path: str | os.PathLike,
    size: int,
    resize: str,
    exe: str,
    threads: int,
    picks: str | None = None,
) -> subprocess.Popen:
    """ffmpeg sending ``size`` x ``size`` RGB frames of the first video
    stream to its stdout, only those ``picks`` selects when given."""
    vf = scale_filter(size, resize)
    if picks:
        vf = f"select='{picks}',{vf}"
    stream = (
        ffmpeg.input(str(path), threads=threads)
        .output(
            "pipe:",
            format="rawvideo",
            pix_fmt="rgb24",
            vf=vf,
            map="0:v:0",
            # One output frame per decoded frame: no duplicates to keep a constant rate.
            fps_mode="passthrough",
            an=None,
            sn=None,
            threads=threads,
        )
        .global_args("-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+verbose")
    )
    return stream.run_async(cmd=exe, pipe_stdout=True, pipe_stderr=True)


def _failure(log: str, rc: int) -> str:
    """Why an ffmpeg run that delivered nothing or exited non-zero failed."""
    errors = _error_lines(log)
    if "matches no streams" in log or "does not contain any stream" in log:
        return "no video stream"
    if rc == 0:
        return "no frames decoded"
    return _clean(errors[-1]) if errors else f"ffmpeg exited with code {rc}"


def _run_decoder(
    path: str | os.PathLike,
    size: int,
    resize: str,
    exe: str,
    threads: int,
    select: np.ndarray | None,
    cap: int,
) -> _Decoded:
    """One ffmpeg pass over the clip.

    With ``select`` (source frame indices), only those frames are scaled,
    converted and sent through the pipe. Without, every frame is, into a
    buffer of at most ``cap`` frames that thins itself out to every 2nd,
    4th, ... frame when full.
    """
    picks = None
    if select is not None:
        picks = "+".join(f"eq(n,{k})" for k in np.unique(select))
    proc = _start_decoder(path, size, resize, exe, threads, picks)
    stderr = _StderrDrain(proc)
    frame_bytes = size * size * 3
    order = np.unique(select) if select is not None else None
    kept: dict[int, np.ndarray] = {}
    stride, n = 1, 0
    try:
        while len(buf := proc.stdout.read(frame_bytes)) == frame_bytes:
            frame = np.frombuffer(buf, np.uint8).reshape(size, size, 3)
            if order is not None:
                if n < len(order):
                    kept[int(order[n])] = frame
            elif n % stride == 0:
                kept[n] = frame
                if len(kept) > cap:
                    stride *= 2
                    kept = {k: v for k, v in kept.items() if k % stride == 0}
            n += 1
    finally:
        proc.stdout.close()
        rc = proc.wait()
    log = stderr.text()
    decoded = _decoded_count(log)
    if select is None and decoded is None:
        decoded = n
    if rc != 0 or n == 0:
        raise BadVideo(_failure(log, rc))
    return _Decoded(kept, decoded, log)


_DECODED = re.compile(
    r"Input stream #\d+:\d+ \(video\): \d+ packets read \(\d+ bytes\); (\d+) frames decoded"
)


def _decoded_count(log: str) -> int | None:
    m = _DECODED.search(log)
    return int(m.group(1)) if m else None


def decode_clip(
    path: str | os.PathLike,
    frames: int,
    size: int,
    resize: str = "crop",
    ffmpeg_exe: str | None = None,
    threads: int = 1,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
) -> Clip:
    """Decode ``path`` and keep ``frames`` frames, uniformly sampled over the
    whole clip, as ``size`` x ``size`` RGB uint8.

    When the AVI header gives the frame count (UCF101's clips), ffmpeg scales
    and sends only the sampled frames; should the count prove wrong, the clip
    is decoded a second time with the true count. Other containers stream
    every frame through a bounded buffer. Either way memory does not grow
    with the clip's length. Raises BadVideo with the reason when the clip is
    unusable.
    """
    check_readable(path)
    check_container(path)
    exe = ffmpeg_exe or find_ffmpeg()
    cap = max(2 * frames, buffer_bytes // (size * size * 3))
    expected = avi_frame_count(path)
    run = None
    if expected:
        run = _run_decoder(path, size, resize, exe, threads, sample_indices(expected, frames), cap)
        if run.decoded and run.decoded != expected:
            want = sample_indices(run.decoded, frames)
            run = _run_decoder(path, size, resize, exe, threads, want, cap)
    if run is None or not run.decoded:
        run = _run_decoder(path, size, resize, exe, threads, None, cap)
    n = run.decoded
    fps, duration = _header_info(run.log)
    announced = duration * fps
    if np.isfinite(announced) and n < TRUNCATION_TOLERANCE * announced:
        raise BadVideo(f"truncated: decoded {n} of the {announced:.0f} frames its header announces")
    errors = _error_lines(run.log)
    if errors:
        raise BadVideo(f"decode errors ({len(errors)}), first: {_clean(errors[0])}")
    if not np.isfinite(duration) and np.isfinite(fps) and fps > 0:
        duration = n / fps
    want = sample_indices(n, frames)
    have = np.fromiter(run.frames, dtype=np.int64)
    # Exact when the wanted frames were kept; else the nearest kept frame.
    nearest = have[np.abs(have[None, :] - want[:, None]).argmin(axis=1)]
    out = np.stack([run.frames[int(k)] for k in nearest])
    return Clip(out, n, fps, duration, n < frames)


def frame_rate(path: str | os.PathLike, ffmpeg_exe: str | None = None) -> float:
    """The clip's frame rate from ffmpeg's header (NaN when it gives none)."""
    exe = ffmpeg_exe or find_ffmpeg()
    out = subprocess.run(
        [exe, "-nostdin", "-hide_banner", "-i", str(path)], capture_output=True, timeout=60
    )
    return _header_info(out.stderr.decode("utf-8", "replace"))[0]


def windows(
    path: str | os.PathLike,
    frames: int,
    size: int,
    window_seconds: float,
    resize: str = "crop",
    ffmpeg_exe: str | None = None,
    threads: int = 1,
) -> Iterator[tuple[np.ndarray, int]]:
    """Stream a video of any length as consecutive windows of
    ``window_seconds``, each sampled to ``frames`` frames like decode_clip
    samples a whole clip. Yields (uint8 [T, S, S, 3], source frames in the
    window). Only one window's frames are ever held in memory. A video no
    longer than one window gives exactly the frames decode_clip gives.
    Raises BadVideo as decode_clip does.
    """
    check_readable(path)
    check_container(path)
    exe = ffmpeg_exe or find_ffmpeg()
    fps = frame_rate(path, exe)
    span = max(frames, round(window_seconds * (fps if np.isfinite(fps) and fps > 0 else 25.0)))
    proc = _start_decoder(path, size, resize, exe, threads)
    stderr = _StderrDrain(proc)
    frame_bytes = size * size * 3
    buffer: list[np.ndarray] = []
    n = 0
    try:
        while len(buf := proc.stdout.read(frame_bytes)) == frame_bytes:
            buffer.append(np.frombuffer(buf, np.uint8).reshape(size, size, 3))
            n += 1
            if len(buffer) == span:
                yield np.stack([buffer[i] for i in sample_indices(span, frames)]), span
                buffer = []
    finally:
        proc.stdout.close()
        rc = proc.wait()
    log = stderr.text()
    if rc != 0 or n == 0:
        raise BadVideo(_failure(log, rc))
    errors = _error_lines(log)
    if errors:
        raise BadVideo(f"decode errors ({len(errors)}), first: {_clean(errors[0])}")
    if buffer:
        yield np.stack([buffer[i] for i in sample_indices(len(buffer), frames)]), len(buffer)


def _clean(line: str) -> str:
    """An ffmpeg log line without its ``[tag @ 0x...]`` and level prefixes."""
    line = re.sub(r"\[[^\]]*@ 0x[0-9a-f]+\]\s*", "", line)
    line = re.sub(r"\[(error|fatal|panic|warning|info)\]\s*", "", line)
    return line.strip()


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    width: int,
    height: int,
    fps: float = 25.0,
    codec: str = "mpeg4",
    quality: int = 4,
    ffmpeg_exe: str | None = None,
    container: str | None = None,
) -> None:
    """Encode RGB uint8 frames of ``height`` x ``width`` into a video file
    (MPEG-4 Part 2 by default, the codec family of UCF101's XviD clips)."""
    exe = ffmpeg_exe or find_ffmpeg()
    out_args = {"vcodec": codec, "pix_fmt": "yuv420p", "threads": 1}
    if container:
        out_args["format"] = container
    if codec == "mpeg4":
        out_args.update({"q:v": quality, "vtag": "XVID"})
    proc = (
        ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", r=fps)
        .output(str(path), **out_args)
        .global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-bitexact")
        .overwrite_output()
        .run_async(cmd=exe, pipe_stdin=True, pipe_stderr=True)
    )
    stderr = _StderrDrain(proc)
    try:
        for frame in frames:
            if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
                raise ValueError(
                    f"frame of shape {frame.shape} and dtype {frame.dtype}; "
                    f"expected ({height}, {width}, 3) uint8"
                )
            proc.stdin.write(frame.tobytes())
    except BrokenPipeError:
        pass
    finally:
        proc.stdin.close()
        rc = proc.wait()
    if rc != 0:
        msg = stderr.text().strip()
        raise subprocess.CalledProcessError(rc, exe, stderr=msg)
