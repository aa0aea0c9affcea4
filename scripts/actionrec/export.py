"""Export of a saved clip model for serving: TensorFlow SavedModel (TF
Serving), LiteRT (TFLite), ONNX and OpenVINO, each checked against the
``.keras`` model on real clips and timed.

Every exported model takes what the ``.keras`` model takes, raw uint8 clips
``[batch, T, S, S, 3]``, and returns class probabilities: the preprocessing
is inside, so no outside code is needed to use one. A model with a
calibration.json beside it is exported calibrated: its temperature is a layer
of the exported graph (the rejection threshold stays in calibration.json).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from .catalog import EXPORT_FORMATS as FORMATS

log = logging.getLogger(__name__)

# The file (or folder) each format is written to, inside the export folder.
FILES = {
    "saved_model": "saved_model",
    "litert": "model.tflite",
    "onnx": "model.onnx",
    "openvino": "model.xml",
}
# Exported probabilities may differ from the .keras model's by float rounding.
TOLERANCE = 1e-4
SUMMARY_COLUMNS = ["format", "path", "size_mb", "clips", "same_top1", "max_abs_diff"]
SUMMARY_COLUMNS += ["within_tolerance", "ms_per_clip", "error"]
# Files written beside a format's own (OpenVINO keeps the weights apart).
COMPANIONS = {"openvino": ("model.bin",)}
# The SavedModel each model was last exported to in this process: the one ONNX
# may be converted from. Any other SavedModel in an export folder may be of
# another model (an earlier export), and is never converted.
_SAVED_FROM: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def test_clips(data, count: int) -> np.ndarray:
    """Up to ``count`` clips of the test split, in split order, uint8 [n, T, S, S, 3]."""
    from .pipeline import make_dataset

    batches = make_dataset(data, "test", batch_size=count).take(1)
    return next(iter(batches))[0].numpy()


def export_format(model, fmt: str, out_dir: Path) -> Path:
    """Write ``model`` in ``fmt`` under ``out_dir``; returns the path. The
    export is made in a temporary folder there and moved into place whole, so
    that one that fails leaves an earlier export as it was."""
    out_dir = Path(out_dir)
    path = out_dir / FILES[fmt]
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{fmt}-", dir=out_dir))
    try:
        made = work / FILES[fmt]
        if fmt == "onnx":
            _export_onnx(model, made, out_dir / FILES["saved_model"], work)
        else:
            keras_format = {"saved_model": "tf_saved_model"}.get(fmt, fmt)
            model.export(str(made), format=keras_format, verbose=False)
        for name in (FILES[fmt], *COMPANIONS.get(fmt, ())):
            _replace(work / name, out_dir / name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if fmt == "saved_model":
        _SAVED_FROM[model] = path.resolve()
    return path


def _export_onnx(model, path: Path, saved: Path, work: Path) -> None:
    # From a SavedModel: tf2onnx freezes every variable into the graph
    # (converting the live model leaves batch-norm constants as inputs).
    if _SAVED_FROM.get(model) != saved.resolve() or not saved.is_dir():
        saved = work / "source_saved_model"
        model.export(str(saved), format="tf_saved_model", verbose=False)
    cmd = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved)]
    out = subprocess.run(
        [*cmd, "--output", str(path), "--opset", "17"], capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"tf2onnx could not convert the SavedModel: {out.stderr[-2000:]}")


def _replace(source: Path, target: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif target.exists() or target.is_symlink():
        target.unlink()
    os.replace(source, target)


def runner(fmt: str, path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A function from uint8 clips to probabilities, running the exported file."""
    if fmt == "saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))  # keep it: serve needs its variables
        return lambda clips: np.asarray(loaded.serve(clips))
    if fmt == "litert":
        # The maintained LiteRT runtime: TensorFlow's own interpreter is deprecated.
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path))
        (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()

        def run_litert(clips):
            interpreter.resize_tensor_input(inp["index"], clips.shape)
            interpreter.allocate_tensors()
            interpreter.set_tensor(inp["index"], clips)
            interpreter.invoke()
            return interpreter.get_tensor(out["index"])

        return run_litert
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda clips: session.run(None, {name: clips})[0]
    if fmt == "openvino":
        import openvino

        # float32, as the other formats: on CPUs with bf16 units OpenVINO would
        # otherwise compute in bf16 (faster, about 1e-3 off).
        config = {"INFERENCE_PRECISION_HINT": "f32"}
        compiled = openvino.Core().compile_model(str(path), "CPU", config)
        return lambda clips: compiled(clips)[0]
    raise ValueError(f"export format must be one of {FORMATS}, not {fmt!r}")


def size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    if path.suffix == ".xml":
        files.append(path.with_suffix(".bin"))
    return round(sum(f.stat().st_size for f in files) / 2**20, 2)


def ms_per_clip(run: Callable[[np.ndarray], np.ndarray], clip: np.ndarray, repeats: int) -> float:
    """Median wall time of one clip through ``run``, after a warm-up call."""
    run(clip)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(clip)
        times.append(time.perf_counter() - start)
    return round(1000 * float(np.median(times)), 2)


def export_model(
    model_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    clips: np.ndarray,
    *,
    formats: tuple[str, ...],
    repeats: int,
) -> pd.DataFrame:
    """Export the ``.keras`` model in every format of ``formats``, check each
    export on ``clips`` (same top-1 class, probabilities within
    :data:`TOLERANCE`) and time it on one clip. One row per format, the
    ``.keras`` model first as the reference. A format whose converter or
    runtime cannot take the model (an operation it does not know, a runtime
    not installed) gets a row that says why in ``error``, with a warning,
    and the other formats are still written."""
    from .clipmodel import load_model, model_geometry

    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown export formats {unknown}; choose from {list(FORMATS)}")
    model = load_model(model_path)
    clips = np.ascontiguousarray(clips, dtype=np.uint8)
    frames, size = model_geometry(model)
    if clips.shape[1:] != (frames, size, size, 3):
        raise ValueError(
            f"model file {model_path} takes clips of {frames} frames of {size}x{size}, but the "
            f"test clips hold {clips.shape[1]} frames of {clips.shape[2]}x{clips.shape[3]}: "
            "export it with the data it was trained on"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    reference = model.predict(clips, verbose=0)
    keras_ms = ms_per_clip(model.predict_on_batch, clips[:1], repeats)
    rows = [_row("keras", Path(model_path), reference, reference, keras_ms)]
    for fmt in formats:
        start = time.perf_counter()
        try:
            path = export_format(model, fmt, out_dir)
            run = runner(fmt, path)
            probs = np.concatenate([run(clips[i : i + 1]) for i in range(len(clips))])
            ms = ms_per_clip(run, clips[:1], repeats)
        except Exception as err:  # every converter and runtime has its own errors
            lines = str(err).strip().splitlines() or [""]
            reason = f"{type(err).__name__}: {lines[-1]}"
            log.warning("%s: could not export or run the model (%s)", fmt, reason)
            rows.append(_failed(fmt, out_dir / FILES[fmt], len(clips), reason))
            continue
        rows.append(_row(fmt, path, probs, reference, ms))
        log.info("%s: %s in %.0f s, %s", fmt, path, time.perf_counter() - start, rows[-1])
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _failed(fmt: str, path: Path, clips: int, reason: str) -> dict:
    return {
        **dict.fromkeys(SUMMARY_COLUMNS),
        "format": fmt,
        "path": str(path),
        "clips": clips,
        "same_top1": 0,
        "within_tolerance": False,
        "error": reason,
    }


def _row(fmt: str, path: Path, probs, reference, ms: float) -> dict:
    diff = float(np.abs(np.asarray(probs, np.float64) - reference).max())
    return {
        "format": fmt,
        "path": str(path),
        "size_mb": size_mb(path),
        "clips": len(reference),
        "same_top1": int((np.argmax(probs, axis=1) == np.argmax(reference, axis=1)).sum()),
        "max_abs_diff": diff,
        "within_tolerance": diff <= TOLERANCE,
        "ms_per_clip": ms,
        "error": "",
    }
