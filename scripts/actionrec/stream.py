"""Live video: classify a webcam, a network stream or a file played at its
own pace, as it comes.

ffmpeg reads the source and sends its frames, scaled to the model's S x S,
through a pipe. The last ``window_seconds`` of frames are kept (every k-th
of them when they would not fit in ``buffer_bytes``, so a source of any
rate fits); every ``step_seconds`` the window is sampled to the model's T
frames, the way extraction samples a clip, and classified. One line per
step: the stream time and the top classes with their probabilities; with a
``rejection`` (a calibrated model's), the step's score and ``unknown`` as its
prediction when the score is below the threshold.
"""

from __future__ import annotations

import logging
import math
import re
from collections import deque
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd

from .predict import UNKNOWN, Rejection, classify_windows
from .scores import format_top
from .video import (
    DEFAULT_BUFFER_BYTES,
    BadVideo,
    FrameStream,
    _Watchdog,
    find_ffmpeg,
    sample_indices,
)

log = logging.getLogger(__name__)

COLUMNS = ["step", "stream_seconds", "frames", "predicted", "probability", "top"]
REJECTION_COLUMNS = ["score", "unknown"]

# What cameras, encoders and streaming servers send on: read without asking.
# Anything else ffmpeg can open (file://, tcp:// to any host and port,
# gopher://, ...) reads what a source named by someone else should not reach.
CAMERA_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "srt", "udp", "rtp")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def url_scheme(source: str) -> str | None:
    """The scheme of a URL source, lower case; None for anything else."""
    match = _SCHEME.match(source)
    return match.group(1).lower() if match else None


def _listens(source: str) -> bool:
    """Whether a tcp:// source waits for a sender (``?listen``) rather than
    connecting to a host: an encoder pushing to this machine."""
    values = parse_qs(urlsplit(source).query, keep_blank_values=True).get("listen")
    if not values:
        return False
    # As ffmpeg reads it: the first value's leading number, listening without one.
    number = re.match(r"\s*[+-]?\d+", values[0])
    return int(number.group()) != 0 if number else True


def check_source(source: str, allow_schemes: Collection[str] = ()) -> None:
    """Raise BadVideo unless ``source`` is standard input (-), a capture
    device, a local file that exists, a URL of a camera's scheme
    (:data:`CAMERA_SCHEMES`), tcp:// listening for a sender, or a URL of a
    scheme in ``allow_schemes``."""
    if is_local_file(source) and not Path(source).exists():
        raise BadVideo(f"{source}: no such file or device")
    scheme = url_scheme(source)
    allowed = {*CAMERA_SCHEMES, *(s.lower() for s in allow_schemes)}
    if scheme is None or scheme in allowed or (scheme == "tcp" and _listens(source)):
        return
    raise BadVideo(
        f"{source}: could not be read: {scheme}:// is not read by default, only what a "
        f"camera sends on ({', '.join(CAMERA_SCHEMES)}, tcp with ?listen=1), a capture "
        f"device, a file or - for standard input; add --allow-scheme {scheme} to read it"
    )


def source_options(source: str, realtime: bool, timeout: float) -> dict:
    """ffmpeg input options for a source: a video device (/dev/videoN), a
    network URL, standard input (-) or a file (read at its own pace when
    ``realtime``)."""
    if source.startswith("/dev/video"):
        return {"f": "v4l2"}
    scheme = url_scheme(source)
    if scheme:
        micros = int(timeout * 1e6)
        # Start within a second instead of probing 5 s of stream first.
        live = {"analyzeduration": 1_000_000, "fflags": "nobuffer"}
        # An RTSP camera that stops sending, or a TCP/HTTP peer that never
        # answers, ends the stream after `timeout` seconds instead of hanging.
        if scheme in ("rtsp", "rtsps"):
            return {**live, "timeout": micros}
        return {**live, "rw_timeout": micros}
    return {"re": None} if realtime and source != "-" else {}


def is_local_file(source: str) -> bool:
    """Whether ffmpeg is to read ``source`` as a local file: not standard
    input, a video device or a URL, whatever its name holds (a colon)."""
    return source != "-" and not source.startswith("/dev/video") and url_scheme(source) is None


