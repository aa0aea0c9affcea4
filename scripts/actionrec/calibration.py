"""Calibrated confidence and "none of these actions".

A softmax's top probability is not the chance of being right: fine-tuned
networks are overconfident (Guo et al., ICML 2017). One temperature T, fitted
on the validation split by negative log-likelihood, rescales every clip's
probabilities p to softmax(log p / T), which equals dividing the logits by T:
the ranking of classes, and so the accuracy, is unchanged. It is fitted with
the evaluation's views and crops, each view scaled before the views are
averaged, as predict and the stream average them.

A clip of an action the model was never trained on still gets one of its
classes. A rejection score, higher for clips more like the trained actions,
and a threshold chosen on the validation split so that a stated share of
known clips (``evaluate.reject_recall``) stays above it, say "unknown" below:

- ``probability``: the calibrated top probability (the usual baseline);
- ``distance``: minus the cosine distance of the clip's feature (the input of
  the model's last classification layer, averaged over time and views) to the
  nearest class mean of the train split's features. It asks whether the clip
  looks like any class seen in training, not only how peaked the softmax is.

Everything is written to ``calibration.json`` beside the model, with the
sha256 of the model file it was fitted for. No TensorFlow at import: the
functions that run a model import it when called.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .provenance import file_sha256 as sha256

if TYPE_CHECKING:
    from .pipeline import Data

log = logging.getLogger(__name__)

SCORES = ("probability", "distance")
BINS = 15  # the standard of ECE reports (Guo et al.)
FILE = "calibration.json"
# The temperature is searched over [1/20, 20]: far beyond any network's miscalibration.
LOG_T_BOUNDS = (float(np.log(0.05)), float(np.log(20.0)))
_TINY = 1e-30


def scale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T) over the last axis: temperature scaling of the
    logits, read from the probabilities (the same up to a constant per row)."""
    z = np.log(np.maximum(np.asarray(probs, np.float64), _TINY)) / float(temperature)
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def mean_scaled(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities of clips [n, k], or of their views [n, V, k] scaled one
    by one and averaged, as a calibrated model gives them."""
    scaled = scale(probs, temperature)
    return scaled.mean(axis=1) if scaled.ndim == 3 else scaled


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    p = np.asarray(probs, np.float64)[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.mean(np.log(np.maximum(p, _TINY))))


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the NLL of ``labels`` under the scaled
    ``probs`` ([n, k], or [n, V, k] for views averaged after scaling); a
    bounded search over log T, so that T stays positive.

    With no mistake among the clips, the NLL falls without end as T shrinks
    (every top class is right, so sharper is always better): the clips say
    nothing about overconfidence, and T is not taken below 1. Unbounded, a
    validation split without mistakes gave T at the search's floor and test
    NLL ten times the uncalibrated one (docs/results.md)."""
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels)
    mean = probs.mean(axis=1) if np.ndim(probs) == 3 else np.asarray(probs)
    flawless = bool((mean.argmax(axis=-1) == labels).all())
    bounds = (0.0 if flawless else LOG_T_BOUNDS[0], LOG_T_BOUNDS[1])
    result = minimize_scalar(
        lambda log_t: nll(mean_scaled(probs, np.exp(log_t)), labels),
        bounds=bounds,
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> list[dict]:
    """The reliability diagram's data: for each of ``bins`` equal-width bins
    of confidence (the top probability; (lo, hi], the first from 0), the
    clips in it, their mean confidence and their accuracy."""
    probs = np.asarray(probs, np.float64)
    confidence = probs.max(axis=1)
    right = probs.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        inside = which == b
        n = int(inside.sum())
        out.append(
            {
                "lo": round(float(edges[b]), 6),
                "hi": round(float(edges[b + 1]), 6),
                "clips": n,
                "confidence": round(float(confidence[inside].mean()), 6) if n else None,
                "accuracy": round(float(right[inside].mean()), 6) if n else None,
            }
        )
    return out


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error: the clip-weighted mean gap between
    confidence and accuracy over ``bins`` equal-width bins."""
    table = reliability(probs, labels, bins)
    n = sum(b["clips"] for b in table)
    return float(
        sum(b["clips"] * abs(b["accuracy"] - b["confidence"]) for b in table if b["clips"]) / n
    )


def threshold_for_recall(scores: np.ndarray, recall: float) -> float:
    """The largest threshold that keeps at least ``recall`` of ``scores``
    (the known clips' on the validation split) at or above it: the
    (1 - recall) quantile, rounded towards keeping more."""
    if not 0 < recall < 1:
        raise ValueError(f"recall must be in (0, 1), not {recall}")
    ordered = np.sort(np.asarray(scores, np.float64))
    if not len(ordered):
        raise ValueError("no scores to choose a threshold from")
    return float(ordered[int(np.floor((1 - recall) * len(ordered) + 1e-9))])


def class_means(features: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Each class's mean unit-length feature [k, f] (zeros for a class without clips)."""
    unit = _unit(features)
    labels = np.asarray(labels)
    return np.stack(
        [
            unit[labels == c].mean(axis=0) if (labels == c).any() else np.zeros(unit.shape[1])
            for c in range(num_classes)
        ]
    )


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def rejection_score(
    kind: str, probs: np.ndarray, features: np.ndarray | None = None, means=None
) -> np.ndarray:
    """Higher for clips more like the trained actions: ``probability``, the
    top (calibrated) probability; ``distance``, minus the cosine distance of
    the features to the nearest class mean (in [-2, 0])."""
    if kind == "probability":
        return np.asarray(probs, np.float64).max(axis=1)
    if kind == "distance":
        if features is None or means is None:
            raise ValueError("the distance score needs the model's features and the class means")
        return (_unit(features) @ _unit(np.asarray(means)).T).max(axis=1) - 1.0
    raise ValueError(f"rejection score must be one of {SCORES}, not {kind!r}")


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """Open-set AUROC: the chance that a known clip scores above an unknown one."""
    from sklearn.metrics import roc_auc_score

    y, s = _labelled(known, unknown)
    return float(roc_auc_score(y, s))


def fpr_at_tpr(known: np.ndarray, unknown: np.ndarray, tpr: float = 0.95) -> float:
    """The share of unknown clips accepted at the threshold that accepts
    ``tpr`` of the known ones (FPR at 95% TPR, known as positive)."""
    from sklearn.metrics import roc_curve

    y, s = _labelled(known, unknown)
    fpr, tprs, _ = roc_curve(y, s)
    return float(fpr[tprs >= tpr - 1e-12].min())


def _labelled(known, unknown) -> tuple[np.ndarray, np.ndarray]:
    known, unknown = np.asarray(known, np.float64), np.asarray(unknown, np.float64)
    if not len(known) or not len(unknown):
        raise ValueError("open-set scores need known and unknown clips")
    y = np.r_[np.ones(len(known)), np.zeros(len(unknown))]
    return y, np.r_[known, unknown]


def openset_accuracy(
    known_right: np.ndarray, known_accepted: np.ndarray, unknown_rejected: np.ndarray
) -> float:
    """Known clips classified right and accepted, plus unknown clips
    rejected, over all clips."""
    good = np.sum(np.asarray(known_right) & np.asarray(known_accepted))
    good += np.sum(unknown_rejected)
    return float(good / (len(known_right) + len(unknown_rejected)))


@dataclass
class Rejector:
    """A rejection as :class:`.predict.Rejection` takes it: a score of
    ``kind`` (:data:`SCORES`) against ``threshold``."""

    kind: str
    threshold: float
    means: np.ndarray | None = None

    @property
    def needs_features(self) -> bool:
        return self.kind == "distance"

    def score(self, probs: np.ndarray, features: np.ndarray | None) -> np.ndarray:
        return rejection_score(self.kind, probs, features, self.means)


# calibration.json


def beside(model_path: str | os.PathLike) -> Path:
    """Where a model's calibration is kept: calibration.json in its folder."""
    return Path(model_path).with_name(FILE)


def read_calibration(
    model_path: str | os.PathLike, path: str | os.PathLike | None = None
) -> dict | None:
    """The calibration of the model at ``model_path`` (``path``, else the
    calibration.json beside it; None when there is none). A calibration
    fitted for another model file is refused, naming both files and the fix."""
    path = Path(path) if path is not None else beside(model_path)
    if not path.is_file():
        return None
    fix = "rerun snakemake results/final/calibration.json, or pass --no-calibration"
    try:
        with open(path, encoding="utf-8") as f:
            calibration = json.load(f)
        missing = {"model_sha256", "temperature", "rejection"} - set(calibration)
    except (ValueError, TypeError) as err:
        raise ValueError(f"calibration file {path} is not a calibration ({err}); {fix}") from None
    if missing:
        raise ValueError(f"calibration file {path} lacks {sorted(missing)}; {fix}")
    if calibration.get("model_sha256") != sha256(model_path):
        raise ValueError(
            f"calibration file {path} was fitted for another model than {model_path} (their "
            "sha256 digests differ); rerun snakemake results/final/calibration.json to fit "
            "it again, or pass --no-calibration to use the model uncalibrated"
        )
    return calibration


def rejector(calibration: dict) -> Rejector:
    """The rejection a calibration chose."""
    rejection = calibration["rejection"]
    kind = rejection["score"]
    means = calibration.get("class_means")
    return Rejector(
        kind,
        float(rejection["thresholds"][kind]),
        np.asarray(means, np.float64) if means is not None else None,
    )


def write_json(data: dict, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.part")
    with open(part, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    os.replace(part, path)


# The stage: fitting on the validation split, evaluating on test, unknown videos.


def split_outputs(model, data: Data, split: str, batch_size: int, views: int, crops: int):
    """(clips, probabilities [n, V x C, k], features [n, V x C, f]) of a split,
    for a model with features as its second output (:func:`.temperature.with_features`)."""
    from .evaluate import split_views

    clips, (probs, features) = split_views(model, data, split, batch_size, views=views, crops=crops)
    return clips, probs, features


def fit_calibration(
    model_path: str | os.PathLike,
    data: Data,
    *,
    views: int = 1,
    crops: int = 1,
    batch_size: int = 8,
    score: str = "probability",
    recall: float = 0.95,
) -> dict:
    """Fit the temperature and the rejection thresholds on the validation
    split with the evaluation's views and crops; the class means for the
    distance score from the train split (one view: a mean needs no more)."""
    from .model import load_model_file
    from .temperature import with_features

    if score not in SCORES:
        raise ValueError(f"evaluate.reject_score must be one of {SCORES}, not {score!r}")
    model = with_features(load_model_file(model_path, "model file", "train it again"))
    clips, probs, feats = split_outputs(model, data, "val", batch_size, views, crops)
    labels = clips["label"].to_numpy()
    temperature = fit_temperature(probs, labels)
    before, after = probs.mean(axis=1), mean_scaled(probs, temperature)
    train, _, train_feats = split_outputs(model, data, "train", batch_size, 1, 1)
    means = class_means(train_feats.mean(axis=1), train["label"].to_numpy(), data.num_classes)
    val_scores = {
        "probability": rejection_score("probability", after),
        "distance": rejection_score("distance", after, feats.mean(axis=1), means),
    }
    thresholds = {k: threshold_for_recall(s, recall) for k, s in val_scores.items()}
    accepted = {k: float(np.mean(val_scores[k] >= thresholds[k])) for k in SCORES}
    log.info(
        "temperature %.4f: val NLL %.4f -> %.4f",
        temperature,
        nll(before, labels),
        nll(after, labels),
    )
    return {
        "model": Path(model_path).name,
        "model_sha256": sha256(model_path),
        "temperature": round(temperature, 6),
        "fitted_on": "val",
        "views": views,
        "crops": crops,
        "val": {
            "clips": len(labels),
            "nll_before": round(nll(before, labels), 6),
            "nll_after": round(nll(after, labels), 6),
            "ece_before": round(ece(before, labels), 6),
            "ece_after": round(ece(after, labels), 6),
        },
        "rejection": {
            "score": score,
            "recall": recall,
            "thresholds": {k: round(v, 6) for k, v in thresholds.items()},
            "val_accepted": {k: round(v, 6) for k, v in accepted.items()},
        },
        "class_means": np.round(means, 6).tolist(),
    }


def calibrate(model_path, data: Data, out: str | os.PathLike, **options) -> dict:
    """Fit (:func:`fit_calibration`) and write calibration.json to ``out``."""
    calibration = fit_calibration(model_path, data, **options)
    write_json(calibration, out)
    return calibration


def evaluation_report(
    probs: np.ndarray, features: np.ndarray, labels: np.ndarray, calibration: dict
) -> dict:
    """metrics.json's calibration and rejection on the test split, from the
    uncalibrated probabilities of the views [n, V, k] and the features."""
    temperature = float(calibration["temperature"])
    before, after = probs.mean(axis=1), mean_scaled(probs, temperature)
    rejection = rejector(calibration)
    scores = rejection.score(after, features.mean(axis=1))
    return {
        "calibration": {
            "temperature": temperature,
            "fitted_on": "val",
            "bins": BINS,
            "test_nll_before": round(nll(before, labels), 6),
            "test_nll_after": round(nll(after, labels), 6),
            "test_ece_before": round(ece(before, labels), 6),
            "test_ece_after": round(ece(after, labels), 6),
            "reliability_before": reliability(before, labels),
            "reliability_after": reliability(after, labels),
        },
        "rejection": {
            "score": rejection.kind,
            "recall": calibration["rejection"]["recall"],
            "threshold": rejection.threshold,
            "test_rejected": round(float(np.mean(scores < rejection.threshold)), 6),
        },
    }


def video_scores(
    model, videos: Iterable[str | os.PathLike], calibration: dict, **sampling
) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
    """Every video that decodes, its probabilities (frame-weighted over its
    windows) and its score of each kind (frame-weighted means of its windows'
    scores, as predict scores a video); ``model`` gives features as its
    second output. ``sampling``: classify_video's window options."""
    from .predict import Window, video_windows
    from .video import BadVideo

    means = np.asarray(calibration["class_means"], np.float64)
    distance = Rejector("distance", -np.inf, means)
    kept, probs, scores = [], [], {k: [] for k in SCORES}
    for video in videos:
        try:
            windows: list[Window] = video_windows(model, video, rejection=distance, **sampling)
        except BadVideo as err:
            log.warning("%s: left out: %s", video, err)
            continue
        w = np.asarray([window.info for window in windows], np.float64)
        w /= w.sum()
        p = np.stack([window.probs for window in windows])
        kept.append(str(video))
        probs.append(w @ p)
        scores["probability"].append(float(w @ p.max(axis=1)))
        scores["distance"].append(float(w @ np.asarray([x.score for x in windows])))
    k = int(model.outputs[0].shape[-1])
    stacked = np.stack(probs) if probs else np.zeros((0, k))
    return kept, stacked, {key: np.asarray(v) for key, v in scores.items()}


def openset(
    model_path: str | os.PathLike,
    data: Data,
    unknown: Iterable[str | os.PathLike],
    calibration: dict,
    *,
    views: int = 1,
    crops: int = 1,
    batch_size: int = 8,
    window_seconds: float = 10.0,
    per_segment: int | None = None,
    resize: str = "crop",
    ffmpeg_exe: str | None = None,
) -> tuple[dict, dict]:
    """Open-set figures: the test split's clips as known, the ``unknown``
    videos (actions the model was not trained on, sampled as predict samples
    them) as unknown. Returns (the summary, the scores of both groups)."""
    from .model import load_model_file
    from .temperature import with_features, with_temperature

    raw = load_model_file(model_path, "model file", "train it again")
    temperature = float(calibration["temperature"])
    clips, probs, feats = split_outputs(with_features(raw), data, "test", batch_size, views, crops)
    labels = clips["label"].to_numpy()
    after = mean_scaled(probs, temperature)
    means = np.asarray(calibration["class_means"], np.float64)
    known = {
        "probability": rejection_score("probability", after),
        "distance": rejection_score("distance", after, feats.mean(axis=1), means),
    }
    model = with_features(with_temperature(raw, temperature))
    names, _, other = video_scores(
        model,
        unknown,
        calibration,
        window_seconds=window_seconds,
        views=views,
        per_segment=per_segment,
        resize=resize,
        ffmpeg_exe=ffmpeg_exe,
    )
    if not names:
        raise ValueError("none of the unknown videos could be classified")
    chosen = rejector(calibration)
    right = after.argmax(axis=1) == labels
    summary = {
        "known": {"clips": len(labels), "source": "test split"},
        "unknown": {"videos": len(names)},
        "chosen_score": chosen.kind,
        "threshold": chosen.threshold,
        "recall": calibration["rejection"]["recall"],
        "scores": {
            kind: {
                "auroc": round(auroc(known[kind], other[kind]), 6),
                "fpr_at_95_tpr": round(fpr_at_tpr(known[kind], other[kind]), 6),
                "threshold": float(calibration["rejection"]["thresholds"][kind]),
                "known_accepted": round(
                    float(np.mean(known[kind] >= calibration["rejection"]["thresholds"][kind])),
                    6,
                ),
                "unknown_rejected": round(
                    float(np.mean(other[kind] < calibration["rejection"]["thresholds"][kind])),
                    6,
                ),
            }
            for kind in SCORES
        },
        "openset_accuracy": round(
            openset_accuracy(
                right, known[chosen.kind] >= chosen.threshold, other[chosen.kind] < chosen.threshold
            ),
            6,
        ),
        "closed_set_accuracy": round(float(right.mean()), 6),
    }
    return summary, {"known": known, "unknown": other}
