"""Decoding and encoding video with ffmpeg, through ffmpeg-python.

Only the ``ffmpeg`` binary is needed (no ffprobe): the clip's frame rate and
duration are read from the log ffmpeg writes while it decodes, and the frame
count is the number of frames it actually delivers.

A file reaches ffmpeg as a link of this module's naming in a private folder,
so that neither its name nor a colon in it can pass for ffmpeg's words in
the log parsed here or for a protocol; every wait for ffmpeg is bounded.

The file's own text (its tags, a stream's language) appears in the log only
in the input's header, where a line break in it can forge any line. So the
log is read so that no tag can change what it says: the rate is read from
the output's header, which ffmpeg prints after the input's and with none of
the file's tags; the duration only where every line that claims it agrees;
errors and counts outside the input's header. While ffmpeg runs, its lines
are told from forged ones by a random token that the file cannot know.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np

RESIZE_MODES = ("crop", "pad", "stretch")
# Frames kept in memory while one clip streams past, in bytes. Clips whose
# decoded frames fit are sampled exactly; longer ones from every k-th frame.
DEFAULT_BUFFER_BYTES = 64 * 2**20
# A clip whose frames end before this share of the duration its header
# announces is reported as truncated.
TRUNCATION_TOLERANCE = 0.9
# The frame rate assumed for a source that announces none (a raw pipe, some cameras).
FALLBACK_FPS = 25.0
# Seconds a file's decoder may send nothing (no header, no frame) before it
# counts as stalled. Generous: between the frames it samples, ffmpeg decodes
# a long file's others in silence.
STALL_SECONDS = 120.0


class BadVideo(Exception):
    """A clip that cannot be used; the message says why."""


@dataclass
class Clip:
    """T frames sampled from one clip, with what was measured while decoding."""

    frames: np.ndarray  # uint8 [T, S, S, 3], RGB
    source_frames: int  # frames the decoder delivered
    fps: float  # the rate ffmpeg reads the stream at (its header's, else guessed); NaN: unknown
    duration: float  # seconds: the header's, else to the end of the last frame
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


# ffmpeg's log under `-loglevel level+verbose`: a line starts with its level,
# after any "[context @ 0x...]" tags. Every pattern is anchored there, so that
# text ffmpeg echoes inside a line (a path, a metadata value) is never taken
# for its own words.
_TAGS = r"^(?:\[[^\]\n]*@ 0x[0-9a-f]+\] )*"
_INPUT = re.compile(r"^\[info\] Input #0, ", re.M)
_MAPPING = re.compile(r"^\[info\] Stream mapping:", re.M)
_DURATION = re.compile(r"^\[info\]   Duration: (N/A|(\d+):(\d+):(\d+(?:\.\d+)?))", re.M)
_VIDEO_STREAM = re.compile(r"^\[info\] +Stream #\d+:\d+\S*: Video: (.*)$", re.M)
# A rate as ffmpeg prints it: 25, 29.97, 0.0100, or 1k (1000).
_FPS = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(k?) fps\b")
_TBR = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(k?) tbr\b")
_ERROR = re.compile(_TAGS + r"\[(error|fatal|panic)\]")
_DECODED = re.compile(
    _TAGS + r"\[verbose\] +Input stream #\d+:\d+ \(video\): (\d+) packets read "
    r"\(\d+ bytes\); (\d+) frames decoded",
    re.M,
)
# The statistics line ffmpeg ends with: the time is where the last frame sent ends.
_FINAL_TIME = re.compile(r"^\[info\] frame= *\d+ .*?\btime=(\d+):(\d+):(\d+(?:\.\d+)?)", re.M)


def _parts(log: str) -> tuple[str, str, str]:
    """ffmpeg's log cut in three: before the input's header, the header (the
    only part that echoes the file's own text), and from the stream mapping
    on. A forged "Stream mapping:" comes before ffmpeg's own, which is hence
    the last one; without it, the header runs to the end."""
    start = _INPUT.search(log)
    if not start:
        return log, "", ""
    ends = [m.start() for m in _MAPPING.finditer(log, start.start())]
    if not ends:
        return log[: start.start()], log[start.start() :], ""
    return log[: start.start()], log[start.start() : ends[-1]], log[ends[-1] :]


def _rate(stream_line: str) -> float:
    rate = _FPS.search(stream_line) or _TBR.search(stream_line)
    return float(rate.group(1)) * (1000 if rate.group(2) else 1) if rate else float("nan")


def _hms(hours: str, minutes: str, seconds: str) -> float:
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def header_info(log: str) -> tuple[float, float]:
    """Frame rate and duration (seconds) of the input from ffmpeg's log, NaN
    for what it does not give.

    The rate is the one the output's header states (the stream's fps, else
    the rate ffmpeg guesses from its timestamps), which no tag can reach;
    only a log that has no output, such as a run that failed, is read for
    the input stream's fps, else its tbr. A tag can add lines to the input's
    header but not remove ffmpeg's: the duration is the one every
    "Duration:" line there states, and unknown where they differ."""
    _, header, after = _parts(log)
    stated = {m.group(1) for m in _DURATION.finditer(header)}
    duration = float("nan")
    if len(stated) == 1:
        m = _DURATION.search(header)
        if m.group(2):
            duration = _hms(*m.group(2, 3, 4))
    output = _VIDEO_STREAM.search(after)
    if output:
        return _rate(output.group(1)), duration
    m = _VIDEO_STREAM.search(header)
    return (_rate(m.group(1)) if m else float("nan")), duration


def _decoded_end(log: str) -> float:
    """Where the last frame sent ends, in seconds from the input's start, as
    ffmpeg's final statistics give it; NaN when they give none."""
    times = _FINAL_TIME.findall(_parts(log)[2])
    return _hms(*times[-1]) if times else float("nan")


