"""Classify new videos with a saved model.

A video is cut into consecutive windows of ``window_seconds``; each window is
sampled to the model's T frames the way extraction samples a clip, and the
window scores are averaged, weighted by the frames each window covers. For V
temporal views a window is sampled to T x K frames, as extraction stores K
frames a segment (K = V unless given), and the V views that evaluation takes
of a stored clip are averaged. A
video no longer than one window is classified exactly like an extracted
clip. Only one window is decoded into memory at a time.

A calibrated model (calibration.json beside it) gives calibrated
probabilities, and a video whose rejection score, the frame-weighted mean of
its windows' scores, is below the threshold chosen on the validation split
is reported as ``unknown``: none of the trained actions. The top classes and
the score are still given.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import pandas as pd

from .scores import format_top
from .settings import defaults
from .manifest import read_classes
from .clipmodel import load_rejecting, model_geometry, num_classes
from .video import BadVideo, find_ffmpeg, windows

log = logging.getLogger(__name__)

COLUMNS = ["video", "status", "windows", "frames", "predicted", "probability", "top", "error"]
# With a rejection: the score, and whether it is below the threshold (the
# top class is then in ``top``, ``predicted`` says unknown).
REJECTION_COLUMNS = ["score", "unknown"]
UNKNOWN = "unknown"


class Window(NamedTuple):
    """One classified window, as :func:`classify_windows` yields it."""

    probs: np.ndarray  # class probabilities (calibrated when the model carries a temperature)
    info: Any  # what the caller keeps of the window (the frames it covers, its time)
    score: float  # the rejection score: higher is more like a trained action
    unknown: bool  # below the rejection threshold: none of the trained actions


class Rejection(Protocol):
    """How a window is judged none of the trained actions: a score of its
    probabilities (and the model's features, when the model gives them as a
    second output) against a threshold chosen on the validation split."""

    threshold: float

    def score(self, probs: np.ndarray, features: np.ndarray | None) -> np.ndarray: ...


def find_videos(
    paths: Iterable[str | os.PathLike], extensions: Iterable[str] | None = None
) -> list[Path]:
    """The given files, and the videos under the given folders (sorted): the
    files whose ending is one of ``extensions`` (data.extensions, its default
    when None, as the manifest takes them). Paths that do not exist are kept,
    so that they are reported."""
    exts = {e.lower() for e in (extensions or defaults("data")["extensions"])}
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            inside = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in exts)
            if not inside:
                log.warning("%s holds no videos (%s)", p, ", ".join(sorted(exts)))
            found.extend(inside)
        else:
            found.append(p)
    return found


def printable(text: str) -> str:
    """``text`` as valid UTF-8: the bytes of a file name that is not UTF-8
    (which Python holds as surrogates) written as escapes, like ``\\xff``."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def default_classes(model_path: str | os.PathLike, num_classes: int) -> list[str]:
    """classes.txt beside the model, else the workflow's results/data/classes.txt
    (for results/final/model.keras), else numbered names."""
    model_path = Path(model_path)
    for path in (
        model_path.with_name("classes.txt"),
        model_path.parent.parent / "data/classes.txt",
    ):
        if path.exists():
            names = read_classes(path)
            if len(names) == num_classes:
                return names
            log.warning("%s names %d classes, the model has %d", path, len(names), num_classes)
    return [f"class_{i}" for i in range(num_classes)]


def classify_video(model, path: str | os.PathLike, **options) -> tuple[np.ndarray, int, int]:
    """Class probabilities of one video: (probabilities, windows, frames),
    each window's the mean over ``views`` temporal views of its T x
    ``per_segment`` sampled frames. ``options``: :func:`video_windows`'s."""
    probs, n_windows, n_frames, _ = video_verdict(video_windows(model, path, **options))
    return probs, n_windows, n_frames


def video_windows(
    model,
    path: str | os.PathLike,
    *,
    window_seconds: float = 10.0,
    resize: str = "crop",
    ffmpeg_exe: str | None = None,
    batch_size: int = 4,
    views: int = 1,
    per_segment: int | None = None,
    rejection: Rejection | None = None,
) -> list[Window]:
    """The classified windows of one video (:func:`classify_windows`), each
    window's ``info`` the frames it covers."""
    frames, size = model_geometry(model)
    per_segment = per_segment or views
    sampled = windows(
        path, frames * per_segment, size, window_seconds, resize=resize, ffmpeg_exe=ffmpeg_exe
    )
    return list(
        classify_windows(
            model,
            sampled,
            views=views,
            per_segment=per_segment,
            batch_size=batch_size,
            rejection=rejection,
        )
    )


def video_verdict(scored: list[Window]) -> tuple[np.ndarray, int, int, float]:
    """(probabilities, windows, frames, score) of a video from its windows:
    probabilities and score weighted by the frames each window covers."""
    w = np.asarray([window.info for window in scored], np.float64)
    probs = (np.stack([window.probs for window in scored]) * w[:, None]).sum(axis=0) / w.sum()
    score = float(np.asarray([window.score for window in scored]) @ w / w.sum())
    return probs, len(w), int(w.sum()), score


