"""The video classifier: a per-frame image backbone inside TimeDistributed,
followed by a temporal head.

The model takes raw uint8 clips ``[batch, T, S, S, 3]`` (RGB) and returns class
probabilities. Each backbone's preprocessing is part of the model, built from
stock Keras layers only, so a saved ``.keras`` file classifies clips with
nothing but Keras.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

BACKBONES = {
    # name: (constructor, needs explicit preprocessing)
    "efficientnetb0": ("EfficientNetB0", False),
    "resnet50": ("ResNet50", True),
    "mobilenetv3small": ("MobileNetV3Small", False),
    "efficientnetv2b0": ("EfficientNetV2B0", False),
    # Four conv blocks, ~0.1 M parameters: for tests and quick checks, not a result.
    "smallcnn": (None, False),
}
HEADS = ("average", "temporal_conv", "gru", "attention", "conv3d")
# Width of the order-aware heads.
HEAD_UNITS = 128
NORMS = ("batch", "group")
# Channels per group of GroupNormalization: every backbone here has channel
# counts divisible by 8.
NORM_GROUPS = 8
# Caffe-style preprocessing of keras.applications.resnet50: RGB -> BGR, then
# subtract the ImageNet mean of each BGR channel.
_RESNET_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype="float32")


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
    count = 0
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = momentum
            count += 1
        elif isinstance(layer, keras.Model):
            count += set_bn_momentum(layer, momentum)
    return count


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
    max pooling): a small backbone for tests and quick checks."""
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


def build_backbone(
    name: str,
    size: int,
    weights: str | None,
    bn_momentum: float | None = None,
    norm: str = "batch",
    pooled: bool = True,
) -> keras.Model:
    """A backbone named ``backbone``: 0-255 float frames in, features out
    (globally average pooled, or the last feature map when not ``pooled``),
    no top."""
    if name not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, not {name!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, not {norm!r}")
    weights = resolve_weights(weights)
    if norm == "group" and weights is not None:
        raise ValueError(
            "norm: group replaces the backbone's batch norm and trains it from scratch; "
            f"set train.weights to none, or train.norm to batch to use {weights!r}"
        )
    constructor, explicit = BACKBONES[name]
    pooling = "avg" if pooled else None
    if constructor is None:
        if weights is not None:
            raise ValueError(f"backbone {name} has no pretrained weights; set train.weights: none")
        net = small_cnn(size, pooling)
    else:
        kwargs = {"include_top": False, "weights": weights, "pooling": pooling}
        net = getattr(keras.applications, constructor)(input_shape=(size, size, 3), **kwargs)
    if norm == "group" and constructor is not None:
        net = with_group_norm(net)
    elif bn_momentum is not None:
        set_bn_momentum(net, bn_momentum)
    frame = keras.Input((size, size, 3), name="frame")
    x = caffe_preprocessing()(frame) if explicit else frame
    return keras.Model(frame, net(x), name="backbone")


def build_model(
    num_classes: int,
    frames: int,
    size: int,
    backbone: str = "efficientnetb0",
    head: str = "average",
    weights: str | None = None,
    dropout: float = 0.0,
    bn_momentum: float | None = None,
    norm: str = "batch",
) -> keras.Model:
    """Clip classifier with input uint8 ``[batch, frames, size, size, 3]``.

    The backbone sees every frame on its own, with the same weights, as
    TimeDistributed would apply it; batch and time are merged into one axis
    instead, because Keras 3's TimeDistributed unrolls a loop over time, which
    on CPU traces about 4x and trains about 1.7x slower (and batch norm then
    sees B x T frames at once rather than B).

    Heads (all from stock Keras layers and ops, so saved models load with
    Keras alone):

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
    clip = keras.Input((frames, size, size, 3), dtype="uint8", name="frames")
    x = layers.Rescaling(1.0, name="to_float")(clip)  # uint8 -> float, values unchanged
    x = ops.reshape(x, (-1, size, size, 3))  # [B*T, S, S, 3]
    net = build_backbone(backbone, size, weights, bn_momentum, norm, pooled=head != "conv3d")
    x = net(x)
    if head == "conv3d":
        x = ops.reshape(x, (-1, frames, *x.shape[1:]))  # [B, T, h, w, C]
        x = _conv3d_head(x, dropout)
    else:
        x = ops.reshape(x, (-1, frames, x.shape[-1]))  # [B, T, F]
        if dropout > 0:
            x = layers.Dropout(dropout, name="dropout")(x)
        x = _HEAD_BUILDERS[head](x, frames)
    if head == "average":
        logits = layers.Dense(num_classes, name="frame_logits")(x)
        logits = layers.GlobalAveragePooling1D(name="average_over_time")(logits)
    else:
        logits = layers.Dense(num_classes, name="logits")(x)
    # float32 output, also under mixed precision, for a stable softmax and loss.
    out = layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    return keras.Model(clip, out, name=f"{backbone}_{head}")


def _temporal_conv_head(x, frames: int):
    for i in range(2):
        x = layers.Conv1D(HEAD_UNITS, 3, padding="same", activation="relu", name=f"tconv{i}")(x)
    return layers.GlobalAveragePooling1D(name="pool_over_time")(x)


def _gru_head(x, frames: int):
    return layers.GRU(HEAD_UNITS, name="gru")(x)


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
    """The per-frame network inside the clip model (for freezing it)."""
    return model.get_layer("backbone")