def classify_stream(
    model,
    source: str,
    names: list[str],
    *,
    window_seconds: float = 2.0,
    step_seconds: float = 1.0,
    top: int = 3,
    resize: str = "crop",
    realtime: bool = True,
    timeout: float = 10.0,
    ffmpeg_exe: str | None = None,
    on_step: Callable[[dict], None] | None = None,
    views: int = 1,
    per_segment: int | None = None,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    allow_schemes: Collection[str] = (),
    rejection: Rejection | None = None,
    on_window: Callable[..., None] | None = None,
) -> pd.DataFrame:
    """Classify ``source`` step by step until it ends or Ctrl-C; returns
    the steps (with ``attrs["error"]`` when the stream dropped). Raises
    BadVideo when the source cannot be opened, fails before it delivers a
    frame or sends nothing for ``timeout`` seconds first, naming the source
    and the reason. Each step's scores are the mean over ``views`` temporal
    views of the window, sampled to T x ``per_segment`` frames (as
    predict_videos). A URL is read only when :func:`check_source` accepts
    it, with ``allow_schemes`` beside the camera's schemes. With a
    ``rejection``, each step also has its score, and ``unknown`` as its
    prediction below the threshold. ``on_window`` gets each step's
    probabilities, score, verdict, the seconds its frames start and end at
    and its middle sampled frame: what a timeline of the stream keeps."""
    check_source(source, allow_schemes)
    if views < 1 or (per_segment is not None and per_segment < views):
        raise ValueError(f"views must be at least 1 and at most per_segment, not {views}")
    frames, size = int(model.input_shape[1]), int(model.input_shape[2])
    stream = open_stream(source, size, resize, ffmpeg_exe, realtime, timeout)
    watchdog: _Watchdog = stream.watchdog  # started with ffmpeg: it bounds the header too
    fps = stream.frame_rate()
    span = max(frames, round(window_seconds * fps))
    rows: list[dict] = []
    columns = COLUMNS + (REJECTION_COLUMNS if rejection is not None else [])
    incoming = iter(stream)
    sampled = stream_windows(
        incoming,
        frames,
        frames * (per_segment or views),
        span,
        max(1, round(step_seconds * fps)),
        max_frames=buffer_bytes // (size * size * 3),
    )
    middle: list[np.ndarray] = []
    sampled = _noting_middle(sampled, middle)
    try:
        for probs, n, score, unknown in classify_windows(
            model, sampled, views=views, per_segment=per_segment, batch_size=1, rejection=rejection
        ):
            if on_window is not None:
                on_window(probs, score, unknown, max(0, n - span) / fps, n / fps, middle[0])
            rows.append(_step(len(rows) + 1, probs, unknown, names, top, n, fps, span))
            if rejection is not None:
                rows[-1].update(score=round(score, 6), unknown=unknown)
            if on_step:
                on_step(rows[-1])
    except KeyboardInterrupt:
        log.info("stopped by the user after %d step(s)", len(rows))
        watchdog.stop()
        stream.stop()
        incoming.close()  # ffmpeg ends and its log is read
        return pd.DataFrame(rows, columns=columns)
    table = pd.DataFrame(rows, columns=columns)
    ending = how_it_ended(stream, source, timeout)
    if ending:
        table.attrs["error"] = ending
    return table


def open_stream(
    source: str, size: int, resize: str, ffmpeg_exe: str | None, realtime: bool, timeout: float
) -> FrameStream:
    """ffmpeg reading ``source`` ("-": standard input) as frames of S x S."""
    return FrameStream(
        "pipe:" if source == "-" else source,
        size,
        resize,
        ffmpeg_exe or find_ffmpeg(),
        threads=1,
        source=source_options(source, realtime, timeout),
        local=is_local_file(source),
        timeout=timeout,
    )


def _step(
    step: int, probs, unknown: bool, names: list[str], top: int, n: int, fps: float, span: int
) -> dict:
    """A row of the stream's table: the step's top class (or unknown) after ``n`` frames."""
    best = int(probs.argmax())
    return {
        "step": step,
        "stream_seconds": round(n / fps, 2),
        "frames": min(n, span),
        "predicted": UNKNOWN if unknown else names[best],
        "probability": round(float(probs[best]), 6),
        "top": format_top(probs, names, min(top, len(names))),
    }


def _noting_middle(
    sampled: Iterator[tuple[np.ndarray, int]], middle: list[np.ndarray]
) -> Iterator[tuple[np.ndarray, int]]:
    """The windows, each one's middle frame put in ``middle[0]`` as it
    passes (classified one at a time, before the next is drawn)."""
    for clip, n in sampled:
        middle[:] = [clip[len(clip) // 2]]
        yield clip, n


def stream_windows(
    incoming: Iterator[np.ndarray],
    frames: int,
    need: int,
    span: int,
    step: int,
    max_frames: int,
) -> Iterator[tuple[np.ndarray, int]]:
    """The stream's windows as they come: every ``step`` frames once T have
    come, its last ``span`` frames sampled to ``need``, with the frame count
    so far. Every k-th frame is kept, so that at most ``max_frames`` (but at
    least 2 x ``need``) are held whatever the rate."""
    every = math.ceil(span / max(2 * need, max_frames))
    window: deque[np.ndarray] = deque(maxlen=math.ceil(span / every))
    for n, frame in enumerate(incoming, 1):
        if (n - 1) % every == 0:
            window.append(frame)
        if n < frames or n % step:
            continue
        picked = sample_indices(len(window), need)
        yield np.stack([window[i] for i in picked]), n


def how_it_ended(stream: FrameStream, source: str, timeout: float) -> str | None:
    """None for a stream that ended cleanly; why it dropped after it started;
    BadVideo, naming the source, for one that never delivered a frame."""
    if stream.delivered == 0:
        if stream.watchdog.fired:
            raise BadVideo(
                f"{source}: could not be read: {stream.stall_message()} (--timeout sets how "
                "long a source may take)"
            )
        raise BadVideo(f"{source}: could not be read: {_reason(stream)}")
    if stream.watchdog.fired:
        return f"the stream dropped after {stream.delivered} frames: no frame for {timeout:g} s"
    if stream.rc != 0 or any("Error during demuxing" in e for e in stream.errors()):
        # ffmpeg ends a network read that timed out or broke with status 0, but
        # logs it. What came before still counts; the caller reports the drop.
        return f"the stream dropped after {stream.delivered} frames: " + _reason(stream)
    return None


def _reason(stream: FrameStream) -> str:
    errors = stream.errors()
    return errors[-1] if errors else f"ffmpeg exited with code {stream.rc}"