def classify_windows(
    model,
    sampled: Iterable[tuple[np.ndarray, Any]],
    *,
    views: int = 1,
    per_segment: int | None = None,
    batch_size: int = 4,
    rejection: Rejection | None = None,
) -> Iterator[Window]:
    """The one loop that classifies the windows of a video, a file's or a
    stream's: ``sampled`` gives each window's frames, sampled to T x K
    (K = ``per_segment``, else ``views``), with what its caller keeps of it
    (the frames it covers, its time); yields each window's :class:`Window`
    (class probabilities: the mean over ``views`` views, :func:`view_scores`;
    the rejection score and verdict of ``rejection``, else the top
    probability and never unknown), in order, as soon as its batch of
    ``batch_size`` is classified (1: at once, as a live stream needs)."""
    clips: list[np.ndarray] = []
    kept: list[Any] = []
    for clip, info in sampled:
        clips.append(clip)
        kept.append(info)
        if len(clips) == batch_size:
            yield from _scored(model, clips, kept, views, per_segment, rejection)
            clips, kept = [], []
    if clips:
        yield from _scored(model, clips, kept, views, per_segment, rejection)


def _scored(model, clips: list, kept: list, views: int, per_segment, rejection) -> list[Window]:
    out = view_scores(model, np.stack(clips), views, per_segment)
    probs, features = out if isinstance(out, tuple) else (out, None)
    if rejection is None:
        scores, unknown = probs.max(axis=1), np.zeros(len(probs), bool)
    else:
        scores = np.asarray(rejection.score(probs, features), np.float64)
        unknown = scores < rejection.threshold
    return [
        Window(p, info, float(s), bool(u))
        for p, info, s, u in zip(probs, kept, scores, unknown, strict=True)
    ]


def view_scores(model, clips: np.ndarray, views: int, per_segment: int | None = None):
    """Probabilities of clips sampled to T x K frames [n, T * K, ...] (K =
    ``per_segment``, else ``views``), the layout of a shard with K frames a
    segment: the mean over the ``views`` views that evaluation takes of such a
    clip (:func:`.pipeline.view_offsets`; with K = V, view v is frames v,
    v + V, v + 2V, ...). A model with a second output (features, for a
    rejection score) gives (probabilities, features), each the views' mean."""
    from .pipeline import view_offsets

    n, k = len(clips), per_segment or views
    stacked = np.concatenate([clips[:, o::k] for o in view_offsets(views, k)])
    out = model.predict_on_batch(stacked)

    def mean(x) -> np.ndarray:
        return np.asarray(x, np.float64).reshape(views, n, -1).mean(axis=0)

    if isinstance(out, list | tuple):
        probs, features = out
        return mean(probs), mean(features)
    return mean(out)


def predict_videos(
    model_path: str | os.PathLike,
    videos: Iterable[str | os.PathLike],
    *,
    classes: list[str] | None = None,
    top: int = 5,
    window_seconds: float = 10.0,
    resize: str = "crop",
    ffmpeg_exe: str | None = None,
    on_result=None,
    views: int = 1,
    per_segment: int | None = None,
    calibration: bool = True,
) -> pd.DataFrame:
    """Classify every video; one that fails gets status ``failed`` and the
    reason, and the others are still classified. ``on_result`` is called
    with each row as it is ready. A model with a calibration beside it (and
    ``calibration``) gives calibrated probabilities, and a table with the
    rejection's score and verdict (:data:`REJECTION_COLUMNS`)."""
    if window_seconds <= 0:
        raise ValueError(f"window_seconds must be positive, not {window_seconds}")
    if views < 1:
        raise ValueError(f"views must be at least 1, not {views}")
    model, rejection = load_rejecting(model_path, calibration=calibration)
    classes_n = num_classes(model)
    names = classes or default_classes(model_path, classes_n)
    if len(names) != classes_n:
        raise ValueError(f"{len(names)} class names given for a model of {classes_n} classes")
    columns = COLUMNS + (REJECTION_COLUMNS if rejection is not None else [])
    exe = find_ffmpeg(ffmpeg_exe)
    rows = []
    for video in videos:
        row = dict.fromkeys(columns, "")
        row["video"] = printable(str(video))
        try:
            scored = video_windows(
                model,
                video,
                window_seconds=window_seconds,
                resize=resize,
                ffmpeg_exe=exe,
                views=views,
                per_segment=per_segment,
                rejection=rejection,
            )
            probs, n_windows, n_frames, score = video_verdict(scored)
        except BadVideo as err:
            row.update(status="failed", error=printable(str(err)))
        else:
            best = int(probs.argmax())
            row.update(
                status="ok",
                windows=n_windows,
                frames=n_frames,
                predicted=names[best],
                probability=round(float(probs[best]), 6),
                top=format_top(probs, names, min(top, classes_n)),
            )
            if rejection is not None:
                unknown = score < rejection.threshold
                row.update(score=round(score, 6), unknown=bool(unknown))
                if unknown:
                    row["predicted"] = UNKNOWN
        rows.append(row)
        if on_result is not None:
            on_result(row)
    return pd.DataFrame(rows, columns=columns)
