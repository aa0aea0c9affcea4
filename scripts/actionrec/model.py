"""The video classifier: a backbone, then a temporal head.

The backbone is either a frame backbone, an image network applied to every
frame, or a clip backbone, a video network (a 3D CNN such as I3D, given as a
model file) that sees the whole clip and returns T' feature steps (I3D: one per
8 frames). The model takes raw uint8 clips ``[batch, T, S, S, 3]`` (RGB) and
returns class probabilities. It holds two named parts: ``backbone`` (0..255
float frames or clips in, features out, its preprocessing inside) and ``head``
(the steps' features in, probabilities out), so that a head trained on cached
features drops into the clip model unchanged. Everything is built from stock
Keras layers, so a saved ``.keras`` file classifies clips with nothing but
Keras.
"""

from __future__ import annotations

import json
import math
import os
import re
import zipfile
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from .catalog import BACKBONES, CAFFE_INPUT, HEADS, MAP_HEADS, NORMS, is_backbone_file

# Width of the order-aware heads.
HEAD_UNITS = 128
# Channels per group of GroupNormalization: every backbone here has channel
# counts divisible by 8.
NORM_GROUPS = 8
# Caffe-style preprocessing of keras.applications.resnet50: RGB -> BGR, then
# subtract the ImageNet mean of each BGR channel.
_RESNET_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype="float32")
# A block of a backbone: the layers whose names share this prefix
# (EfficientNet's block6a, ResNet's conv5_block3, MobileNet's expanded_conv_4,
# I3D's Conv3d_2c and Mixed_4f).
_BLOCK = re.compile(
    r"conv\d+_block\d+|expanded_conv(?:_\d+)?|[A-Za-z][A-Za-z0-9]*_\d+[a-z](?![a-z0-9])|[^_]+"
)
# The longest clip a clip backbone file is probed with for the frames it needs.
_MAX_PROBE_FRAMES = 256


def resolve_weights(weights: str | None) -> str | None:
    """``imagenet`` (Keras downloads them), a path to a weights file, or none."""
    if weights is None or str(weights).lower() == "none":
        return None
    if weights == "imagenet":
        return "imagenet"
    if not Path(weights).is_file():
        raise FileNotFoundError(
            f"weights file {weights!r} not found; set train.weights to imagenet, none, "
            "or the path of a backbone weights file (without top)"
        )
    return str(weights)


def all_layers(model: keras.Layer) -> Iterator[keras.Layer]:
    """Every layer inside ``model``, depth first, nested models included."""
    for layer in getattr(model, "layers", []):
        yield layer
        yield from all_layers(layer)


def caffe_preprocessing(name: str = "caffe_preprocessing") -> layers.Dense:
    """RGB -> BGR and mean subtraction as a frozen 3x3 Dense layer (a stock
    layer, so saved models need no custom code)."""
    dense = layers.Dense(3, trainable=False, name=name)
    dense.build((None, 3))
    flip = np.eye(3, dtype="float32")[::-1]
    dense.set_weights([flip, -_RESNET_MEAN_BGR])
    return dense


