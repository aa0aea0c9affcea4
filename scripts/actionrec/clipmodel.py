"""A saved clip model as predict, stream, explain and export read it: loaded
safely, checked to take [batch, T, S, S, 3] and give class probabilities,
and calibrated when calibration.json sits beside it (its temperature
becomes a layer of the model, so that exports carry it too).
No TensorFlow at import: the model module is imported when a model is loaded."""

from __future__ import annotations

import os
from pathlib import Path

from .calibration import read_calibration, rejector


def model_geometry(model) -> tuple[int, int]:
    """(T, S) from a model's input [batch, T, S, S, 3]."""
    shape = tuple(model.input_shape)
    if len(shape) != 5 or shape[-1] != 3 or shape[2] != shape[3]:
        raise ValueError(f"expected a model with input [batch, T, S, S, 3], got {shape}")
    if None in shape[1:4]:
        # Windows are sampled to the model's T frames of S x S: both must be known.
        raise ValueError(
            f"expected a model with input [batch, T, S, S, 3] of fixed T and S, got {shape}"
        )
    return int(shape[1]), int(shape[2])


def num_classes(model) -> int:
    """The classes of a clip model: its (first) output's width."""
    return int(model.outputs[0].shape[-1])


def load_model(model_path: str | os.PathLike, *, calibration: bool = True):
    """The saved clip model; a clear error, naming the file, when there is
    none or it is no clip model. With ``calibration``, the temperature of
    the calibration.json beside it (when there is one, fitted for this very
    file: :func:`.calibration.read_calibration`) is applied to its
    probabilities."""
    from .model import load_model_file

    fix = "pass --model a clip model, such as the results/final/model.keras a run saves"
    if not Path(model_path).is_file():
        raise FileNotFoundError(
            f"no model at {model_path}: train one (snakemake results/final/model.keras) "
            "or pass --model"
        )
    model = load_model_file(model_path, "model file", fix)
    try:
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError(
                f"expected one input and one output, got {len(model.inputs)} and "
                f"{len(model.outputs)}"
            )
        model_geometry(model)
        if len(model.output_shape) != 2 or not model.output_shape[-1]:
            raise ValueError(
                "expected an output of class probabilities [batch, classes], got "
                f"{model.output_shape}"
            )
    except ValueError as err:
        raise ValueError(f"model file {model_path} is no clip model: {err}; {fix}") from None
    fitted = read_calibration(model_path) if calibration else None
    if fitted is not None:
        from .temperature import with_temperature

        model = with_temperature(model, fitted["temperature"])
    return model


def load_rejecting(model_path: str | os.PathLike, *, calibration: bool = True):
    """(model, rejection): the model as :func:`load_model` gives it and the
    rejection of its calibration (:class:`.calibration.Rejector`; None when
    uncalibrated), the model with its features as a second output when the
    rejection's score needs them."""
    model = load_model(model_path, calibration=calibration)
    return with_rejection(model, model_path) if calibration else (model, None)


def with_rejection(model, model_path: str | os.PathLike):
    """(model, rejection) for a model loaded from ``model_path``: see
    :func:`load_rejecting`."""
    fitted = read_calibration(model_path)
    if fitted is None:
        return model, None
    rejection = rejector(fitted)
    if rejection.needs_features:
        from .temperature import with_features

        model = with_features(model)
    return model, rejection
