"""Where in a long video each action happens: a timeline.

Every ``stride`` seconds a window of ``window_seconds`` (by default the
length of the clips the model was trained on) is sampled to the model's T x K
frames, the way extraction samples a clip, and classified by the loop that
every caller shares (:func:`.predict.classify_windows`: calibrated
probabilities, the rejection verdict). Each window then stands for the
stretch of time nearest its centre; runs of windows with one top class
become segments, and a segment shorter than ``min_duration`` is given to the
neighbour that its windows score higher. Windows judged none of the trained
actions make ``unknown`` segments.

A file is decoded once, as one stream of frames with their times; only the
frames of the current window are held, every k-th of them when they would
not fit in ``buffer_bytes``, so memory stays bounded whatever the video's
length and frame rate. What grows with the length is one row of class
probabilities a window (an hour at a 1 s stride: 3,600 rows).

Written per video: ``windows.tsv`` (every window's time and probabilities),
``segments.tsv`` and ``segments.json``, and ``timeline.png`` (the top
classes' scores over time, the segments as coloured bars, thumbnails along
the top). No TensorFlow at import time.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from .catalog import TIMELINE_MIN_DURATION, TIMELINE_STRIDE
from .predict import UNKNOWN
from .video import (
    DEFAULT_BUFFER_BYTES,
    FrameStream,
    check_container,
    check_readable,
    find_ffmpeg,
    sample_indices,
)

log = logging.getLogger(__name__)

# The window when the model's training clips cannot be found beside it.
DEFAULT_WINDOW_SECONDS = 4.0
THUMBNAILS = 8
# Seconds between two progress lines of one video at least.
PROGRESS_SECONDS = 5.0
SEGMENT_COLUMNS = ["start", "end", "class", "score", "windows"]
FILES = ("windows.tsv", "segments.tsv", "segments.json", "timeline.png")


class Span(NamedTuple):
    """What a timeline keeps of a window besides its scores."""

    start: float  # seconds from the video's first frame
    end: float
    thumbnail: np.ndarray  # the window's middle sampled frame


def training_seconds(report: str | os.PathLike) -> float | None:
    """The median length of the clips a model was trained on, from its run's
    extraction report (results/data/extract_report.tsv); None without one."""
    if not Path(report).exists():
        return None
    table = pd.read_csv(report, sep="\t")
    ok = table.loc[table["status"] == "ok", "duration"].astype(float)
    ok = ok[np.isfinite(ok) & (ok > 0)]
    return round(float(ok.median()), 2) if len(ok) else None


def window_length(model_path: str | os.PathLike, given: float | None) -> float:
    """``given``, else the length of the clips the model was trained on (the
    extraction report beside it: results/data/ for results/final/model.keras),
    else DEFAULT_WINDOW_SECONDS."""
    if given is not None:
        return float(given)
    seconds = training_seconds(Path(model_path).parent.parent / "data/extract_report.tsv")
    if seconds is None:
        log.warning(
            "no extraction report beside %s: windows of %g s (set the window's seconds)",
            model_path,
            DEFAULT_WINDOW_SECONDS,
        )
        return DEFAULT_WINDOW_SECONDS
    return seconds


def timed_windows(
    frames: Iterable[tuple[np.ndarray, float]],
    need: int,
    window_seconds: float,
    stride: float,
    fps: float,
    max_frames: int,
) -> Iterator[tuple[np.ndarray, Span]]:
    """Windows of ``window_seconds`` starting every ``stride`` seconds from
    the first frame, from (frame, time) pairs in order: each yielded once a
    frame at or past its end has come, sampled to ``need`` frames. A video
    shorter than one window gives one window of all its frames; a stretch
    without frames gives none. At most ``max_frames`` frames (but at least
    2 x ``need``) are held at the nominal rate ``fps``: every k-th when more
    would come."""
    span = max(1, math.ceil(window_seconds * fps))
    every = math.ceil(span / max(2 * need, max_frames))
    held: deque[tuple[float, np.ndarray]] = deque()
    first, k, emitted = None, 0, 0

    def sampled(start: float, end: float) -> tuple[np.ndarray, Span] | None:
        inside = [frame for t, frame in held if start <= t < end]
        if not inside:
            return None
        picked = np.stack([inside[i] for i in sample_indices(len(inside), need)])
        return picked, Span(start - first, end - first, picked[len(picked) // 2])

    n = -1
    for n, (frame, t) in enumerate(frames):
        if first is None:
            first = t
        while t >= first + k * stride + window_seconds:
            start = first + k * stride
            window = sampled(start, start + window_seconds)
            if window is not None:
                yield window
                emitted += 1
            k += 1
        while held and held[0][0] < first + k * stride:
            held.popleft()
        if n % every == 0:
            held.append((t, frame))
    if first is not None and not emitted and held:
        # Shorter than one window: the whole video, as a clip is classified.
        last = held[-1][0]
        window = sampled(first, last + ((last - first) / n if n > 0 else 1 / fps))
        if window is not None:
            yield window


@dataclass
class Timeline:
    """A video's windows, in order."""

    video: str
    classes: list[str]
    window_seconds: float
    stride: float
    threshold: float | None = None  # the rejection threshold, when one applies
    duration: float = float("nan")
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    probs: list[np.ndarray] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    unknown: list[bool] = field(default_factory=list)
    thumbnails: list[tuple[float, np.ndarray]] = field(default_factory=list)
    _every: int = 1

    def add(self, probs, score: float, unknown: bool, start: float, end: float, thumb) -> None:
        """One classified window, with its middle frame; a few of those are
        kept, evenly spaced, whatever the count of windows."""
        if len(self.starts) % self._every == 0:
            self.thumbnails.append(((start + end) / 2, np.asarray(thumb)))
            if len(self.thumbnails) > 4 * THUMBNAILS:
                self._every *= 2
                self.thumbnails = self.thumbnails[::2]
        self.starts.append(float(start))
        self.ends.append(float(end))
        self.probs.append(np.asarray(probs, np.float64))
        self.scores.append(float(score))
        self.unknown.append(bool(unknown))

    def add_window(self, window) -> None:
        """A :class:`.predict.Window` whose info is a :class:`Span`."""
        span = window.info
        self.add(window.probs, window.score, window.unknown, *span)

    @property
    def end(self) -> float:
        """The end of the video: its duration, else the last window's end."""
        last = self.ends[-1] if self.ends else 0.0
        return max(self.duration, last) if math.isfinite(self.duration) else last

    def table(self) -> pd.DataFrame:
        """One row per window: start, end, predicted, probability, score,
        unknown, and each class's probability."""
        probs = np.asarray(self.probs).reshape(len(self.starts), len(self.classes))
        best = probs.argmax(axis=1) if len(probs) else np.zeros(0, int)
        table = pd.DataFrame(
            {
                "start": np.round(self.starts, 3),
                "end": np.round(self.ends, 3),
                "predicted": [
                    UNKNOWN if u else self.classes[b]
                    for b, u in zip(best, self.unknown, strict=True)
                ],
                "probability": np.round(probs.max(axis=1) if len(probs) else [], 6),
                "score": np.round(self.scores, 6),
                "unknown": self.unknown,
            }
        )
        columns = pd.DataFrame(np.round(probs, 6), columns=self.classes)
        return pd.concat([table, columns], axis=1)