def set_bn_momentum(model: keras.Model, momentum: float) -> int:
    """Set the moving-average momentum of every BatchNormalization layer
    inside ``model``; returns how many there are. Keras's 0.99 suits
    fine-tuning; from scratch on small data the moving statistics lag far
    behind the weights for many epochs, and validation scores sit at chance."""
    norms = [layer for layer in all_layers(model) if isinstance(layer, layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = momentum
    return len(norms)


def with_group_norm(net: keras.Model) -> keras.Model:
    """The same network with every BatchNormalization replaced by a
    GroupNormalization of ``NORM_GROUPS`` groups (a stock layer).

    Batch norm normalises by the statistics of the batch: with a few clips of
    near-identical frames per batch, from scratch, those are noisy and the
    moving averages used at inference do not match them, so val loss swings
    wildly. Group norm normalises each frame on its own, the same way in
    training and inference.
    """
    config = net.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "BatchNormalization":
            channels = net.get_layer(layer["config"]["name"]).input.shape[-1]
            layer["class_name"] = "GroupNormalization"
            layer["module"] = "keras.layers"
            layer["config"] = {
                "name": layer["config"]["name"],
                "groups": math.gcd(int(channels), NORM_GROUPS),
                "axis": -1,
                "epsilon": layer["config"].get("epsilon", 1e-3),
                "dtype": layer["config"].get("dtype"),
            }
            # GroupNormalization.call takes neither a mask nor a training flag.
            for node in layer.get("inbound_nodes", []):
                for key in ("mask", "training"):
                    node.get("kwargs", {}).pop(key, None)
    return keras.Model.from_config(config)


def small_cnn(size: int, pooling: str | None = "avg") -> keras.Model:
    """Four 3x3 conv blocks (32-64-128-128 channels, group norm, ReLU, 2x2
    max pooling, about 0.24 M parameters): a small backbone for tests and
    quick checks."""
    frame = keras.Input((size, size, 3))
    x = layers.Rescaling(1.0 / 255)(frame)
    for i, width in enumerate((32, 64, 128, 128)):
        x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.GroupNormalization(groups=8, name=f"norm{i}")(x)
        x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D(2, padding="same")(x)
    if pooling == "avg":
        x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(frame, x, name="smallcnn")


def load_backbone_file(
    path: str | Path, size: int, pooled: bool = True, frames: int | None = None
) -> keras.Model:
    """A backbone from a Keras model file, told apart by its input:

    - a frame backbone takes RGB frames 0..255 ``[None, H, W, 3]`` and returns
      a feature vector or a feature map per frame;
    - a clip backbone takes RGB clips 0..255 ``[None, T, H, W, 3]`` and
      returns T' steps of vectors ``[None, T', F]`` or of maps
      ``[None, T', h, w, C]``; ``frames`` is the T it is built for.

    H, W (and T) free or equal to ``size`` (and ``frames``); maps are pooled
    over space here when ``pooled``. Loaded with Keras's safe mode on: a file
    that carries Python code (a Lambda layer) is refused rather than run."""
    path = Path(path)
    fix = "set train.backbone to a backbone name or to a Keras model file (.keras)"
    if not path.is_file():
        raise FileNotFoundError(f"backbone file {path} not found; {fix}")
    net = load_model_file(path, "backbone file", fix)
    if len(net.inputs) != 1 or len(net.outputs) != 1:
        raise ValueError(
            f"backbone file {path} has {len(net.inputs)} inputs and {len(net.outputs)} "
            "outputs; a backbone takes one batch of frames or clips and returns one feature "
            "tensor"
        )
    shape_in = tuple(net.inputs[0].shape)
    if len(shape_in) == 5 and shape_in[-1] == 3:
        return _clip_backbone(net, path, size, pooled, frames)
    shape_out = tuple(net.outputs[0].shape)
    if len(shape_in) != 4 or shape_in[-1] != 3:
        raise ValueError(
            f"backbone file {path} takes input of shape {shape_in}; a backbone takes RGB "
            "frames [batch, height, width, 3] or RGB clips [batch, time, height, width, 3], "
            "with values 0..255"
        )
    _check_sides(path, shape_in[1:3], size)
    if None in shape_in[1:3]:
        _check_free_sides(net, path, size)
    if len(shape_out) not in (2, 4):
        raise ValueError(
            f"backbone file {path} returns shape {shape_out}; a frame backbone returns a "
            "feature vector [batch, features] or a feature map [batch, h, w, channels] per frame"
        )
    if not pooled and len(shape_out) == 2:
        raise ValueError(
            f"backbone file {path} returns one feature vector per frame {shape_out}, but "
            f"head {'/'.join(MAP_HEADS)} needs a feature map [h, w, channels]: choose another "
            "train.head, or a backbone file that ends in its last feature map"
        )
    # The same network at this size, so that every layer's shape is known.
    net = _fix(net, (size, size, 3), None in shape_in[1:3])
    if pooled and len(shape_out) == 4:
        net = keras.Model(net.input, layers.GlobalAveragePooling2D()(net.output), name=net.name)
    return net


def _check_sides(path: Path, sides: tuple, size: int) -> None:
    if all(side in (None, size) for side in sides):
        return
    fixed = {side for side in sides if side is not None}
    takes = "x".join("any" if side is None else str(side) for side in sides)
    fit = f"set extract.size to {fixed.pop()}, or " if len(fixed) == 1 else ""
    raise ValueError(
        f"backbone file {path} takes {takes} frames, but the shards hold {size}x{size}; "
        f"{fit}save the backbone with a free input size (None, None, 3)"
    )


# The frame sides a backbone of free input size is tried at when the shards'
# are too small for it: the sizes that image networks are commonly built for.
_PROBE_SIDES = (64, 96, 112, 128, 160, 192, 224, 256, 299, 320, 384, 448, 512)


def _takes_side(net: keras.Model, side: int) -> bool:
    try:
        net.compute_output_spec(keras.KerasTensor((1, side, side, 3)))
    except Exception:  # each layer says "too small" in its own words
        return False
    return True


def _check_free_sides(net: keras.Model, path: Path, size: int) -> None:
    """A backbone of free input size whose layers shrink ``size`` frames to
    nothing (strided or unpadded convolutions) is named with the size it
    needs, instead of failing inside Keras."""
    if _takes_side(net, size):
        return
    need = next((s for s in _PROBE_SIDES if s > size and _takes_side(net, s)), None)
    hint = f"set extract.size to {need} or more" if need else "set extract.size higher"
    raise ValueError(
        f"backbone file {path} takes frames of any size, but its layers leave nothing of "
        f"{size}x{size} frames; {hint}"
    )


def _one_line(err: BaseException) -> str:
    """An error as one line of bounded length: Keras's own span many."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


def _archive_problem(path: Path) -> str | None:
    """What keeps a .keras archive from being a model, read before Keras does
    (whose errors about a broken config name neither the file nor the key):
    no config.json, one that is no JSON, or one without a model's keys."""
    if not zipfile.is_zipfile(path):
        return None  # an HDF5 model, or no model at all: Keras says which
    try:
        with zipfile.ZipFile(path) as archive:
            if "config.json" not in archive.namelist():
                return "is a zip archive without config.json, not a saved Keras model"
            config = json.loads(archive.read("config.json"))
    except (OSError, UnicodeDecodeError, zipfile.BadZipFile) as err:
        return f"is a damaged archive ({_one_line(err)})"
    except json.JSONDecodeError as err:
        return f"holds a config.json that is not valid JSON ({err})"
    if not isinstance(config, dict):
        return "holds a config.json that is not a JSON object"
    missing = [key for key in ("class_name", "config") if key not in config]
    if missing:
        keys = " and ".join(repr(key) for key in missing)
        return f"holds a config.json without {keys}, so it describes no model"
    return None


def load_model_file(path: str | Path, what: str, fix: str) -> keras.Model:
    """The Keras model saved at ``path``, loaded with safe mode on: a file
    that carries Python code (a Lambda layer) is refused rather than run.
    Any file that does not load gives a ValueError naming it as ``what``,
    what is wrong with it, and ``fix``."""
    from . import temperature  # noqa: F401 - registers the calibration's layer

    path = Path(path)
    problem = _archive_problem(path)
    if problem:
        raise ValueError(f"{what} {path} {problem}; {fix}")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # a zip that is no model, a class Keras does not know
        if "safe_mode" in str(err):
            raise ValueError(
                f"{what} {path} holds Python code (a Lambda layer or a custom function) that "
                "Keras runs only with safe mode off, and this workflow does not run code from "
                "model files; rebuild it from stock Keras layers and save it again"
            ) from err
        raise ValueError(
            f"{what} {path} does not load as a Keras model ({_one_line(err)}); {fix}"
        ) from err


# TensorFlow's CPU kernels of 3D pooling take no float16.
_POOLING_3D = (layers.AveragePooling3D, layers.MaxPooling3D)


def _fix(net: keras.Model, shape: tuple[int, ...], free: bool) -> keras.Model:
    """A loaded network at ``shape`` when its input is ``free`` (sizes left
    open), and in the global dtype policy: a model file saves each layer's
    dtype, so that under mixed precision its layers would stay float32 (3D
    pooling stays as saved). Rebuilt, weights copied, only when needed."""
    policy = keras.config.dtype_policy().name
    weighted = [layer for layer in net.layers if layer.weights]
    if not free and all(layer.dtype_policy.name == policy for layer in weighted):
        return net

    def in_policy(layer):
        config = layer.get_config()
        if "dtype" in config and not isinstance(layer, _POOLING_3D):
            config["dtype"] = policy
        return layer.__class__.from_config(config)

    inputs = keras.Input(shape) if free else None
    fixed = keras.models.clone_model(net, input_tensors=inputs, clone_function=in_policy)
    fixed.set_weights(net.get_weights())
    return fixed


def _steps_out(net: keras.Model, frames: int, size: int) -> tuple | None:
    """The output shape of a clip backbone on a clip of ``frames`` frames
    (None when the network cannot take so short a clip)."""
    try:
        spec = net.compute_output_spec(keras.KerasTensor((1, frames, size, size, 3)))
    except Exception:
        return None
    shape = tuple(spec.shape)
    return shape if shape[1] is not None and shape[1] >= 1 else None


def _clip_backbone(
    net: keras.Model, path: Path, size: int, pooled: bool, frames: int | None
) -> keras.Model:
    """Checks and fixes the shape of a clip backbone file's network."""
    shape_in, shape_out = tuple(net.inputs[0].shape), tuple(net.outputs[0].shape)
    if frames is None:
        raise ValueError(f"backbone file {path} takes clips: give the frames T it is built for")
    _check_sides(path, shape_in[2:4], size)
    if shape_in[1] not in (None, frames):
        raise ValueError(
            f"backbone file {path} takes clips of {shape_in[1]} frames, but the shards hold "
            f"{frames} frames a clip; set extract.frames to {shape_in[1]}, or save the "
            "backbone with a free clip length (None, None, None, 3)"
        )
    if len(shape_out) not in (3, 5):
        raise ValueError(
            f"backbone file {path} takes clips but returns shape {shape_out}; a clip "
            "backbone returns feature steps over time: vectors [batch, steps, features] or "
            "maps [batch, steps, h, w, channels]"
        )
    if not pooled and len(shape_out) == 3:
        raise ValueError(
            f"backbone file {path} returns one feature vector per step {shape_out}, but "
            f"head {'/'.join(MAP_HEADS)} needs feature maps [steps, h, w, channels]: choose "
            "another train.head, or a backbone file that ends in its last feature maps"
        )
    if _steps_out(net, frames, size) is None:
        shortest = next(
            (t for t in range(frames + 1, _MAX_PROBE_FRAMES + 1) if _steps_out(net, t, size)),
            None,
        )
        need = f"at least {shortest}" if shortest else f"more than {_MAX_PROBE_FRAMES}"
        raise ValueError(
            f"backbone file {path} cannot take clips of {frames} frames of {size}x{size}: it "
            f"needs {need} frames at this size; set extract.frames to {shortest or 'more'} "
            "(or extract.size higher)"
        )
    net = _fix(net, (frames, size, size, 3), None in shape_in[1:4])
    if pooled and len(shape_out) == 5:
        # A stock op, saved with the model, on the network's own graph (so that
        # Grad-CAM reaches its maps): the mean over h and w of every step.
        net = keras.Model(net.input, ops.mean(net.output, axis=(2, 3)), name=net.name)
    return net


def is_clip_backbone(backbone: keras.Model) -> bool:
    """Whether a backbone takes whole clips [batch, T, S, S, 3] (a video
    network) rather than frames."""
    return len(backbone.inputs[0].shape) == 5


def feature_steps(backbone: keras.Model, frames: int) -> int:
    """The steps over time a head sees: T for a frame backbone, T' for a clip
    backbone."""
    return int(backbone.output.shape[1]) if is_clip_backbone(backbone) else frames


def load_weights_file(net: keras.Model, weights: str, name: str) -> None:
    """Load a weights file into a backbone, naming the file when it does not fit."""
    try:
        net.load_weights(weights)
    except Exception as err:
        raise ValueError(
            f"weights file {weights} does not fit backbone {name} ({err}); name a weights "
            f"file saved from {name} without top (e.g. by rule fetch_weights), or set "
            "train.weights to imagenet or none"
        ) from err


def fold_rescaling_into_normalization(net: keras.Model) -> int:
    """Fold every per-channel Rescaling that directly follows a Normalization
    layer into that layer's variance; returns how many there were.

    keras.applications' EfficientNet (B0-B7) adds such a Rescaling, a layer
    without weights, only when built with ``weights="imagenet"``: built
    without, to load a weights file, it lacks it and would see wrongly scaled
    inputs. With the scale folded in, ``(x - mean) / sqrt(var) * s`` is
    ``(x - mean) / sqrt(var / s**2)``, and the weights give the ImageNet
    network's features in either build."""
    folded = 0
    for norm, after in pairwise(net.layers):
        if not (isinstance(norm, layers.Normalization) and isinstance(after, layers.Rescaling)):
            continue
        if after.input is not norm.output or float(np.sum(after.offset)) != 0:
            continue
        scale = np.asarray(after.scale, dtype="float64")
        values = norm.get_weights()  # mean, variance, count
        values[1] = (values[1] / scale**2).astype(values[1].dtype)
        norm.set_weights(values)
        folded += 1
    return folded


def fetch_imagenet_weights(name: str, path: str | Path) -> None:
    """Download a keras.applications backbone's ImageNet weights (without
    top) and save them as a weights file that ``train.weights`` can name.

    Keras downloads into its cache folder (``~/.keras/models``); a lock
    there keeps two workflows that share a home folder from writing the
    same download at once. The file appears complete or not at all."""
    import fcntl

    constructor = BACKBONES.get(name)
    if constructor is None:
        raise ValueError(f"{name!r} has no ImageNet weights; choose one of {sorted(BACKBONES)}")
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".imagenet-download.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        net = getattr(keras.applications, constructor)(include_top=False, weights="imagenet")
    fold_rescaling_into_normalization(net)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name[: -len('.weights.h5')]}.part.weights.h5")
    net.save_weights(part)
    os.replace(part, path)


def build_backbone(
    name: str,
    size: int,
    weights: str | None,
    *,
    bn_momentum: float | None = None,
    norm: str = "batch",
    pooled: bool = True,
    frames: int | None = None,
) -> keras.Model:
    """A backbone named ``backbone``: 0-255 float frames in, features out
    (globally average pooled, or the last feature map when not ``pooled``),
    no top. ``name`` is a backbone of :data:`BACKBONES` or a model file; a
    clip backbone file takes clips of ``frames`` frames instead, and returns
    features per step."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, not {norm!r}")
    if is_backbone_file(name):
        if str(weights) == "imagenet":
            raise ValueError(
                f"backbone file {name} brings its own weights; set train.weights to none "
                "(or to a weights file for this model)"
            )
        if norm == "group":
            raise ValueError(f"norm: group rebuilds keras.applications backbones, not {name}")
        net = load_backbone_file(name, size, pooled, frames)
        weights = resolve_weights(weights)
        if weights is not None:
            load_weights_file(net, weights, name)
    else:
        if name not in BACKBONES:
            raise ValueError(
                f"backbone must be one of {sorted(BACKBONES)} or a Keras model file "
                f"(.keras), not {name!r}"
            )
        weights = resolve_weights(weights)
        if norm == "group" and weights is not None:
            raise ValueError(
                "norm: group replaces the backbone's batch norm and trains it from scratch; "
                f"set train.weights to none, or train.norm to batch to use {weights!r}"
            )
        constructor = BACKBONES[name]
        if constructor is None:
            if weights is not None:
                raise ValueError(f"backbone {name} has no pretrained weights; set weights: none")
            net = small_cnn(size, pooling=None)
        else:
            net = getattr(keras.applications, constructor)(
                input_shape=(size, size, 3),
                include_top=False,
                weights="imagenet" if weights == "imagenet" else None,
            )
            if weights not in (None, "imagenet"):
                load_weights_file(net, weights, name)
        if norm == "group" and constructor is not None:
            net = with_group_norm(net)
        if pooled:
            net = keras.Model(net.input, layers.GlobalAveragePooling2D()(net.output), name=name)
    if bn_momentum is not None:
        set_bn_momentum(net, bn_momentum)
    if is_clip_backbone(net):
        clip = keras.Input(tuple(net.input.shape[1:]), name="clip")
        return keras.Model(clip, net(clip), name="backbone")
    frame = keras.Input((size, size, 3), name="frame")
    x = caffe_preprocessing()(frame) if name in CAFFE_INPUT else frame
    return keras.Model(frame, net(x), name="backbone")


def build_head(
    num_classes: int,
    frames: int,
    features: tuple[int, ...],
    head: str = "average",
    *,
    dropout: float = 0.0,
) -> keras.Model:
    """The head, named ``head``: float features ``[batch, frames, *features]``
    in (a vector per frame, or a feature map for conv3d), probabilities out.

    - ``average`` (the original architecture): Dense(num_classes) on each
      frame's pooled features, averaged over time, softmax. Blind to temporal
      order by construction: a clip played backwards gets the same scores.
    - ``temporal_conv``: two 1D convolutions (kernel 3) over time on the
      frame features, averaged over time: sees local order and change.
    - ``gru``: a GRU over the frame features, its last state classified.
    - ``attention``: a transformer encoder block (4-head self-attention and a
      feed-forward layer) over the frames with learned position embeddings,
      averaged over time.
    - ``conv3d``: 3D convolutions over the backbone's unpooled feature maps
      across time (where and when), globally pooled.
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, not {head!r}")
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes, got {num_classes}")
    inputs = keras.Input((frames, *features), name="features")
    if head == "conv3d":
        x = _conv3d_head(inputs, dropout)
    else:
        x = layers.Dropout(dropout, name="dropout")(inputs) if dropout > 0 else inputs
        x = _HEAD_BUILDERS[head](x, frames)
    if head == "average":
        logits = layers.Dense(num_classes, name="frame_logits")(x)
        logits = layers.GlobalAveragePooling1D(name="average_over_time")(logits)
    else:
        logits = layers.Dense(num_classes, name="logits")(x)
    # float32 output, also under mixed precision, for a stable softmax and loss.
    out = layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, out, name="head")


