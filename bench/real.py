"""What the benchmarks on real clips share: where ../shared keeps the clips and
the ImageNet backbone (see each folder's README), and their common arguments."""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
LITE0 = SHARED / "models/efficientnet-lite0-imagenet/backbone.keras"
REAL3 = SHARED / "data/ucf101-real3-train/UCF-101"
SAMPLE = SHARED / "data/ucf101-sample/UCF-101"


def add_clip_arguments(parser: argparse.ArgumentParser, clips: Path = REAL3) -> None:
    """--clips, --backbone, --frames and --size, with the shared defaults."""
    parser.add_argument("--clips", type=Path, default=clips, help=f"default {clips}")
    parser.add_argument("--backbone", type=Path, default=LITE0, help=f"default {LITE0}")
    parser.add_argument("--frames", type=int, default=8, help="T, segments a clip (default 8)")
    parser.add_argument("--size", type=int, default=224, help="S, pixels a side (default 224)")


def add_training_arguments(
    parser: argparse.ArgumentParser, *, seeds: int, epochs: int, lr: float, epochs_help: str
) -> None:
    """--seeds, --epochs and --lr, with a benchmark's own defaults."""
    parser.add_argument("--seeds", type=int, default=seeds, help="group splits (seeds 0..N-1)")
    parser.add_argument("--epochs", type=int, default=epochs, help=epochs_help)
    parser.add_argument("--lr", type=float, default=lr, help="the learning rate")


def add_frozen_epochs(parser: argparse.ArgumentParser) -> None:
    """--frozen-epochs: the most epochs of a frozen stage (30; fewer for a smoke run)."""
    parser.add_argument(
        "--frozen-epochs",
        type=int,
        default=30,
        help="most epochs of every frozen stage (early stopping, patience 5; default 30)",
    )


def quiet():
    """Keras's per-epoch lines out of the benchmark's table."""
    return contextlib.redirect_stdout(io.StringIO())


def check_inputs(args: argparse.Namespace) -> None:
    for what, path in (("clips", args.clips), ("backbone", args.backbone)):
        if not path.exists():
            raise SystemExit(f"--{what} {path} does not exist")


def setup_line(args: argparse.Namespace, seconds: dict[str, float]) -> str:
    """S, the backbone and the one-time stages' seconds, for a benchmark's first line."""
    return f"S={args.size}, backbone {args.backbone.name} ({args.backbone.parent.name})" + "".join(
        f"; {name} {value:.1f} s" for name, value in seconds.items()
    )


def logistic_regression_accuracy(data, split_tsv) -> float:
    """Logistic regression on the time-averaged cached features: fitted on
    train, scored on test."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from actionrec.pipeline import clip_table, load_features

    def part(name):
        table = clip_table(split_tsv, name)
        return load_features(data, table).astype(np.float32).mean(axis=1), table["label"]

    (x, y), (x_test, y_test) = part("train"), part("test")
    model = LogisticRegression(max_iter=5000).fit(x, y)
    return float((model.predict(x_test) == y_test).mean())
