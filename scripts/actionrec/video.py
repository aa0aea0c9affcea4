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
# The frame rate assumed for a source that announces none (a raw pipe, some cameras).
FALLBACK_FPS = 25.0


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


def error_lines(log: str) -> list[str]:
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


class _Ffmpeg:
    """An ffmpeg process, run through ffmpeg-python, whose stderr a thread
    collects line by line (so that a full pipe never blocks it); ``header``
    waits for the input's header to be read."""

    def __init__(self, stream, exe: str, **pipes):
        self.proc = stream.run_async(cmd=exe, pipe_stderr=True, **pipes)
        self._lines: list[str] = []
        self._header = threading.Event()
        self._thread = threading.Thread(target=self._read_stderr, daemon=True)
        self._thread.start()

    def _read_stderr(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace")
            self._lines.append(line)
            if _FPS.search(line) or line.lstrip().startswith("Output #"):
                self._header.set()
        self._header.set()

    def header(self) -> tuple[float, float]:
        """Frame rate and duration of the input, once ffmpeg has printed them."""
        self._header.wait()
        return _header_info("".join(self._lines))

    def frame_rate(self) -> float:
        """The input's frame rate from its header, before any frame comes;
        FALLBACK_FPS when it announces none (a raw pipe, some cameras)."""
        fps = self.header()[0]
        return fps if np.isfinite(fps) and fps > 0 else FALLBACK_FPS

    def finish(self) -> tuple[int, str]:
        """Wait for the process; its exit status and everything it logged."""
        rc = self.proc.wait()
        self._thread.join()
        return rc, "".join(self._lines)


class FrameStream(_Ffmpeg):
    """ffmpeg sending ``size`` x ``size`` RGB frames of the first video stream
    of a file, device or URL to a pipe, only those ``picks`` selects when
    given (``source``: ffmpeg's input options, such as ``re`` or ``f``).
    Iterate for the frames; then ``rc``, ``log`` and ``delivered`` tell how it
    went. ``stop`` ends it early."""

    def __init__(
        self, path, size: int, resize: str, exe: str, threads: int, picks=None, source=None
    ):
        vf = scale_filter(size, resize)
        if picks:
            vf = f"select='{picks}',{vf}"
        stream = (
            ffmpeg.input(str(path), threads=threads, **(source or {}))
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
        super().__init__(stream, exe, pipe_stdout=True)
        self.size, self.delivered, self.rc, self.log = size, 0, None, ""

    def __iter__(self) -> Iterator[np.ndarray]:
        frame_bytes = self.size * self.size * 3
        try:
            while len(buf := self.proc.stdout.read(frame_bytes)) == frame_bytes:
                self.delivered += 1
                yield np.frombuffer(buf, np.uint8).reshape(self.size, self.size, 3)
        finally:
            self.proc.stdout.close()
            self.rc, self.log = self.finish()

    def stop(self) -> None:
        """End the stream now (Ctrl-C, or enough seen)."""
        if self.proc.poll() is None:
            self.proc.terminate()

    def check(self) -> None:
        """Raise BadVideo when the run failed, delivered nothing or logged
        decode errors."""
        if self.rc != 0 or self.delivered == 0:
            raise BadVideo(_failure(self.log, self.rc))
        _check_decode_errors(self.log)


def _check_decode_errors(log: str) -> None:
    errors = error_lines(log)
    if errors:
        raise BadVideo(f"decode errors ({len(errors)}), first: {ffmpeg_message(errors[0])}")


def _failure(log: str, rc: int) -> str:
    """Why an ffmpeg run that delivered nothing or exited non-zero failed."""
    errors = error_lines(log)
    if "matches no streams" in log or "does not contain any stream" in log:
        return "no video stream"
    if rc == 0:
        return "no frames decoded"
    return ffmpeg_message(errors[-1]) if errors else f"ffmpeg exited with code {rc}"


@dataclass
class _Decoded:
    frames: dict[int, np.ndarray]  # source frame index -> S x S x 3 frame
    decoded: int | None  # frames the decoder delivered, by its own count
    log: str


def _run_decoder(
    path: str | os.PathLike,
    size: int,
    *,
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
    order = np.unique(select) if select is not None else None
    picks = "+".join(f"eq(n,{k})" for k in order) if order is not None else None
    stream = FrameStream(path, size, resize, exe, threads, picks)
    kept: dict[int, np.ndarray] = {}
    stride = 1
    for n, frame in enumerate(stream):
        if order is not None:
            if n < len(order):
                kept[int(order[n])] = frame
        elif n % stride == 0:
            kept[n] = frame
            if len(kept) > cap:
                stride *= 2
                kept = {k: v for k, v in kept.items() if k % stride == 0}
    if stream.rc != 0 or stream.delivered == 0:
        raise BadVideo(_failure(stream.log, stream.rc))
    decoded = _decoded_count(stream.log)
    if select is None and decoded is None:
        decoded = stream.delivered
    return _Decoded(kept, decoded, stream.log)


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
    *,
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
    options = {"resize": resize, "exe": exe, "threads": threads, "cap": cap}
    run = None
    if expected:
        run = _run_decoder(path, size, select=sample_indices(expected, frames), **options)
        if run.decoded and run.decoded != expected:
            run = _run_decoder(path, size, select=sample_indices(run.decoded, frames), **options)
    if run is None or not run.decoded:
        run = _run_decoder(path, size, select=None, **options)
    n = run.decoded
    fps, duration = _header_info(run.log)
    announced = duration * fps
    if np.isfinite(announced) and n < TRUNCATION_TOLERANCE * announced:
        raise BadVideo(f"truncated: decoded {n} of the {announced:.0f} frames its header announces")
    _check_decode_errors(run.log)
    if not np.isfinite(duration) and np.isfinite(fps) and fps > 0:
        duration = n / fps
    want = sample_indices(n, frames)
    have = np.fromiter(run.frames, dtype=np.int64)
    # Exact when the wanted frames were kept; else the nearest kept frame.
    nearest = have[np.abs(have[None, :] - want[:, None]).argmin(axis=1)]
    out = np.stack([run.frames[int(k)] for k in nearest])
    return Clip(out, n, fps, duration, n < frames)


def windows(
    path: str | os.PathLike,
    frames: int,
    size: int,
    window_seconds: float,
    *,
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
    stream = FrameStream(path, size, resize, ffmpeg_exe or find_ffmpeg(), threads)
    span = max(frames, round(window_seconds * stream.frame_rate()))
    buffer: list[np.ndarray] = []
    for frame in stream:
        buffer.append(frame)
        if len(buffer) == span:
            yield np.stack([buffer[i] for i in sample_indices(span, frames)]), span
            buffer = []
    stream.check()
    if buffer:
        yield np.stack([buffer[i] for i in sample_indices(len(buffer), frames)]), len(buffer)


def ffmpeg_message(line: str) -> str:
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
    *,
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
    stream = (
        ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", r=fps)
        .output(str(path), **out_args)
        .global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-bitexact")
        .overwrite_output()
    )
    encoder = _Ffmpeg(stream, exe, pipe_stdin=True)
    try:
        for frame in frames:
            if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
                raise ValueError(
                    f"frame of shape {frame.shape} and dtype {frame.dtype}; "
                    f"expected ({height}, {width}, 3) uint8"
                )
            encoder.proc.stdin.write(frame.tobytes())
    except BrokenPipeError:
        pass
    finally:
        encoder.proc.stdin.close()
        rc, log = encoder.finish()
    if rc != 0:
        raise subprocess.CalledProcessError(rc, exe, stderr=log.strip())
