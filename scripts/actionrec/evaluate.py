"""Evaluation on the test split: predictions, per-class scores, summary metrics.

Everything here reads the saved model and the shards; nothing is chosen on
the test split. The class names come from the manifest, in label order.
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .calibration import evaluation_report, mean_scaled, read_calibration, rejector
from .scores import per_class_table, prediction_table, summary_metrics
from .tables import write_tsv

if TYPE_CHECKING:
    from .pipeline import Data

log = logging.getLogger(__name__)


def predict_split(
    model, data: Data, split: str, batch_size: int = 8, **options
) -> tuple[pd.DataFrame, np.ndarray]:
    """The clips of one split (split.tsv order) and the model's probabilities,
    averaged over ``views`` temporal views x ``crops`` spatial crops.
    ``options``: :func:`split_views`'s (views, crops, features, transform)."""
    clips, outputs = split_views(model, data, split, batch_size, **options)
    return clips, outputs[0].mean(axis=1)


def split_views(
    model,
    data: Data,
    split: str,
    batch_size: int = 8,
    *,
    views: int = 1,
    crops: int = 1,
    features: bool = False,
    transform=None,
) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """The clips of one split (split.tsv order) and each of the model's
    outputs for every one of ``views`` temporal views x ``crops`` spatial
    crops apart: [n, views x crops, width] (see :func:`.pipeline.view_offsets`
    and :data:`.pipeline.CROPS`; a calibration scales each view's
    probabilities before they are averaged). With ``features``, ``model`` is
    a head and reads the cached features. ``transform`` changes every clip's
    frames before its views and crops are taken (:data:`.pipeline.Transform`;
    the robustness evaluation's corruptions)."""
    import tensorflow as tf

    from .pipeline import CROPS, clip_table, make_dataset, shard_layout, view_offsets

    if crops not in CROPS:
        raise ValueError(f"crops must be one of {CROPS}, not {crops}")
    clips = clip_table(data.split, split)
    files = data.features if features else data.shards
    layout = shard_layout(files[clips["shard"].iloc[0]])
    offsets = view_offsets(views, layout.per_segment)
    # Each clip is read once, with all its views x crops: [B, V x C, T, ...].
    ds = make_dataset(
        data,
        split,
        batch_size,
        offset=offsets,
        crop=list(range(3)) if crops == 3 else None,
        features=features,
        transform=transform,
    ).map(lambda x, y: tf.reshape(x, [-1, *x.shape[2:]]))
    out = model.predict(ds, verbose=0)
    outputs = out if isinstance(out, list | tuple) else [out]
    return clips, [
        np.asarray(x, dtype=np.float64).reshape(len(clips), views * crops, -1) for x in outputs
    ]


def evaluate(
    model_path: str | os.PathLike,
    data: Data,
    split_info: dict,
    *,
    out_predictions: str | os.PathLike,
    out_per_class: str | os.PathLike,
    out_metrics: str | os.PathLike,
    names: list[str],
    top: int = 5,
    batch_size: int = 8,
    views: int = 1,
    crops: int = 1,
    calibration: str | os.PathLike | None = None,
) -> dict:
    """Classify the test split with the saved model, each clip's scores the
    mean over ``views`` x ``crops``, and write the three tables. With a
    ``calibration`` file (calibration.json), the probabilities are the
    calibrated ones, and metrics.json has the calibration's NLL and ECE
    before and after and the share of test clips rejected as unknown."""
    import keras

    from .temperature import with_features

    model = keras.saving.load_model(model_path)
    fitted = read_calibration(model_path, calibration) if calibration else None
    if fitted is None:
        clips, probs = predict_split(model, data, "test", batch_size, views=views, crops=crops)
    else:
        clips, (raw, features) = split_views(
            with_features(model), data, "test", batch_size, views=views, crops=crops
        )
        probs = mean_scaled(raw, fitted["temperature"])
    log.info("classified %d test clips (%d views x %d crops each)", len(clips), views, crops)
    predictions = prediction_table(clips, probs, names, top)
    true = clips["label"].to_numpy()
    pred = probs.argmax(axis=1)
    metrics = summary_metrics(predictions, true, pred, split_info)
    # What one score is: a clip's, averaged over these views.
    metrics.update(level="clip", views=views, crops=crops, testing=f"{views} views x {crops} crops")
    if fitted is not None:
        metrics.update(evaluation_report(raw, features, true, fitted))
        # The verdict predict would give each clip: below the threshold, unknown.
        rejection = rejector(fitted)
        scores = rejection.score(probs, features.mean(axis=1))
        predictions["score"] = np.round(scores, 6)
        predictions["unknown"] = scores < rejection.threshold
    write_tsv(predictions, out_predictions)
    write_tsv(per_class_table(true, pred, names), out_per_class)
    with open(out_metrics, "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=1)
    log.info("test accuracy %.4f, macro F1 %.4f", metrics["accuracy"], metrics["macro_f1"])
    return metrics
