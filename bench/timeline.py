"""Timelines on long videos joined from real clips, against the known
boundaries.

A clip model is made without training a network: the frozen ImageNet
EfficientNet-Lite0 on every frame and, as its head, a logistic regression on
the time-averaged features of the training clips (every clip of the three
actions of ucf101-real3-train, groups g08-g25), set as the workflow's
average head (Dense on each frame, averaged over time: the same scores).
Its rejection is the top probability against the 5th percentile of the
training clips' out-of-fold top probabilities (grouped by source video).

Long videos are joined from other clips, of other source videos
(ucf101-sample, groups g01-g05): clips of the three actions and of other
classes (whose ground truth is unknown, no action the model knows), in a
seeded order, each normalised to 320 x 240 at 25 fps and re-encoded as one
MPEG-4 file; the boundaries are the clips' own durations. Each video gets a
timeline at a few strides (windows of the training clips' median length),
and its segments at a few minimum durations are scored by

  frame accuracy   the share of the video's frames (at 25 fps) whose segment
                   class is the true one (unknown for other classes), of all
                   frames and of the frames of the three trained actions
  segment F1@0.5   a segment is a hit when it overlaps an unmatched true
                   segment of its class with IoU >= 0.5 (adjacent true
                   segments of one class count as one)

without and with the rejection; with the seconds of compute (decoding and
the model) per minute of video, per stride.

    python bench/timeline.py [--clips DIR] [--sample DIR] [--backbone LITE0.keras]
        [--frames 8] [--size 224] [--videos 3] [--clips-per-video 10] [--others 3]
        [--strides 0.5 1 2] [--min-durations 0 1 2] [--work DIR] [--out table.md]
        [--figure timeline.png] [--limit N]

--limit N trains on N clips a class and joins one video of 4 clips (a smoke run).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from real import SAMPLE, add_clip_arguments, check_inputs  # noqa: E402

from actionrec.manifest import parse_clip_name  # noqa: E402
from actionrec.timeline import UNKNOWN, label_at, segments, write_timeline  # noqa: E402
from actionrec.video import decode_clip, find_ffmpeg  # noqa: E402

FPS = 25.0
IOU = 0.5
KNOWN_PERCENTILE = 5


class TopProbability:
    """A rejection: a window whose top probability is below ``threshold``
    is none of the trained actions."""

    def __init__(self, threshold: float):
        self.threshold = threshold

    def score(self, probs: np.ndarray, features: np.ndarray | None) -> np.ndarray:
        return np.asarray(probs).max(axis=1)


def training_clips(root: Path, limit: int | None) -> pd.DataFrame:
    rows = [
        {
            "path": p,
            "class": p.parent.name,
            "group": f"{p.parent.name}_{parse_clip_name(p.stem)[0]}",
        }
        for p in sorted(root.glob("*/*.avi"))
    ]
    clips = pd.DataFrame(rows)
    if limit:
        # One clip a source video, so that the folds below hold several.
        clips = clips.groupby("group").head(1).groupby("class").head(limit)
        clips = clips.reset_index(drop=True)
    return clips


def clip_features(backbone, clips: pd.DataFrame, frames: int, size: int, cache: Path):
    """Time-averaged backbone features of each clip and its duration, cached."""
    if cache.exists():
        saved = np.load(cache)
        if len(saved["features"]) == len(clips):
            return saved["features"], saved["seconds"]
    features, seconds = [], []
    for path in clips["path"]:
        clip = decode_clip(path, frames, size)
        features.append(np.asarray(backbone.predict_on_batch(clip.frames)).mean(axis=0))
        seconds.append(clip.source_frames / clip.fps)
    np.savez(cache, features=np.stack(features), seconds=np.asarray(seconds))
    return np.stack(features), np.asarray(seconds)


def fit_model(args, work: Path):
    """(clip model, class names, rejection, training clips' median seconds, seconds)."""
    import keras
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_predict

    from actionrec.model import assemble, build_backbone, build_head

    start = time.perf_counter()
    clips = training_clips(args.clips, args.limit)
    names = sorted(clips["class"].unique())
    labels = clips["class"].map(names.index).to_numpy()
    backbone = build_backbone(str(args.backbone), args.size, "none")
    cache = work / f"features-{args.backbone.stem}-{args.frames}x{args.size}-{len(clips)}.npz"
    x, seconds = clip_features(backbone, clips, args.frames, args.size, cache)
    regression = LogisticRegression(C=args.c, max_iter=2000)
    folds = min(5, clips["group"].nunique())
    held_out = cross_val_predict(
        regression, x, labels, groups=clips["group"], cv=GroupKFold(folds), method="predict_proba"
    )
    threshold = float(np.percentile(held_out.max(axis=1), KNOWN_PERCENTILE))
    regression.fit(x, labels)
    head = build_head(len(names), args.frames, (x.shape[1],), "average")
    head.get_layer("frame_logits").set_weights(
        [regression.coef_.T.astype("float32"), regression.intercept_.astype("float32")]
    )
    model = assemble(backbone, head, args.frames, args.size)
    keras.utils.set_random_seed(0)
    accuracy = float((held_out.argmax(axis=1) == labels).mean())
    print(
        f"model: {args.backbone.parent.name} frozen, logistic regression on {len(clips)} clips "
        f"of {', '.join(names)} (out-of-fold clip accuracy {accuracy:.3f}, by group); "
        f"rejection below top probability {threshold:.3f}; {time.perf_counter() - start:.0f} s",
        flush=True,
    )
    return model, names, TopProbability(threshold), float(np.median(seconds))


def plan_videos(args, names: list[str]) -> list[list[tuple[Path, str]]]:
    """Each joined video's clips and their true class (unknown for the other
    classes), in a seeded order without two neighbours of one class."""
    rng = np.random.default_rng(args.seed)
    every = sorted(args.sample.glob("*/*.avi"))
    known = [(p, p.parent.name) for p in every if p.parent.name in names]
    others = [(p, UNKNOWN) for p in every if p.parent.name not in names]
    count, n_others = (4, 1) if args.limit else (args.clips_per_video, args.others)
    videos = []
    for _ in range(1 if args.limit else args.videos):
        for _ in range(1000):
            picked = [known[i] for i in rng.choice(len(known), count - n_others, replace=False)]
            picked += [others[i] for i in rng.choice(len(others), n_others, replace=False)]
            order = [picked[i] for i in rng.permutation(len(picked))]
            classes = [c if c != UNKNOWN else p.parent.name for p, c in order]
            if all(a != b for a, b in zip(classes, classes[1:], strict=False)):
                break
        videos.append(order)
    return videos


def join(clips: list[tuple[Path, str]], out: Path, exe: str) -> pd.DataFrame:
    """One MPEG-4 file of the clips, each at 320 x 240 and 25 fps; the true
    segments (start, end, class), adjacent ones of one class joined."""
    inputs, chains, rows, at = [], [], [], 0.0
    for i, (path, label) in enumerate(clips):
        clip = decode_clip(path, 1, 16)
        seconds = round(clip.source_frames / clip.fps * FPS) / FPS
        inputs += ["-i", str(path)]
        chains.append(f"[{i}:v]scale=320:240,setsar=1,fps={FPS:g},trim=duration={seconds}[v{i}]")
        rows.append({"start": at, "end": at + seconds, "class": label})
        at += seconds
    graph = ";".join(chains) + ";" + "".join(f"[v{i}]" for i in range(len(clips)))
    graph += f"concat=n={len(clips)}:v=1:a=0[out]"
    subprocess.run(
        [exe, "-nostdin", "-loglevel", "error", "-y", *inputs, "-filter_complex", graph]
        + ["-map", "[out]", "-c:v", "mpeg4", "-q:v", "3", str(out)],
        check=True,
    )
    truth = pd.DataFrame(rows)
    merged = truth["class"].ne(truth["class"].shift()).cumsum()
    return (
        truth.groupby(merged)
        .agg(start=("start", "min"), end=("end", "max"), **{"class": ("class", "first")})
        .reset_index(drop=True)
    )


def frame_accuracy(segs: pd.DataFrame, truth: pd.DataFrame) -> tuple[float, float]:
    """The share of frames whose segment class is the true one: of all
    frames, and of the frames of the trained actions."""
    times = np.arange(0, truth["end"].iloc[-1], 1 / FPS) + 0.5 / FPS
    true = label_at(truth, times)
    right = label_at(segs, times) == true
    return float(right.mean()), float(right[true != UNKNOWN].mean())


def segment_f1(segs: pd.DataFrame, truth: pd.DataFrame, threshold: float = IOU) -> float:
    """F1 of segments at IoU >= ``threshold``: each predicted segment, in
    order, matches the unmatched true segment of its class it overlaps most."""
    used = np.zeros(len(truth), bool)
    hits = 0
    for seg in segs.itertuples(index=False):
        inter = np.clip(
            np.minimum(seg.end, truth["end"]) - np.maximum(seg.start, truth["start"]), 0, None
        )
        union = np.maximum(seg.end, truth["end"]) - np.minimum(seg.start, truth["start"])
        iou = np.where((truth["class"] == seg[2]) & ~used, inter / union, 0)
        best = int(np.argmax(iou))
        if iou[best] >= threshold:
            used[best], hits = True, hits + 1
    precision, recall = hits / max(len(segs), 1), hits / max(len(truth), 1)
    return 0.0 if hits == 0 else 2 * precision * recall / (precision + recall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_clip_arguments(parser)  # --clips: the training clips
    parser.add_argument("--sample", type=Path, default=SAMPLE, help=f"default {SAMPLE}")
    parser.add_argument("--c", type=float, default=1.0, help="the regression's C (default 1)")
    parser.add_argument("--videos", type=int, default=3, help="joined videos (default 3)")
    parser.add_argument("--clips-per-video", type=int, default=10, help="default 10")
    parser.add_argument("--others", type=int, default=3, help="clips of other classes a video")
    parser.add_argument("--strides", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--min-durations", type=float, nargs="+", default=[0.0, 1.0, 2.0])
    parser.add_argument("--window", type=float, help="seconds (default: training median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="keep the features and joined videos here")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    parser.add_argument("--figure", type=Path, help="the first video's figure (stride near 1)")
    parser.add_argument("--limit", type=int, help="a smoke run: N training clips a class")
    args = parser.parse_args()
    check_inputs(args)
    if not any(args.sample.glob("*/*.avi")):
        raise SystemExit(f"--sample {args.sample} holds no <Class>/*.avi clips")
    logging.basicConfig(level=logging.WARNING)
    from actionrec.timeline import score_video

    work = args.work or Path(tempfile.mkdtemp(prefix="timeline-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    model, names, rejection, median = fit_model(args, work)
    window = args.window or round(median, 2)
    strides = args.strides[:1] if args.limit else args.strides
    exe = find_ffmpeg()
    joined = []
    for i, clips in enumerate(plan_videos(args, names)):
        path = work / f"joined-{args.seed}-{i}.avi"
        truth = join(clips, path, exe)
        joined.append((path, truth))
        print(
            f"{path.name}: {truth['end'].iloc[-1]:.1f} s, {len(clips)} clips: "
            + ", ".join(
                f"{r['class']} {r['start']:.1f}-{r['end']:.1f}" for _, r in truth.iterrows()
            ),
            flush=True,
        )
    minutes = sum(t["end"].iloc[-1] for _, t in joined) / 60
    rows = []
    for stride in strides:
        start = time.perf_counter()
        lines = [
            score_video(
                model, path, names, window_seconds=window, stride=stride, rejection=rejection
            )
            for path, _ in joined
        ]
        per_minute = (time.perf_counter() - start) / minutes
        if args.figure and stride == min(strides, key=lambda s: abs(s - 1)):
            write_timeline(
                lines[0], work / "figure", min_duration=args.min_durations[-1], truth=joined[0][1]
            )
            args.figure.parent.mkdir(parents=True, exist_ok=True)
            args.figure.write_bytes((work / "figure/timeline.png").read_bytes())
        for rejecting in (False, True):
            for min_duration in args.min_durations:
                accuracy, known, f1 = [], [], []
                for line, (_, truth) in zip(lines, joined, strict=True):
                    kept = line.unknown
                    if not rejecting:
                        line.unknown = [False] * len(kept)
                    segs = segments(line, min_duration)
                    line.unknown = kept
                    every, of_known = frame_accuracy(segs, truth)
                    accuracy.append(every)
                    known.append(of_known)
                    f1.append(segment_f1(segs, truth))
                rows.append(
                    {
                        "stride s": stride,
                        "min duration s": min_duration,
                        "rejection": "top probability" if rejecting else "none",
                        "frame accuracy": np.mean(accuracy),
                        "of trained actions": np.mean(known),
                        "segment F1@0.5": np.mean(f1),
                        "s per min of video": per_minute,
                    }
                )
    table = pd.DataFrame(rows)
    other = sum((t["end"] - t["start"])[t["class"] == UNKNOWN].sum() for _, t in joined)
    head = (
        f"{len(joined)} joined videos, {minutes:.1f} min in all ({other / 60 / minutes:.0%} of "
        f"it other classes); windows of {window:g} s"
        f"{'' if args.window else ' (the median of the training clips)'}, T={args.frames}, "
        f"S={args.size}\n\n"
    )
    text = head + table.to_markdown(index=False, floatfmt=".3f") + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
