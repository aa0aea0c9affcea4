"""The temperature a calibrated model carries, as a Keras layer.

A saved model gives softmax probabilities; :class:`Temperature` rescales
them to softmax(log p / T), the same as dividing the logits by T, so that a
model wrapped with it (and every format exported from it) gives calibrated
probabilities with no outside code. It is registered with Keras, so a file
that holds it loads with safe mode on.
"""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="actionrec")
class Temperature(layers.Layer):
    """Probabilities in, probabilities softmax(log p / T) out (float32)."""

    def __init__(self, temperature: float = 1.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, not {temperature}")
        self.temperature = float(temperature)

    def call(self, probs):
        probs = ops.cast(probs, "float32")
        if self.temperature == 1.0:
            return probs
        # Clipped: a probability that underflowed to 0 stays the smallest, not -inf.
        logits = ops.log(ops.maximum(probs, 1e-30)) / self.temperature
        return ops.softmax(logits, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


def with_temperature(model: keras.Model, temperature: float) -> keras.Model:
    """``model`` with its probabilities rescaled by ``temperature`` (same
    layers and weights; its parts keep their names, such as backbone and head;
    a second output, features, is kept as it is)."""
    out = Temperature(temperature, name="temperature")(model.outputs[0])
    outputs = [out, *model.outputs[1:]]
    return keras.Model(_one(model.inputs), _one(outputs), name=model.name)


def classifier_input(model: keras.Model):
    """The tensor, in ``model``'s own graph, that feeds its last
    classification layer (the last Dense of its ``head``, else of the model)."""
    try:
        head = model.get_layer("head")
    except ValueError:
        head = None
    owner = head if isinstance(head, keras.Model) else model
    dense = [layer for layer in owner.layers if isinstance(layer, layers.Dense)]
    if not dense:
        raise ValueError("the model has no Dense classification layer to take features from")
    return owner, dense[-1].input


def with_features(model: keras.Model) -> keras.Model:
    """A model of two outputs: ``model``'s probabilities and the features its
    last classification layer reads, averaged over time when they are per
    frame (float32). The same layers and weights, and the same probabilities."""
    owner, features = classifier_input(model)
    if owner is not model:
        # The head is a model inside the clip model: its features, called
        # where the clip model calls the head (the small head runs twice).
        called = owner._inbound_nodes[0].input_tensors
        if features is owner.inputs[0]:  # the average head: Dense on the frame features
            features = called[0]
        else:
            inner = keras.Model(owner.inputs, features, name="head_features")
            features = inner(called[0] if len(called) == 1 else called)
    if len(features.shape) == 3:
        features = layers.GlobalAveragePooling1D(dtype="float32", name="features_over_time")(
            features
        )
    features = layers.Activation("linear", dtype="float32", name="features")(features)
    return keras.Model(_one(model.inputs), [model.outputs[0], features], name=model.name)


def _one(tensors: list):
    """A single tensor as itself, not a list of one: a model built on a
    list takes (and its exports serve) a list."""
    return tensors[0] if len(tensors) == 1 else tensors
