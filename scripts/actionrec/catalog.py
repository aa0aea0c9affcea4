"""The names the workflow's parts share, stated once: backbones, heads, demo
classes, video file endings, and how a backbone setting names its feature
cache. Plain Python, no TensorFlow: the Snakefile imports this module, and
tests check that config/schema.yaml agrees with it.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from pathlib import Path

# train.backbone: a keras.applications constructor, or None for the small CNN.
BACKBONES = {
    "efficientnetb0": "EfficientNetB0",
    "resnet50": "ResNet50",
    "mobilenetv3small": "MobileNetV3Small",
    "efficientnetv2b0": "EfficientNetV2B0",
    # Four conv blocks, ~0.1 M parameters: for tests and quick checks, not a result.
    "smallcnn": None,
}
# The smallest frame side a keras.applications backbone takes.
MIN_APPLICATION_SIZE = 32
# Backbones that rule pretrain can pretrain on the demo's still images.
PRETRAINABLE = tuple(name for name, constructor in BACKBONES.items() if constructor)
# Backbones whose keras.applications model expects caffe-style input (BGR, mean
# subtracted) from outside; the others preprocess 0..255 RGB themselves.
CAFFE_INPUT = ("resnet50",)
HEADS = ("average", "temporal_conv", "gru", "attention", "conv3d")
# Heads that read the backbone's feature maps, not its pooled features: they
# cannot train on the (pooled) feature cache.
MAP_HEADS = ("conv3d",)
NORMS = ("batch", "group")
# A backbone given as a file: a Keras model, RGB frames 0..255 in, features out.
BACKBONE_FILE_SUFFIX = ".keras"

DEMO_CLASSES = (
    "Grow",
    "Shrink",
    "RotateClockwise",
    "RotateAnticlockwise",
    "Brighten",
    "Darken",
    "Bounce",
    "Swing",
    "Stripes",
    "Checker",
)
# Demo classes whose clips hold the same frames in reverse order.
ORDER_PAIRS = (
    ("Grow", "Shrink"),
    ("RotateClockwise", "RotateAnticlockwise"),
    ("Brighten", "Darken"),
)
# Serving formats of rule export (and actionrec export), in the order written.
EXPORT_FORMATS = ("saved_model", "litert", "onnx", "openvino")
# A timeline's defaults (actionrec.timeline): seconds between windows, and the
# shortest segment kept.
TIMELINE_STRIDE = 1.0
TIMELINE_MIN_DURATION = 1.0


def is_backbone_file(backbone: str) -> bool:
    return str(backbone).endswith(BACKBONE_FILE_SUFFIX)


def backbone_input(backbone: str) -> str:
    """``clip`` for a backbone file whose input is a whole clip [T, H, W, 3]
    (a video network), else ``frame``; read from the file's config without
    Keras. A file that cannot be read counts as ``frame`` here: loading it
    names what is wrong."""
    if not is_backbone_file(backbone):
        return "frame"
    try:
        with zipfile.ZipFile(backbone) as z:
            config = json.loads(z.read("config.json"))
        layers = config["config"]["layers"]
        first = next(layer for layer in layers if layer["class_name"] == "InputLayer")
        rank = len(first["config"]["batch_shape"])
    except (OSError, KeyError, StopIteration, TypeError, ValueError, zipfile.BadZipFile):
        return "frame"
    return "clip" if rank == 5 else "frame"


# Stems that say nothing of the network: such a file is named by its folder.
GENERIC_STEMS = ("backbone", "model")


def backbone_key(backbone: str) -> str:
    """The name a backbone's outputs go under (results/features/<key>/,
    results/compare/<key>/): the backbone's own name, or ``file-<stem>`` for
    a model file (``file-<folder>`` for a file of a generic name, such as
    models/i3d-kinetics400/backbone.keras)."""
    if not is_backbone_file(backbone):
        return backbone
    path = Path(backbone)
    name = path.stem
    if name.lower() in GENERIC_STEMS and path.parent.name not in ("", ".", ".."):
        name = path.parent.name
    stem = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")
    return f"file-{stem or 'backbone'}"


def is_pretrained(backbone: str, weights: str | None) -> bool:
    """A model file brings its own weights; a named backbone is pretrained
    unless its weights are none."""
    return is_backbone_file(backbone) or str(weights).lower() not in ("none", "null")


# Where the split's groups come from (split.groups).
GROUP_MODES = ("names", "discover", "auto")


def discovers(mode: str, unnamed: int) -> bool:
    """Whether split.groups ``mode`` discovers the groups when ``unnamed``
    clips carry no group in their names: ``discover`` always, ``auto`` then."""
    if mode not in GROUP_MODES:
        raise ValueError(f"split.groups must be one of {GROUP_MODES}, not {mode!r}")
    return mode == "discover" or (mode == "auto" and unnamed > 0)


def uses_feature_cache(backbone: str, weights: str | None, head: str) -> bool:
    """Whether the frozen stage trains the head on cached pooled features."""
    return is_pretrained(backbone, weights) and head not in MAP_HEADS


def weights_for(weights: str | None, backbone: str) -> str:
    """train.weights for one backbone: ``{backbone}`` in a path becomes its
    name. A model file brings its own weights: ``imagenet`` or a path pattern
    (meant for the named backbones) leave them as they are (``none``)."""
    weights = str(weights)
    if is_backbone_file(backbone) and (weights == "imagenet" or "{backbone}" in weights):
        return "none"
    return weights.replace("{backbone}", backbone_key(backbone))


def shard_count(n_clips: int, clips_per_shard: int) -> int:
    """Shards that hold ``n_clips`` clips, ``clips_per_shard`` each (at least one)."""
    return max(1, math.ceil(n_clips / clips_per_shard))


def shard_bytes(n_clips: int, frames: int, frames_per_segment: int, size: int) -> int:
    """Bytes of uncompressed frames that shards of ``n_clips`` clips hold."""
    return n_clips * frames * frames_per_segment * size * size * 3


def check_disk(
    n_clips: int, *, frames: int, frames_per_segment: int, size: int, max_gb: float
) -> None:
    """Stop, naming the keys, when the shards would need more than ``max_gb``."""
    need = shard_bytes(n_clips, frames, frames_per_segment, size)
    if need > max_gb * 1e9:
        raise ValueError(
            f"extract: {n_clips} clips x {frames} segments x {frames_per_segment} frames of "
            f"{size} x {size} need about {need / 1e9:.1f} GB of shards (uncompressed), more "
            f"than extract.max_disk_gb ({max_gb:g}); lower extract.frames_per_segment, "
            "extract.frames or extract.size, or raise extract.max_disk_gb"
        )


def shard_name(index: int) -> str:
    return f"shard-{index:04d}"