def error_lines(log: str) -> list[str]:
    """ffmpeg's error lines, leaving out the input's header once ffmpeg has
    gone past it: a line break in a tag can forge one there. Only a run that
    failed before (so is a bad video whatever its log says) ends in it."""
    before, header, after = _parts(log)
    text = before + after if after else log
    return [line.strip() for line in text.split("\n") if _ERROR.match(line)]


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
    reads line by line (so that a full pipe never blocks it), handing each
    line to ``_take`` and calling ``_ended`` when the log ends."""

    def __init__(self, stream, exe: str, **pipes):
        self.proc = stream.run_async(cmd=exe, pipe_stderr=True, **pipes)
        self._lines: list[str] = []
        self._thread = threading.Thread(target=self._read_stderr, daemon=True)
        self._thread.start()

    def _read_stderr(self) -> None:
        try:
            for raw in self.proc.stderr:
                self._take(raw.decode("utf-8", "replace"))
        finally:
            self._ended()

    def _take(self, line: str) -> None:
        self._lines.append(line)

    def _ended(self) -> None:
        pass

    def finish(self) -> tuple[int, str]:
        """Wait for the process; its exit status and everything it logged."""
        rc = self.proc.wait()
        self._thread.join()
        return rc, "".join(self._lines)


class _Watchdog:
    """Ends an ffmpeg run that has sent nothing for ``timeout`` seconds while
    it is waited for: a header that never comes, a source that never opens
    or stops sending. The clock runs only while a frame is awaited, so a
    reader busy with the last one is no stall."""

    def __init__(self, stream: FrameStream, timeout: float):
        self.stream, self.timeout, self.fired = stream, timeout, False
        self._since: float | None = time.monotonic()
        self._done = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def waiting(self) -> None:
        self._since = time.monotonic()

    def fed(self) -> None:
        self._since = None

    def stop(self) -> None:
        self._done.set()

    def _watch(self) -> None:
        while not self._done.wait(min(0.2, self.timeout / 4)):
            since = self._since
            if since is not None and time.monotonic() - since > self.timeout:
                self.fired = True
                self.stream.stop()
                return


_SAFE_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,8}")


def _private_link(path: str | os.PathLike) -> tuple[str | None, str]:
    """(folder, name) for ffmpeg to open the local file ``path`` by: a link
    ``input<extension>`` in a new private folder. ffmpeg echoes the name it is
    given in its log, and reads ``concat:...`` or ``file:...`` as protocols.
    Where links cannot be made, ``file:`` and the absolute path (folder None)."""
    target = os.path.abspath(path)
    ext = Path(target).suffix
    folder = tempfile.mkdtemp(prefix="actionrec-")
    link = os.path.join(folder, "input" + (ext if _SAFE_EXTENSION.fullmatch(ext) else ""))
    try:
        os.symlink(target, link)
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        return None, "file:" + target
    return folder, link


# The output's tag whose value, drawn anew for each run, marks the output's
# header as ffmpeg's own.
_MARK = "actionrec"


# A frame's time as the metadata filter writes it.
_TIME = re.compile(rb"^frame: *\d+ +pts: *\S+ +pts_time:(\S+)$", re.M)


def _filter_arg(text: str) -> str:
    """``text`` as one option value in a -vf filter chain: escaped for the
    option, then for the chain."""
    value = re.sub(r"([\\':])", r"\\\1", text)
    return re.sub(r"([\\'\[\],;])", r"\\\1", value)


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:  # NOPTS: a frame without a time
        return float("nan")


class FrameStream(_Ffmpeg):
    """ffmpeg sending ``size`` x ``size`` RGB frames of the first video stream
    of a local file (``local``), or else a device or URL, to a pipe, only
    those ``picks`` selects when given (``source``: ffmpeg's input options,
    such as ``re`` or ``f``). Iterate for the frames (with ``times``,
    ``next_time`` gives each one's time); then ``rc``, ``log`` and
    ``delivered`` tell how it went and ``check`` raises when it failed.
    ``stop`` ends it early; a watchdog does when it sends nothing for
    ``timeout`` seconds (STALL_SECONDS when None)."""

    def __init__(
        self,
        path,
        size: int,
        resize: str,
        exe: str,
        threads: int,
        picks: str | None = None,
        source: dict | None = None,
        *,
        local: bool = True,
        timeout: float | None = None,
        times: bool = False,
    ):
        self.name = str(path)
        self._folder, url = _private_link(path) if local else (None, str(path))
        self._url = url
        token = secrets.token_hex(8)
        vf = scale_filter(size, resize)
        if picks:
            vf = f"select='{picks}',{vf}"
        self._times_path = None
        if times:
            if self._folder is None:
                self._folder = tempfile.mkdtemp(prefix="actionrec-")
            self._times_path = os.path.join(self._folder, "times")
            # Each frame's time, written to a file as the frame passes (before
            # it is sent), under a tag the file cannot already hold.
            out = _filter_arg("file:" + self._times_path)
            vf += (
                f",metadata=mode=add:key={token}:value=1"
                f",metadata=mode=print:key={token}:direct=1:file={out}"
            )
        stream = (
            ffmpeg.input(url, threads=threads, **(source or {}))
            .output(
                "pipe:",
                format="rawvideo",
                pix_fmt="rgb24",
                vf=vf,
                map="0:v:0",
                # One output frame per decoded frame: no duplicates to keep a constant rate.
                fps_mode="passthrough",
                # Fine enough that frames closer than 1 / rate (variable rate) stay apart.
                enc_time_base="1:1000000",
                # The output's header echoes none of the file's tags, only the token.
                map_metadata=-1,
                map_chapters=-1,
                metadata=f"{_MARK}={token}",
                an=None,
                sn=None,
                threads=threads,
            )
            .global_args("-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+verbose")
        )
        self.timeout = STALL_SECONDS if timeout is None else timeout
        self._mark = re.compile(rf"^\[info\] +{_MARK} +: {token}$")
        self._marked = False
        self._header = threading.Event()
        self._times: deque[float] = deque()
        self._times_file = None
        self._partial = b""
        try:
            super().__init__(stream, exe, pipe_stdout=True)
        except BaseException:
            self._remove_link()
            raise
        self.size, self.delivered, self.rc, self.log = size, 0, None, ""
        self.watchdog = _Watchdog(self, self.timeout)

    def _take(self, line: str) -> None:
        self._lines.append(line)
        if self._marked:
            if _VIDEO_STREAM.match(line):
                self._header.set()
        elif self._mark.match(line):
            self._marked = True

    def _ended(self) -> None:
        self._header.set()

    def header(self) -> tuple[float, float]:
        """Frame rate and duration of the input (header_info), once ffmpeg
        has printed the output's header, the last before the first frame
        (NaN when it ended, or was ended, first)."""
        self._header.wait()
        return header_info("".join(self._lines))

    def frame_rate(self) -> float:
        """The input's frame rate, before any frame comes; FALLBACK_FPS when
        it announces none (a raw pipe, some cameras)."""
        fps = self.header()[0]
        return fps if np.isfinite(fps) and fps > 0 else FALLBACK_FPS

    def next_time(self) -> float:
        """With ``times``: the time (seconds) of the next frame in the order
        iteration delivers them, to be asked once per frame, after it came;
        NaN when ffmpeg gave none. ffmpeg writes it before it sends the
        frame: without the first frame's, it writes none."""
        if not self._times and self._times_path:
            self._read_times()
        return self._times.popleft() if self._times else float("nan")

    def _read_times(self) -> None:
        if self._times_file is None:
            try:
                # Still readable once the folder is removed at the end.
                self._times_file = open(self._times_path, "rb")
            except OSError:
                self._times_path = None
                return
        data = self._partial + self._times_file.read()
        *lines, self._partial = data.split(b"\n")
        for m in _TIME.finditer(b"\n".join(lines)):
            self._times.append(_seconds(m.group(1).decode()))
        if not self._times and self.delivered <= 1:
            self._times_path = None

    def __iter__(self) -> Iterator[np.ndarray]:
        frame_bytes = self.size * self.size * 3
        try:
            while True:
                self.watchdog.waiting()
                buf = self.proc.stdout.read(frame_bytes)
                if len(buf) != frame_bytes:
                    break
                self.watchdog.fed()
                self.delivered += 1
                yield np.frombuffer(buf, np.uint8).reshape(self.size, self.size, 3)
        finally:
            self.watchdog.waiting()  # ffmpeg's exit is waited for too
            self.rc, self.log = self.finish()

    def finish(self) -> tuple[int, str]:
        self.proc.stdout.close()
        try:
            return super().finish()
        finally:
            self.watchdog.stop()
            self._remove_link()
            if self._times_file is not None:
                self._times_file.close()

    def _remove_link(self) -> None:
        if self._folder:
            shutil.rmtree(self._folder, ignore_errors=True)

    def stop(self) -> None:
        """End the stream now (Ctrl-C, enough seen, or stalled); killed when
        it has not ended 2 s later (ffmpeg blocked opening a source)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            killer = threading.Timer(2.0, self._kill)
            killer.daemon = True
            killer.start()

    def _kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def errors(self) -> list[str]:
        """ffmpeg's error messages, naming the source as it was given."""
        return [
            ffmpeg_message(line).replace(self._url, self.name) for line in error_lines(self.log)
        ]

    def stall_message(self) -> str:
        return (
            f"ffmpeg sent nothing for {self.timeout:g} s while reading {self.name}: it "
            "stalled or never opened; check that the source is complete and readable"
        )

    def check(self, decode_errors: bool = True, need_frames: bool = True) -> None:
        """Raise BadVideo when the run stalled, failed, delivered nothing
        (with ``need_frames``) or (with ``decode_errors``) logged decode
        errors."""
        if self.watchdog.fired:
            raise BadVideo(self.stall_message())
        if self.rc != 0 or (need_frames and self.delivered == 0):
            raise BadVideo(_failure(self.errors(), self.rc))
        if decode_errors:
            _check_decode_errors(self.errors())


def _check_decode_errors(errors: list[str]) -> None:
    if errors:
        raise BadVideo(f"decode errors ({len(errors)}), first: {errors[0]}")


def _failure(errors: list[str], rc: int) -> str:
    """Why an ffmpeg run that delivered nothing or exited non-zero failed."""
    if any("matches no streams" in e or "does not contain any stream" in e for e in errors):
        return "no video stream"
    if rc == 0:
        return "no frames decoded"
    return errors[-1] if errors else f"ffmpeg exited with code {rc}"


class _Frames:
    """The frames of one pass by source index: those in ``keep``, and of the
    others at most ``cap``: every frame while they fit, then every 2nd, 4th,
    ... frame."""

    def __init__(self, cap: int, keep: Iterable[int] = ()):
        self.cap, self.keep, self.stride = cap, {int(k) for k in keep}, 1
        self.kept: dict[int, np.ndarray] = {}

    def add(self, n: int, frame: np.ndarray) -> None:
        if n in self.keep or n % self.stride == 0:
            self.kept[n] = frame
            if len(self.kept) > self.cap + len(self.keep):
                self.stride *= 2
                self.kept = {
                    k: v for k, v in self.kept.items() if k % self.stride == 0 or k in self.keep
                }

    def sample(self, n_source: int, n_out: int) -> np.ndarray:
        """``n_out`` frames spread over ``n_source`` as sample_indices spreads
        them: exact where those frames were kept, else the nearest kept."""
        want = sample_indices(n_source, n_out)
        have = np.fromiter(self.kept, dtype=np.int64)
        nearest = have[np.abs(have[None, :] - want[:, None]).argmin(axis=1)]
        return np.stack([self.kept[int(k)] for k in nearest])


@dataclass
class _Decoded:
    frames: _Frames
    decoded: int | None  # frames the decoder delivered, by its own count
    packets: int | None  # packets it read
    delivered: int  # frames sent through the pipe
    selected: bool  # only chosen frames were sent
    log: str
    errors: list[str]


def _run_decoder(
    path: str | os.PathLike,
    size: int,
    *,
    resize: str,
    exe: str,
    threads: int,
    select: np.ndarray | None,
    cap: int,
    timeout: float | None,
) -> _Decoded:
    """One ffmpeg pass over the clip.

    With ``select`` (source frame indices), only those frames are scaled,
    converted and sent through the pipe; none may be, when the indices
    overshoot the clip. Without, every frame is, into a buffer of at most
    ``cap`` frames that thins itself out to every 2nd, 4th, ... frame when
    full.
    """
    order = np.unique(select) if select is not None else None
    picks = "+".join(f"eq(n,{k})" for k in order) if order is not None else None
    stream = FrameStream(path, size, resize, exe, threads, picks, timeout=timeout)
    kept = _Frames(cap, keep=order if order is not None else ())
    for n, frame in enumerate(stream):
        if order is None:
            kept.add(n, frame)
        elif n < len(order):
            kept.add(int(order[n]), frame)
    packets, decoded = _decoder_counts(stream.log)
    # A pass that sent none of its picks is judged by decode_clip, which may
    # decode again: ffmpeg can fail a run that wrote nothing.
    if order is None or stream.delivered or stream.watchdog.fired:
        stream.check(decode_errors=False)
    if select is None and decoded is None:
        decoded = stream.delivered
    return _Decoded(
        kept, decoded, packets, stream.delivered, order is not None, stream.log, stream.errors()
    )


def _decoder_counts(log: str) -> tuple[int | None, int | None]:
    """The packets the decoder read and the frames it decoded, from the
    statistics ffmpeg prints last."""
    after = _parts(log)[2]
    m = _DECODED.search(after, max(0, after.rfind("Input file #0")))
    return (int(m.group(1)), int(m.group(2))) if m else (None, None)


def _nothing_decoded(run: _Decoded, expected: int) -> str:
    said = f"no frames decoded: the AVI header announces {expected} frames"
    if not run.packets:
        return f"{said}, but the file holds none"
    first = f": {run.errors[0]}" if run.errors else ""
    return f"{said}, and none of the {run.packets} the file holds could be decoded{first}"


def decode_clip(
    path: str | os.PathLike,
    frames: int,
    size: int,
    *,
    resize: str = "crop",
    ffmpeg_exe: str | None = None,
    threads: int = 1,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    stall_seconds: float | None = None,
) -> Clip:
    """Decode ``path`` and keep ``frames`` frames, uniformly sampled over the
    whole clip, as ``size`` x ``size`` RGB uint8.

    When the AVI header gives the frame count (UCF101's clips), ffmpeg scales
    and sends only the sampled frames; should the count prove wrong, the clip
    is decoded a second time with the true count. Other containers stream
    every frame through a bounded buffer. Either way memory does not grow
    with the clip's length. Raises BadVideo with the reason when the clip is
    unusable (truncated: its frames end well before the duration its header
    states), or when ffmpeg sends nothing for ``stall_seconds``
    (STALL_SECONDS when None).
    """
    check_readable(path)
    check_container(path)
    exe = ffmpeg_exe or find_ffmpeg()
    cap = max(2 * frames, buffer_bytes // (size * size * 3))
    expected = avi_frame_count(path)
    options = {"resize": resize, "exe": exe, "threads": threads, "cap": cap}
    options["timeout"] = stall_seconds
    run = None
    if expected:
        run = _run_decoder(path, size, select=sample_indices(expected, frames), **options)
        if run.decoded == 0:
            raise BadVideo(_nothing_decoded(run, expected))
        if run.decoded and run.decoded != expected:
            run = _run_decoder(path, size, select=sample_indices(run.decoded, frames), **options)
    if run is None or not run.decoded or not run.delivered:
        run = _run_decoder(path, size, select=None, **options)
    n = run.decoded
    fps, duration = header_info(run.log)
    rated = np.isfinite(fps) and fps > 0
    if run.selected:
        # AVI has no timestamps: frame k starts at k / rate, and only the sampled frames came.
        end = n / fps if rated else float("nan")
    else:
        # A variable-rate clip (a phone's, a browser's) has fewer frames than duration x rate.
        end = _decoded_end(run.log)
    if np.isfinite(duration) and end < TRUNCATION_TOLERANCE * duration:
        raise BadVideo(
            f"truncated: its {n} frames end at {end:.2f} s of the {duration:.2f} s its "
            "header announces"
        )
    _check_decode_errors(run.errors)
    if not np.isfinite(duration):
        duration = end
    if not np.isfinite(duration) and rated:
        duration = n / fps
    return Clip(run.frames.sample(n, frames), n, fps, duration, n < frames)


def windows(
    path: str | os.PathLike,
    frames: int,
    size: int,
    window_seconds: float,
    *,
    resize: str = "crop",
    ffmpeg_exe: str | None = None,
    threads: int = 1,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    stall_seconds: float | None = None,
) -> Iterator[tuple[np.ndarray, int]]:
    """Stream a video of any length as consecutive windows of
    ``window_seconds`` by the frames' own times (so a variable frame rate
    gives as many windows as the video has seconds to cover), each sampled
    to ``frames`` frames like decode_clip samples a whole clip. Yields
    (uint8 [T, S, S, 3], source frames in the window); a stretch without
    frames yields none. A window holds its sampled frames, as many as its
    seconds hold at the stream's rate, and at most ``buffer_bytes`` of
    others, whatever the source's rate (a window of another length is
    sampled from those). A video no longer than one window gives exactly
    the frames decode_clip gives. Raises BadVideo as decode_clip does.
    """
    check_readable(path)
    check_container(path)
    exe = ffmpeg_exe or find_ffmpeg()
    stream = FrameStream(path, size, resize, exe, threads, timeout=stall_seconds, times=True)
    fps = stream.frame_rate()
    span = max(frames, round(window_seconds * fps))
    cap = max(2 * frames, buffer_bytes // (size * size * 3))
    full = sample_indices(span, frames)
    window, count, current = _Frames(cap, keep=full), 0, 0
    first = last = float("nan")
    for frame in stream:
        t = stream.next_time()
        if not math.isfinite(t):
            t = last + 1 / fps if math.isfinite(last) else 0.0
        if not math.isfinite(first):
            first = t
        last = t
        # The margin keeps a frame on a window's edge in the later window,
        # whatever the rounding: 2.4 / 0.8 is 2.999... in floating point.
        index = math.floor((t - first) / window_seconds + 1e-7)
        if index > current:
            if count:
                yield window.sample(count, frames), count
            window, count, current = _Frames(cap, keep=full), 0, index
        window.add(count, frame)
        count += 1
    stream.check()
    if count:
        yield window.sample(count, frames), count


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