def segments(timeline: Timeline, min_duration: float = TIMELINE_MIN_DURATION) -> pd.DataFrame:
    """The timeline as segments (start, end, class, score, windows): each
    window stands for the time nearest its centre; runs of one top class
    (or of unknown windows) are joined, and a run shorter than
    ``min_duration`` is given to the neighbour its windows score higher,
    shortest first, until every segment lasts ``min_duration`` (or one is
    left). score: the mean probability of the class over the segment's
    windows (of the top class, for unknown)."""
    n = len(timeline.starts)
    if n == 0:
        return pd.DataFrame(columns=SEGMENT_COLUMNS)
    probs = np.asarray(timeline.probs)
    unknown = np.asarray(timeline.unknown)
    labels = np.where(unknown, -1, probs.argmax(axis=1))
    centres = (np.asarray(timeline.starts) + np.asarray(timeline.ends)) / 2
    bounds = np.concatenate(
        [[min(timeline.starts[0], 0.0)], (centres[1:] + centres[:-1]) / 2, [timeline.end]]
    )

    def affinity(label: int, first: int, last: int) -> float:
        if label < 0:
            return float(unknown[first : last + 1].mean())
        return float(probs[first : last + 1, label].mean())

    runs = _runs(labels)
    while len(runs) > 1:
        lengths = [bounds[b + 1] - bounds[a] for _, a, b in runs]
        i = int(np.argmin(lengths))
        if lengths[i] >= min_duration:
            break
        _, a, b = runs[i]
        sides = [j for j in (i - 1, i + 1) if 0 <= j < len(runs)]
        j = max(sides, key=lambda j: affinity(runs[j][0], a, b))
        labels[a : b + 1] = runs[j][0]
        runs = _runs(labels)
    rows = []
    for label, a, b in runs:
        if label < 0:
            score = probs[a : b + 1].max(axis=1).mean()
        else:
            score = probs[a : b + 1, label].mean()
        rows.append(
            {
                "start": round(float(bounds[a]), 3),
                "end": round(float(bounds[b + 1]), 3),
                "class": UNKNOWN if label < 0 else timeline.classes[label],
                "score": round(float(score), 6),
                "windows": b - a + 1,
            }
        )
    return pd.DataFrame(rows, columns=SEGMENT_COLUMNS)


