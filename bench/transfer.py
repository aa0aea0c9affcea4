"""Transfer learning on real clips: the cost of a search trial with and
without the frozen-feature cache, and accuracy against a logistic regression
on the same frozen features and splits.

Prints, in one run, on the same real clips (extracted once to T frames of
S x S):

  1. the one-time cost of the feature cache (every clip through the frozen
     backbone), one epoch of end-to-end training (backbone trainable), and
     one search trial end to end and on cached features: the same head,
     epochs, data and rate;
  2. for each of several seeded group splits: the test accuracy of the
     workflow's frozen stage (the head trained on the cached features, early
     stopping on val, as rule train runs it) and of scikit-learn's logistic
     regression on the time-averaged cached features, fitted on the same
     train split; with --finetune, also after the fine-tuning stage.

    python bench/transfer.py [--backbone FILE.keras] [--clips UCF-101] [--frames 8]
        [--size 224] [--epochs 3] [--seeds 10] [--frozen-epochs 30] [--finetune 0]
    python bench/transfer.py --workflow RESULTS   # a finished workflow run instead:
        # its metrics.json beside a logistic regression on its own features and split

Defaults: the ImageNet-pretrained EfficientNet-Lite0 and the real UCF101 clips
in ../shared (see their READMEs).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import numpy as np  # noqa: E402
from real import (  # noqa: E402
    SAMPLE,
    add_clip_arguments,
    add_frozen_epochs,
    add_training_arguments,
    logistic_regression_accuracy,
    quiet,
)

from actionrec.tables import read_tsv, write_tsv  # noqa: E402


def test_accuracy(model, data) -> float:
    from actionrec.evaluate import predict_split

    clips, probs = predict_split(model, data, "test", 8)
    return float((probs.argmax(axis=1) == clips["label"].to_numpy()).mean())


def workflow_run(results: Path) -> None:
    from actionrec.manifest import read_classes
    from actionrec.pipeline import Data

    metrics = json.loads((results / "final/metrics.json").read_text())
    history = read_tsv(results / "final/history.tsv")
    features = sorted(next((results / "features").iterdir()).glob("shard-*.h5"))
    split = results / "data/split.tsv"
    data = Data.of(
        split,
        sorted((results / "data/shards").glob("shard-*.h5")),
        len(read_classes(results / "data/classes.txt")),
        features,
    )
    clips, method = metrics["test_clips"], metrics["split_method"]
    print(f"workflow run {results}: {clips} test clips, {method} split")
    for stage, rows in history.groupby("stage", sort=False):
        best = rows.loc[rows["val_loss"].idxmin()]
        print(f"  stage {stage}: {len(rows)} epochs, best val loss {best['val_loss']:.4f}")
    print(
        f"  workflow (kept epoch, {history.loc[history['kept'], 'stage'].item()}): "
        f"test accuracy {metrics['accuracy']:.4f}"
    )
    print(
        f"  logistic regression on the same features and split: "
        f"{logistic_regression_accuracy(data, split):.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_clip_arguments(parser, SAMPLE)
    add_training_arguments(
        parser, seeds=10, epochs=3, lr=0.001, epochs_help="epochs of the timed trials"
    )
    add_frozen_epochs(parser)
    parser.add_argument("--finetune", type=int, default=0, help="splits also fine-tuned")
    parser.add_argument("--workflow", type=Path, help="a finished run's results folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.workflow:
        workflow_run(args.workflow)
        return
    import keras
    import pandas as pd

    from actionrec.extract import extract_shard
    from actionrec.features import cache_features
    from actionrec.manifest import build_manifest
    from actionrec.model import build_model
    from actionrec.pipeline import Data, make_dataset, steps_per_epoch
    from actionrec.resume import build_for_fit
    from actionrec.search import SearchSettings
    from actionrec.split import make_split
    from actionrec.train import TrainConfig, run_trial, train

    tmp = Path(tempfile.mkdtemp(prefix="transfer-"))
    manifest = build_manifest(args.clips)
    names = sorted(manifest["class"].unique())
    shard = tmp / "shards/shard-0000.h5"
    start = time.perf_counter()
    report = extract_shard(
        manifest, shard, tmp / "shards/shard-0000.tsv", frames=args.frames, size=args.size
    )
    n_clips = int((report["status"] == "ok").sum())
    print(
        f"{n_clips} real clips of {len(names)} classes, T={args.frames}, S={args.size}, "
        f"backbone {args.backbone.name} ({args.backbone.parent.name}); "
        f"extracted in {time.perf_counter() - start:.1f} s"
    )

    start = time.perf_counter()
    cache_features(shard, tmp / "features/shard-0000.h5", str(args.backbone), "none")
    cache_seconds = time.perf_counter() - start

    split, _ = make_split(report, "group", seed=0)
    write_tsv(split, tmp / "split.tsv")
    frames_only = Data.of(tmp / "split.tsv", [shard], len(names))
    cached = frames_only.with_features([tmp / "features/shard-0000.h5"])
    section = {"backbone": str(args.backbone), "weights": "none", "batch_size": 2}

    # One trial end to end, as a search trial ran before the cache: the whole
    # model trains on frames, the backbone included.
    start = time.perf_counter()
    keras.utils.set_random_seed(0)
    model = build_model(len(names), args.frames, args.size, str(args.backbone))
    model.compile(keras.optimizers.Adam(args.lr), "categorical_crossentropy", metrics=["accuracy"])
    stream = make_dataset(frames_only, "train", 2, shuffle=True, epochs=(0, args.epochs))
    build_for_fit(model, stream.element_spec)  # as the workflow's trials
    timer = []
    model.fit(
        stream,
        epochs=args.epochs,
        steps_per_epoch=steps_per_epoch(tmp / "split.tsv", "train", 2),
        validation_data=make_dataset(frames_only, "val", 2),
        verbose=0,
        callbacks=[
            keras.callbacks.LambdaCallback(
                on_epoch_begin=lambda e, logs: timer.append(time.perf_counter()),
                on_epoch_end=lambda e, logs: timer.append(time.perf_counter()),
            )
        ],
    )
    e2e_trial = time.perf_counter() - start
    epoch_seconds = [b - a for a, b in zip(timer[::2], timer[1::2], strict=True)]
    settings = SearchSettings.from_config({"epochs": args.epochs})
    # As a Bayesian search runs them: one job, trials one after another. The
    # first pays for TensorFlow's first traces; the others are what a trial costs.
    cached_trials = []
    for _ in range(3):
        start = time.perf_counter()
        with quiet():
            run_trial(args.lr, cached, section, settings, tmp / "trial", seed=0)
        cached_trials.append(time.perf_counter() - start)
    cached_trial = float(np.median(cached_trials[1:]))
    one_epoch = epoch_seconds[-1]
    print(f"\n{'':44s}{'seconds':>10s}")
    print(f"{'feature cache, once (all clips)':44s}{cache_seconds:10.1f}")
    print(
        f"{'one end-to-end training epoch':44s}{one_epoch:10.1f}"
        f"   cache / epoch: {cache_seconds / one_epoch:.2f}"
    )
    print(f"{f'search trial end to end ({args.epochs} epochs)':44s}{e2e_trial:10.1f}")
    print(
        f"{f'search trial on cached features ({args.epochs} epochs)':44s}{cached_trial:10.1f}"
        f"   {e2e_trial / cached_trial:.0f}x faster (the job's first trial: "
        f"{cached_trials[0]:.1f} s, {e2e_trial / cached_trials[0]:.0f}x)"
    )

    print(f"\ntest accuracy over {args.seeds} group splits (seeds 0..{args.seeds - 1})")
    print(
        f"{'seed':>4s} {'test':>5s} {'frozen stage':>13s} {'logistic regr.':>15s}"
        f"{'  fine-tuned' if args.finetune else ''}"
    )
    rows = []
    for seed in range(args.seeds):
        split, _ = make_split(report, "group", seed=seed)
        split_tsv = tmp / f"split-{seed}.tsv"
        write_tsv(split, split_tsv)
        data = Data.of(split_tsv, [shard], len(names), [tmp / "features/shard-0000.h5"])
        finetune = {"blocks": "all", "max_epochs": 5} if seed < args.finetune else {"blocks": 0}
        cfg = TrainConfig.from_config(
            {
                **section,
                "lr": args.lr,
                "max_epochs": args.frozen_epochs,
                "patience": 5,
                "finetune": finetune,
            },
            seed=seed,
        )
        with quiet():
            model, history = train(data, cfg, tmp / "work")
        frozen_rows = history[history["stage"] == "frozen"]
        row = {
            "seed": seed,
            "test_clips": int((split["split"] == "test").sum()),
            "frozen": float(frozen_rows.loc[frozen_rows["val_loss"].idxmin(), "test_accuracy"]),
            "logistic_regression": logistic_regression_accuracy(data, split_tsv),
        }
        if seed < args.finetune:
            row["finetuned"] = test_accuracy(model, data)
        rows.append(row)
        line = f"{seed:4d} {row['test_clips']:5d} {row['frozen']:13.3f}"
        line += f" {row['logistic_regression']:15.3f}"
        if "finetuned" in row:
            line += f" {row['finetuned']:11.3f}"
        print(line, flush=True)
    table = pd.DataFrame(rows)
    print(
        f"mean {table['test_clips'].mean():5.1f} {table['frozen'].mean():13.3f} "
        f"{table['logistic_regression'].mean():15.3f}"
        + (f"{table['finetuned'].mean():12.3f}" if args.finetune else "")
    )


if __name__ == "__main__":
    main()
