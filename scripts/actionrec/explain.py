"""Why the model said what it said about a clip, in one figure a person can
read at a glance:

- the clip's T frames in a strip;
- Grad-CAM over every frame, for the predicted class and (when it differs)
  the true one: the gradient of that class's probability with respect to the
  backbone's last feature map, averaged over space, weights the map's
  channels; frames are explained one by one, so each gets its own map. A
  clip backbone's last maps are [T', h, w] (one per step of T / T' frames):
  the weights are averaged over space per step, and each frame shows the map
  of its step;
- the class probabilities over time: with the original ``average`` head the
  per-frame scores it averages; with an order-aware head, occlusion: how much
  each class's probability changes when that one frame is replaced by the
  clip's mean frame.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from .model import backbone_of, head_of, is_clip_backbone

log = logging.getLogger(__name__)


def _feature_map_model(backbone: keras.Model) -> tuple[list[keras.Layer], keras.Model]:
    """The backbone split for Grad-CAM: the fixed preprocessing layers in
    front of its network, and a model from the network's input to (its last
    feature map, its output)."""
    network = [layer for layer in backbone.layers if isinstance(layer, keras.Model)][-1]
    front = [layer for layer in backbone.layers[1:] if layer is not network]
    rank = 5 if is_clip_backbone(backbone) else 4  # [T', h, w, C] or [h, w, C] maps
    if len(network.output.shape) == rank:  # an unpooled backbone (conv3d): its output is the map
        return front, keras.Model(network.input, [network.output, network.output])
    maps = [
        layer.output
        for layer in network.layers
        if not isinstance(layer, keras.layers.InputLayer) and len(layer.output.shape) == rank
    ]
    if not maps:
        raise ValueError(f"backbone {network.name} has no feature map to explain")
    # The last map with extent in both directions: pooling layers that end a
    # network (I3D's mean over h, then over w) leave maps of one row or column.
    spread = [m for m in maps if min(m.shape[-3], m.shape[-2]) > 1]
    return front, keras.Model(network.input, [(spread or maps)[-1], network.output])


def check_explainable(model: keras.Model, path: str | os.PathLike) -> None:
    """Raise a ValueError naming the model file ``path`` unless ``model`` has
    the parts explain draws from: a ``backbone`` with a network inside that
    ends in a feature map, and a ``head``."""
    fix = (
        "explain takes a model this workflow trained (results/final/model.keras); "
        "actionrec predict classifies with any clip model"
    )
    parts = {layer.name: layer for layer in model.layers}
    missing = [n for n in ("backbone", "head") if not isinstance(parts.get(n), keras.Model)]
    if missing:
        what = " and no ".join(f"{name!r}" for name in missing)
        raise ValueError(f"model file {path} has no {what} part; {fix}")
    if not any(isinstance(layer, keras.Model) for layer in parts["backbone"].layers):
        raise ValueError(f"model file {path} has a backbone without a network inside; {fix}")
    try:
        _feature_map_model(parts["backbone"])
    except ValueError as err:
        raise ValueError(f"model file {path}: {err}; {fix}") from None


def grad_cam(model: keras.Model, clip: np.ndarray, classes: list[int]) -> np.ndarray:
    """Grad-CAM maps, [len(classes), T, S, S] in 0..1, of a uint8 clip [T, S, S, 3]."""
    import tensorflow as tf

    backbone = backbone_of(model)
    clips = is_clip_backbone(backbone)
    front, maps_model = _feature_map_model(backbone)
    frames = tf.convert_to_tensor(clip, tf.float32)
    if clips:
        frames = frames[None]  # the clip is one input
    for layer in front:
        frames = layer(frames)
    size = clip.shape[1]
    # An unpooled backbone's output (its maps) pooled for a head on vectors.
    pool = len(maps_model.outputs[1].shape) > len(head_of(model).input.shape) - (0 if clips else 1)
    out = []
    for c in classes:
        with tf.GradientTape() as tape:
            maps, features = maps_model(frames, training=False)
            tape.watch(maps)
            if pool:
                features = tf.reduce_mean(features, axis=[-3, -2])
            probs = head_of(model)(features if clips else features[None], training=False)
            score = probs[0, c]
        grads = tape.gradient(score, maps)  # [T, h, w, C], or [1, T', h, w, C]
        weights = tf.reduce_mean(grads, axis=[-3, -2], keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * maps, axis=-1))  # [T, h, w] or [1, T', h, w]
        if clips:
            cam = tf.gather(cam[0], step_of_frames(len(clip), int(cam.shape[1])))
        cam = tf.image.resize(cam[..., None], [size, size])[..., 0].numpy()
        out.append(cam / max(float(cam.max()), 1e-12))
    return np.stack(out)


def step_of_frames(frames: int, steps: int) -> np.ndarray:
    """The step of a clip backbone's T' steps that each of T frames falls in."""
    return np.minimum(np.arange(frames) * steps // frames, steps - 1)


def scores_over_time(model: keras.Model, clip: np.ndarray) -> tuple[np.ndarray, str]:
    """Per-frame class scores [T, C] and what they are: the ``average``
    head's own per-frame probabilities, else the change of each class's
    probability when the frame is occluded (replaced by the mean frame)."""
    head = head_of(model)
    names = [layer.name for layer in head.layers]
    if "frame_logits" in names:
        per_frame = keras.Model(head.input, head.get_layer("frame_logits").output)
        features = _frame_features(model, clip)
        logits = np.asarray(per_frame.predict(features[None], verbose=0))[0]
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = exp / exp.sum(axis=1, keepdims=True)
        if is_clip_backbone(backbone_of(model)):
            # One score per step: every frame shows its step's.
            steps = step_of_frames(len(clip), len(probs))
            return probs[steps], "per-step probability (average head)"
        return probs, "per-frame probability (average head)"
    base = model.predict(clip[None], verbose=0)[0]
    mean = clip.mean(axis=0).round().astype(np.uint8)
    occluded = np.repeat(clip[None], len(clip), axis=0)
    for t in range(len(clip)):
        occluded[t, t] = mean
    probs = model.predict(occluded, verbose=0)
    return base[None] - probs, "probability lost when the frame is occluded"


def _frame_features(model: keras.Model, clip: np.ndarray) -> np.ndarray:
    """The backbone's features of a clip [T, S, S, 3]: [T, F] per frame, or
    a clip backbone's [T', F] per step."""
    backbone = backbone_of(model)
    if is_clip_backbone(backbone):
        return np.asarray(backbone.predict(clip[None].astype(np.float32), verbose=0))[0]
    return np.asarray(backbone.predict(clip.astype(np.float32), verbose=0))


def explain_figure(
    model: keras.Model,
    clip: np.ndarray,
    names: list[str],
    path: str | os.PathLike,
    *,
    true: int | None = None,
    title: str = "",
    top: int = 3,
) -> dict:
    """Draw the explanation of one clip to ``path`` (its folders made when
    missing; the file appears complete or not at all, in the format its
    ending names, PNG when none); returns the predicted class, its
    probability and the true class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .figures import LITERAL, literal_legend

    probs = model.predict(clip[None], verbose=0)[0]
    predicted = int(probs.argmax())
    shown = [predicted] + ([true] if true is not None and true != predicted else [])
    cams = grad_cam(model, clip, shown)
    over_time, meaning = scores_over_time(model, clip)
    t = len(clip)
    rows = 1 + len(shown)
    fig = plt.figure(figsize=(1.6 * t + 1.5, 1.7 * rows + 2.6), constrained_layout=True)
    grid = fig.add_gridspec(rows + 1, t, height_ratios=[1] * rows + [1.5])
    for i in range(t):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(clip[i])
        ax.set_title(f"frame {i + 1}", fontsize=8)
        ax.axis("off")
        for r, (c, cam) in enumerate(zip(shown, cams, strict=True), 1):
            ax = fig.add_subplot(grid[r, i])
            ax.imshow(clip[i])
            ax.imshow(cam[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            ax.axis("off")
            if i == 0:
                kind = "predicted" if c == predicted else "true"
                ax.set_title(f"Grad-CAM: {names[c]} ({kind})", fontsize=8, loc="left", **LITERAL)
    ax = fig.add_subplot(grid[rows, :])
    order = list(dict.fromkeys([*shown, *np.argsort(-probs)[:top]]))
    for c in order:
        style = "-" if c in shown else "--"
        ax.plot(range(1, t + 1), over_time[:, c], style, marker="o", ms=3, label=names[c])
    ax.set_xlabel("frame")
    ax.set_ylabel(meaning, fontsize=8)
    ax.set_xticks(range(1, t + 1))
    literal_legend(ax.legend(fontsize=7, ncol=min(len(order), 4), loc="best"))
    verdict = f"predicted {names[predicted]} ({probs[predicted]:.2f})"
    if true is not None:
        verdict += f", true {names[true]} ({probs[true]:.2f})"
    fig.suptitle(f"{title}{': ' if title else ''}{verdict}", fontsize=10, **LITERAL)
    _save_whole(fig, Path(path))
    plt.close(fig)
    return {
        "predicted": names[predicted],
        "probability": float(probs[predicted]),
        "true": None if true is None else names[true],
    }


def _save_whole(fig, path: Path) -> None:
    """Save ``fig`` to ``path`` through a file beside it, so that a figure
    that fails to draw leaves an earlier one at ``path`` as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.part")
    try:
        fig.savefig(part, dpi=110, format=path.suffix[1:].lower() or "png")
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)


def choose_clips(predictions: pd.DataFrame, per_class: pd.DataFrame, count: int) -> pd.DataFrame:
    """The test clips worth a look: the most confident mistakes, then the
    most confident correct predictions of the weakest classes (by F1), half
    and half as far as there are such clips."""
    wrong = predictions[~predictions["correct"]].sort_values("probability", ascending=False)
    weakest = per_class.sort_values(["f1", "class"])["class"].tolist()
    right = predictions[predictions["correct"]].copy()
    right["rank"] = right["true"].map({c: i for i, c in enumerate(weakest)})
    right = right.sort_values(["rank", "probability"], ascending=[True, False])
    right = right.drop_duplicates("true")
    n_wrong = min(len(wrong), max(count - len(right), (count + 1) // 2))
    chosen = pd.concat([wrong.head(n_wrong), right.head(count - n_wrong)])
    return chosen.drop(columns="rank", errors="ignore").reset_index(drop=True)