def _runs(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """(label, first, last) of each run of equal labels."""
    edges = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [len(labels)]]) - 1
    return [(int(labels[a]), int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def label_at(segs: pd.DataFrame, times: np.ndarray) -> np.ndarray:
    """The segments' class at each of ``times`` (seconds); '' outside them."""
    out = np.full(len(times), "", dtype=object)
    for row in segs.itertuples(index=False):
        out[(times >= row.start) & (times < row.end)] = row[2]
    return out


def score_video(
    model,
    path: str | os.PathLike,
    classes: list[str],
    *,
    window_seconds: float,
    stride: float = TIMELINE_STRIDE,
    views: int = 1,
    per_segment: int | None = None,
    batch_size: int = 4,
    rejection=None,
    resize: str = "crop",
    ffmpeg_exe: str | None = None,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    stall_seconds: float | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> Timeline:
    """The timeline of one video file: a window of ``window_seconds`` every
    ``stride`` seconds, each the mean over ``views`` temporal views of its
    T x ``per_segment`` sampled frames. ``on_progress`` gets a line at every
    tenth of the video's duration (every 100 windows when it is unknown).
    Raises BadVideo as :func:`.video.windows` does."""
    from .clipmodel import model_geometry
    from .predict import classify_windows

    if window_seconds <= 0 or stride <= 0:
        raise ValueError(f"window and stride must be positive, not {window_seconds}, {stride}")
    check_readable(path)
    check_container(path)
    frames, size = model_geometry(model)
    per_segment = per_segment or views
    stream = FrameStream(
        path, size, resize, ffmpeg_exe or find_ffmpeg(), 1, timeout=stall_seconds, times=True
    )
    fps = stream.frame_rate()
    timeline = Timeline(
        str(path),
        list(classes),
        window_seconds,
        stride,
        threshold=getattr(rejection, "threshold", None),
        duration=stream.header()[1],
    )

    def timed() -> Iterator[tuple[np.ndarray, float]]:
        last = float("nan")
        for frame in stream:
            t = stream.next_time()
            if not math.isfinite(t):
                t = last + 1 / fps if math.isfinite(last) else 0.0
            last = t
            yield frame, t

    sampled = timed_windows(
        timed(),
        frames * per_segment,
        window_seconds,
        stride,
        fps,
        max(2 * frames * per_segment, buffer_bytes // (size * size * 3)),
    )
    progress = _Progress(timeline, on_progress)
    scoring = {"views": views, "per_segment": per_segment, "rejection": rejection}
    for window in classify_windows(model, sampled, batch_size=batch_size, **scoring):
        timeline.add_window(window)
        progress.update()
    stream.check()
    if not math.isfinite(timeline.duration) and stream.delivered:
        timeline.duration = timeline.ends[-1] if timeline.ends else float("nan")
    progress.done()
    return timeline


class _Progress:
    """A line at every tenth of the duration (or every 100 windows), at most
    one each PROGRESS_SECONDS: a short video gets none."""

    def __init__(self, timeline: Timeline, say: Callable[[str], None] | None):
        self.timeline, self.say = timeline, say
        self.started = self.last = time.perf_counter()
        self.next, self.said = 0.1, False

    def _line(self, done: str) -> None:
        now = time.perf_counter()
        line = (
            f"{self.timeline.video}: {done}, {len(self.timeline.starts)} windows, "
            f"{now - self.started:.1f} s"
        )
        log.info("%s", line)
        if self.say is not None:
            self.say(line)
        self.last, self.said = now, True

    def update(self) -> None:
        duration, n = self.timeline.duration, len(self.timeline.starts)
        if time.perf_counter() - self.last < PROGRESS_SECONDS:
            return
        if math.isfinite(duration) and duration > 0:
            share = self.timeline.ends[-1] / duration
            if self.next <= share < 1:
                self._line(f"{100 * share:.0f}% ({self.timeline.ends[-1]:.0f} of {duration:.0f} s)")
                self.next = math.floor(share * 10 + 1) / 10
        elif n % 100 == 0:
            self._line(f"{self.timeline.ends[-1]:.0f} s")

    def done(self) -> None:
        if self.said:
            self._line(f"done ({self.timeline.end:.1f} s)")


def write_timeline(
    timeline: Timeline,
    folder: str | os.PathLike,
    *,
    min_duration: float = TIMELINE_MIN_DURATION,
    top: int = 5,
    truth: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Write windows.tsv, segments.tsv, segments.json and timeline.png into
    ``folder`` (made when missing); returns the segments. ``truth``: known
    segments to draw below them."""
    from .tables import write_tsv

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    segs = segments(timeline, min_duration)
    write_tsv(timeline.table(), folder / "windows.tsv")
    write_tsv(segs, folder / "segments.tsv")
    about = {
        "video": timeline.video,
        "duration": round(timeline.end, 3),
        "window_seconds": timeline.window_seconds,
        "stride": timeline.stride,
        "min_duration": min_duration,
        "threshold": timeline.threshold,
        "windows": len(timeline.starts),
        "segments": segs.to_dict(orient="records"),
    }
    part = folder / ".segments.json.part"
    part.write_text(json.dumps(about, indent=1, default=_plain) + "\n")
    os.replace(part, folder / "segments.json")
    draw_timeline(timeline, segs, folder / "timeline.png", top=top, truth=truth)
    return segs


def _plain(value):
    return value.item() if hasattr(value, "item") else str(value)


def draw_timeline(
    timeline: Timeline,
    segs: pd.DataFrame,
    path: str | os.PathLike,
    *,
    top: int = 5,
    truth: pd.DataFrame | None = None,
) -> None:
    """Time on x: thumbnails along the top, the ``top`` classes' scores
    (by their highest window) as lines, the segments as coloured bars (and
    below them the ``truth``'s segments, where known)."""
    from .figures import LITERAL, _save, literal_legend, plt

    probs = np.asarray(timeline.probs).reshape(len(timeline.starts), len(timeline.classes))
    centres = (np.asarray(timeline.starts) + np.asarray(timeline.ends)) / 2
    end = max(timeline.end, 1e-3)
    shown = np.argsort(-probs.max(axis=0))[: min(top, len(timeline.classes))] if len(probs) else []
    rows = {"segments": segs} if truth is None else {"segments": segs, "truth": truth}
    segment_classes = list(dict.fromkeys(c for table in rows.values() for c in table["class"]))
    palette = plt.get_cmap("tab10")
    colour = {}
    for name in [timeline.classes[i] for i in shown] + segment_classes:
        if name == UNKNOWN:
            colour[name] = "0.6"
        elif name not in colour:
            colour[name] = palette(len([c for c in colour if c != UNKNOWN]) % 10)
    fig, (thumbs, lines, bars) = plt.subplots(
        3,
        1,
        figsize=(11, 5.2),
        sharex=True,
        gridspec_kw={"height_ratios": [1.1, 3, 0.8 * len(rows)], "hspace": 0.08},
    )
    width = end / THUMBNAILS
    if timeline.thumbnails:
        times = np.asarray([t for t, _ in timeline.thumbnails])
        # One slot each, side by side: the frame nearest the slot's middle.
        for k in range(THUMBNAILS):
            nearest = int(np.abs(times - (k + 0.5) * width).argmin())
            frame = timeline.thumbnails[nearest][1]
            thumbs.imshow(frame, extent=(k * width, (k + 0.96) * width, 0, 1), aspect="auto")
    thumbs.set_ylim(0, 1)
    thumbs.set_yticks([])
    thumbs.set_title(
        f"{Path(timeline.video).name}: windows of {timeline.window_seconds:g} s every "
        f"{timeline.stride:g} s",
        **LITERAL,
    )
    for i in shown:
        name = timeline.classes[i]
        lines.plot(centres, probs[:, i], color=colour[name], lw=1.4, label=name)
    if timeline.threshold is not None:
        lines.axhline(timeline.threshold, color="0.4", ls="--", lw=1, label="rejection threshold")
    lines.set_ylim(0, 1.02)
    lines.set_ylabel("probability")
    if len(shown):
        literal_legend(lines.legend(loc="upper right", fontsize=8, framealpha=0.8))
    for level, table in enumerate(reversed(rows.values())):
        for row in table.itertuples(index=False):
            name = row[2]
            bars.broken_barh([(row.start, row.end - row.start)], (level, 0.9), color=colour[name])
            # A label only where it fits: about 1/120 of the width a character.
            if row.end - row.start > len(name) * end / 120:
                bars.text(
                    (row.start + row.end) / 2,
                    level + 0.45,
                    name,
                    ha="center",
                    va="center",
                    fontsize=7,
                    clip_on=True,
                    **LITERAL,
                )
    bars.set_ylim(0, len(rows) - 0.1)
    bars.set_yticks([k + 0.45 for k in range(len(rows))], list(reversed(rows)))
    bars.set_xlim(0, end)
    bars.set_xlabel("time (s)")
    _save(fig, path)


def timeline_folders(
    videos: list[Path], output: str | os.PathLike | None, root: str | os.PathLike | None = None
) -> list[Path]:
    """Each video's timeline folder: under ``output``, named by the video's
    path under ``root`` (else its name) without the ending, with -2, -3, ...
    where names repeat; without ``output``, beside the video
    (``<name>.timeline``)."""
    if output is None:
        return [v.with_name(f"{v.stem}.timeline") for v in videos]
    taken: dict[str, int] = {}
    folders = []
    for v in videos:
        name = (Path(v).relative_to(root) if root else Path(v.name)).with_suffix("").as_posix()
        taken[name] = taken.get(name, 0) + 1
        suffix = f"-{taken[name]}" if taken[name] > 1 else ""
        folders.append(Path(output) / f"{name}{suffix}")
    return folders


SUMMARY_COLUMNS = ["video", "status", "windows", "segments", "folder", "error"]


def timelines(
    model_path: str | os.PathLike,
    videos: Iterable[str | os.PathLike],
    folders: Iterable[str | os.PathLike],
    *,
    classes: list[str] | None = None,
    window_seconds: float | None = None,
    stride: float = TIMELINE_STRIDE,
    min_duration: float = TIMELINE_MIN_DURATION,
    views: int = 1,
    per_segment: int | None = None,
    top: int = 5,
    calibration: bool = True,
    resize: str = "crop",
    ffmpeg_exe: str | None = None,
    on_result: Callable[[dict, pd.DataFrame | None], None] | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Write each video's timeline into its folder (:func:`write_timeline`);
    one row per video (video, status, windows, segments, folder, error). A
    video that fails gets status ``failed`` and the reason, and the others
    still get timelines. The model is calibrated, and judges windows
    unknown, as its calibration.json beside it says (unless not
    ``calibration``); ``window_seconds`` None: the training clips' length.
    ``on_result`` gets each row and its segments (None on failure)."""
    from .clipmodel import load_rejecting, num_classes
    from .predict import default_classes, printable
    from .video import BadVideo

    if stride <= 0 or min_duration < 0 or (window_seconds is not None and window_seconds <= 0):
        raise ValueError(
            "the window and stride must be positive, the minimum duration not negative"
        )
    model, rejection = load_rejecting(model_path, calibration=calibration)
    n = num_classes(model)
    names = classes or default_classes(model_path, n)
    if len(names) != n:
        raise ValueError(f"{len(names)} class names given for a model of {n} classes")
    window_seconds = window_length(model_path, window_seconds)
    exe = find_ffmpeg(ffmpeg_exe)
    rows = []
    for video, folder in zip(videos, folders, strict=True):
        row = dict.fromkeys(SUMMARY_COLUMNS, "")
        row.update(video=printable(str(video)), folder=printable(str(folder)))
        segs = None
        try:
            line = score_video(
                model,
                video,
                names,
                window_seconds=window_seconds,
                stride=stride,
                views=views,
                per_segment=per_segment,
                rejection=rejection,
                resize=resize,
                ffmpeg_exe=exe,
                on_progress=on_progress,
            )
            segs = write_timeline(line, folder, min_duration=min_duration, top=top)
        except BadVideo as err:
            row.update(status="failed", error=printable(str(err)))
        else:
            row.update(status="ok", windows=len(line.starts), segments=len(segs))
        rows.append(row)
        if on_result is not None:
            on_result(row, segs)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