def assemble(backbone: keras.Model, head: keras.Model, frames: int, size: int) -> keras.Model:
    """The clip model: uint8 ``[batch, frames, size, size, 3]`` in, the
    backbone on every frame, the head on the frames' features.

    The backbone sees every frame on its own, with the same weights, as
    TimeDistributed would apply it; batch and time are merged into one axis
    instead, because Keras 3's TimeDistributed unrolls a loop over time, which
    on CPU traces about 4x and trains about 1.7x slower. A clip backbone sees
    the whole clip at once and gives the head its T' steps."""
    clip = keras.Input((frames, size, size, 3), dtype="uint8", name="frames")
    x = layers.Rescaling(1.0, name="to_float")(clip)  # uint8 -> float, values unchanged
    if is_clip_backbone(backbone):
        return keras.Model(clip, head(backbone(x)), name="clip_classifier")
    x = ops.reshape(x, (-1, size, size, 3))  # [B*T, S, S, 3]
    x = backbone(x)
    x = ops.reshape(x, (-1, frames, *x.shape[1:]))  # [B, T, F] or [B, T, h, w, C]
    return keras.Model(clip, head(x), name="clip_classifier")


def build_model(
    num_classes: int,
    frames: int,
    size: int,
    backbone: str = "efficientnetb0",
    head: str = "average",
    *,
    weights: str | None = None,
    dropout: float = 0.0,
    bn_momentum: float | None = None,
    norm: str = "batch",
) -> keras.Model:
    """Clip classifier with input uint8 ``[batch, frames, size, size, 3]``."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, not {head!r}")
    pooled = head not in MAP_HEADS
    net = build_backbone(
        backbone, size, weights, bn_momentum=bn_momentum, norm=norm, pooled=pooled, frames=frames
    )
    steps = feature_steps(net, frames)
    features = tuple(int(d) for d in net.output.shape[2 if is_clip_backbone(net) else 1 :])
    return assemble(
        net, build_head(num_classes, steps, features, head, dropout=dropout), frames, size
    )


def _temporal_conv_head(x, frames: int):
    for i in range(2):
        x = layers.Conv1D(HEAD_UNITS, 3, padding="same", activation="relu", name=f"tconv{i}")(x)
    return layers.GlobalAveragePooling1D(name="pool_over_time")(x)


def _gru_head(x, frames: int):
    # Unrolled over the clip's few frames: plain ops that every export format
    # (LiteRT, OpenVINO, ONNX) converts, where a loop over time is not.
    return layers.GRU(HEAD_UNITS, unroll=True, name="gru")(x)


def _attention_head(x, frames: int):
    d = HEAD_UNITS
    x = layers.Dense(d, name="project")(x)
    # Learned position embeddings: a bias-free Dense on one-hot positions is an
    # embedding table, and needs no custom layer to save.
    positions = ops.zeros_like(x[..., :1]) + ops.eye(frames)  # [B, T, T]
    x = x + layers.Dense(d, use_bias=False, name="position_embedding")(positions)
    attended = layers.MultiHeadAttention(4, d // 4, name="self_attention")(x, x)
    x = layers.LayerNormalization(name="attention_norm")(x + attended)
    ff = layers.Dense(2 * d, activation="relu", name="feed_forward_in")(x)
    ff = layers.Dense(d, name="feed_forward_out")(ff)
    x = layers.LayerNormalization(name="feed_forward_norm")(x + ff)
    return layers.GlobalAveragePooling1D(name="pool_over_time")(x)


def _conv3d_head(x, dropout: float):
    x = layers.Conv3D(HEAD_UNITS, 1, activation="relu", name="reduce_channels")(x)
    x = layers.Conv3D(HEAD_UNITS, 3, padding="same", activation="relu", name="conv3d")(x)
    x = layers.GlobalAveragePooling3D(name="pool_space_time")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name="dropout")(x)
    return x


_HEAD_BUILDERS = {
    "average": lambda x, frames: x,
    "temporal_conv": _temporal_conv_head,
    "gru": _gru_head,
    "attention": _attention_head,
}


def backbone_of(model: keras.Model) -> keras.Model:
    """The backbone inside the clip model (per frame, or per clip)."""
    return model.get_layer("backbone")


def head_of(model: keras.Model) -> keras.Model:
    """The head inside the clip model: frame features in, probabilities out."""
    return model.get_layer("head")


def block_of(layer_name: str) -> str:
    """The block a backbone layer belongs to, by its name's prefix."""
    return _BLOCK.match(layer_name).group(0)


