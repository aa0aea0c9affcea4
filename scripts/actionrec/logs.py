"""Logging for rule scripts: to the rule's log file and to stderr."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def logged(path: str | os.PathLike | None) -> Iterator[logging.Logger]:
    """Send log records to ``path`` and stderr; an exception that escapes is
    written to the log with its traceback, then raised again."""
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
