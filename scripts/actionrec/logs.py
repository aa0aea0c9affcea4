"""Logging for rule scripts: to the rule's log file and to stderr."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# What TensorFlow and its libraries print on every start, whatever the run: the
# CPU's instructions, oneDNN, absl's own notice, and a CUDA driver that a
# machine without an NVIDIA GPU cannot have. None of it is about the run.
STARTUP_NOISE = re.compile(
    r"oneDNN custom operations are on"
    r"|oneDNN supports DT_HALF only on platforms with AVX-512"
    r"|All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|cpu_feature_guard\.cc|To enable the following instructions:.*rebuild TensorFlow"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|Could not find cuda drivers on your machine"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
)
# Only where no NVIDIA device exists is a failed CUDA start-up noise.
NO_GPU_NOISE = re.compile(r"failed call to cuInit|CUDA error: Failed call to cuInit")
_quiet: threading.Thread | None = None


def _is_noise(line: str) -> bool:
    if STARTUP_NOISE.search(line):
        return True
    return bool(NO_GPU_NOISE.search(line)) and not os.path.exists("/dev/nvidia0")


def _pump(source: int, sink: int) -> None:
    """Copy lines from ``source`` to ``sink``, less TensorFlow's start-up noise."""
    pending = b""
    while chunk := os.read(source, 65536):
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        kept = [line for line in lines if not _is_noise(line.decode("utf-8", "replace"))]
        if kept:
            os.write(sink, b"".join(line + b"\n" for line in kept))
    if pending and not _is_noise(pending.decode("utf-8", "replace")):
        os.write(sink, pending)
    os.close(source)


def quiet_startup() -> None:
    """Keep TensorFlow's start-up lines out of this process's stderr (the
    console, and the log of a job whose stderr goes there); every other line,
    TensorFlow's real warnings and errors among them, passes. Call before
    TensorFlow is imported; the filter is removed, flushed, at exit."""
    global _quiet
    if _quiet is not None:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # its INFO lines are never printed
    sys.stderr.flush()
    sink = os.dup(2)
    source, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    _quiet = threading.Thread(target=_pump, args=(source, sink), daemon=True)
    _quiet.start()

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(sink, 2)  # the pipe's last writer gone: the pump drains it and ends
        _quiet.join(timeout=5)

    atexit.register(restore)


@contextlib.contextmanager
def logged(path: str | os.PathLike | None) -> Iterator[logging.Logger]:
    """Send log records to ``path`` and stderr, without TensorFlow's start-up
    noise (:func:`quiet_startup`); an exception that escapes is written to the
    log with its traceback, then raised again."""
    quiet_startup()
    console = logging.StreamHandler(sys.stderr)
    # The console gets warnings; the log file gets progress as well.
    console.setLevel(logging.WARNING)
    handlers: list[logging.Handler] = [console]
    if path:
        os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
        open(path, "w").close()
        # Appending, so that other writers to the same log (Keras's progress) interleave.
        handlers.append(logging.FileHandler(path, mode="a"))
    logging.basicConfig(level=logging.INFO, format=FORMAT, handlers=handlers, force=True)
    logging.captureWarnings(True)
    log = logging.getLogger("actionrec")
    try:
        yield log
    except Exception:
        log.exception("failed")
        raise
    finally:
        for h in handlers:
            h.flush()


@contextlib.contextmanager
def logged_with_progress(path: str | os.PathLike) -> Iterator[logging.Logger]:
    """:func:`logged`, with standard output (Keras's per-epoch progress) going
    into the same log."""
    with logged(path) as log, open(path, "a", buffering=1) as progress:
        with contextlib.redirect_stdout(progress):
            yield log