def set_backbone_trainable(
    model: keras.Model, blocks: int | str, train_batch_norm: bool = False
) -> int:
    """Unfreeze the backbone's top ``blocks`` blocks (``all``: every layer; 0:
    none). Every BatchNormalization stays frozen, and so runs in inference
    mode with its pretrained statistics, unless ``train_batch_norm``: with a
    few clips of near-identical frames per batch, batch statistics would wreck
    the pretrained features. Returns how many backbone weights train."""
    backbone = backbone_of(model)
    backbone.trainable = blocks != 0
    if blocks == 0:
        return 0
    # The pretrained network; the wrapper around it holds only fixed preprocessing.
    net = [layer for layer in backbone.layers if isinstance(layer, keras.Model)][-1]
    for layer in backbone.layers:
        layer.trainable = layer is net
    inner = [layer for layer in all_layers(net) if not isinstance(layer, keras.Model)]
    weighted = [layer for layer in inner if layer.weights]
    order = list(dict.fromkeys(block_of(layer.name) for layer in weighted))
    chosen = set(order) if blocks == "all" else set(order[-int(blocks) :])
    for layer in inner:
        norm = isinstance(layer, layers.BatchNormalization) and not train_batch_norm
        frozen = norm or block_of(layer.name) not in chosen
        layer.trainable = not frozen
    return len(backbone.trainable_weights)
