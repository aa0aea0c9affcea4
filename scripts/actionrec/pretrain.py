"""Pretraining a backbone on still synthetic images: the demo's own ImageNet.

A real action recogniser starts from a backbone pretrained on ImageNet's still
images; the demo cannot download one, so it pretrains its backbones on still
images of its own world (:func:`synthetic.render_images`: every object kind of
the demo, and the attribute that changes over a clip, in scenes the demo's
videos never use). Still images cost T times less than clips. The weights are
saved without the classifier, in the form ``train.weights`` takes.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .tables import write_tsv

log = logging.getLogger(__name__)


def pretrain_optimizer(lr: float, steps_per_epoch: int, epochs: int):
    """Adam that warms up over the first epoch to ``lr``, then decays it along
    a cosine, with each step's gradient clipped to norm 1. A deep network
    from scratch at a constant rate can leave the first steps' large gradients
    unchecked: ResNet50 at 0.002 then stayed at chance (train accuracy 0.10-0.17,
    loss above ln 16) on one 2-core machine where another learned."""
    import keras

    total = max(1, steps_per_epoch * epochs)
    warmup = min(steps_per_epoch, total - 1)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=lr / 100 if warmup else lr,
        decay_steps=total - warmup,
        warmup_target=lr if warmup else None,
        warmup_steps=warmup,
    )
    return keras.optimizers.Adam(schedule, clipnorm=1.0)


def pretrain_backbone(
    backbone: str,
    size: int,
    *,
    out_weights: str | os.PathLike,
    out_history: str | os.PathLike,
    images: int,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    threads: int | None = None,
) -> pd.DataFrame:
    """Train ``backbone`` from scratch to classify ``images`` still images
    (a tenth held out for validation) with Adam at ``lr``; save its weights
    without the classifier, and a history of loss, accuracy and seconds per
    epoch."""
    import keras
    import tensorflow as tf

    from .model import build_backbone
    from .resume import EpochInfo, build_for_fit
    from .synthetic import image_labels, render_images

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    x, y = render_images(images, size, seed)
    n_val = max(1, images // 10)
    seconds = time.perf_counter() - start
    log.info("rendered %d images of %d labels in %.1f s", images, len(image_labels()), seconds)
    # Batch norm sees batches of varied images here, as on ImageNet; a
    # shorter memory than Keras's 0.99 suits a short training.
    net = build_backbone(backbone, size, None, bn_momentum=0.9, pooled=False)
    features = keras.layers.GlobalAveragePooling2D()(net.output)
    out = keras.layers.Dense(len(image_labels()), activation="softmax", name="labels")(features)
    model = keras.Model(net.input, out)
    model.compile(
        pretrain_optimizer(lr, -(-(images - n_val) // batch_size), epochs),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    build_for_fit(model, (x[:1].astype(np.float32), y[:1]))
    fit = model.fit(
        x[n_val:].astype(np.float32),
        y[n_val:],
        batch_size=batch_size,
        epochs=epochs,
        validation_data=(x[:n_val].astype(np.float32), y[:n_val]),
        callbacks=[EpochInfo()],  # adds each epoch's seconds
        verbose=2,
    )
    history = pd.DataFrame(fit.history)
    history.insert(0, "epoch", np.arange(1, len(history) + 1))
    history["images_per_second"] = (images - n_val) / history["seconds"]
    # The pretrained network itself, without the classifier and the wrapper's
    # fixed preprocessing: what build_backbone loads from a weights file.
    inner = [layer for layer in net.layers if isinstance(layer, keras.Model)][-1]
    Path(out_weights).parent.mkdir(parents=True, exist_ok=True)
    inner.save_weights(out_weights)
    write_tsv(history, out_history)
    last = history.iloc[-1]
    log.info(
        "%s: val accuracy %.3f after %d epochs, %.0f images/s",
        backbone,
        last["val_accuracy"],
        len(history),
        last["images_per_second"],
    )
    return history
