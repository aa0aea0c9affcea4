"""A clip backbone against a frame backbone, both frozen, on the same real
clips and the same group splits: the Kinetics-400 I3D (a video network on the
whole clip) and the ImageNet EfficientNet-Lite0 (an image network on every
frame).

Each backbone gets the clips at the T and S it needs (I3D: 16 frames of
224 x 224, so T' = 2 feature steps; Lite0: 8 frames of 224 x 224). Every
geometry is extracted once, from one manifest in one order, into shards of the
same layout (the clip ids are checked to line up), and each backbone's features
are cached once and timed. Then, for each seeded group split (no source video
on two sides; one split.tsv serves both backbones), it prints the test accuracy
of:

  frozen head   the workflow's frozen stage: the average head trained on the
                cached features, early stopping on val (rule train with
                finetune.blocks 0); the training seed is the split's, the same
                for both backbones
  logreg        scikit-learn's logistic regression on the time-averaged cached
                features, fitted on the train split (for context)

with the mean and standard deviation over the splits, and per backbone: T, S,
the steps a head sees, parameters, FLOPs per clip and the feature cache's
seconds per clip.

I3D's numbers are video-pretrained: Kinetics-400 holds many UCF101 actions
(see ../shared/models/i3d-kinetics400/README.md), so they are not like for like
with an ImageNet backbone's.

    python bench/clip_backbones.py [--clips UCF-101] [--backbone LITE0.keras]
        [--i3d I3D.keras] [--frames 8] [--i3d-frames 16] [--size 224]
        [--seeds 5] [--epochs 40] [--patience 5] [--lr 0.001] [--work DIR]

Defaults: the real UCF101 clips of three actions (ucf101-real3-train), the
ImageNet-pretrained EfficientNet-Lite0 and the Kinetics-400 I3D in ../shared
(see their READMEs). --work keeps the extractions and feature caches, so that a
rerun skips them (their seconds are read back from the caches); a cache that
another backbone file or features code made is computed again.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import h5py  # noqa: E402
import pandas as pd  # noqa: E402
from real import (  # noqa: E402
    SHARED,
    add_clip_arguments,
    add_training_arguments,
    check_inputs,
    logistic_regression_accuracy,
    quiet,
)

from actionrec.pipeline import Layout, shard_layout  # noqa: E402
from actionrec.tables import read_tsv, write_tsv  # noqa: E402

I3D = SHARED / "models/i3d-kinetics400/backbone.keras"
SHARD = "shard-0000.h5"
PRETRAINING = {
    "I3D": "Kinetics-400 video-pretrained (Kinetics holds UCF101 actions: not like for like)",
    "Lite0": "ImageNet-pretrained",
}


def extract(args, work: Path, frames: int) -> tuple[pd.DataFrame, Path, float | None]:
    """The clips at T = ``frames``, S = --size, one shard (kept in ``work``):
    its report, its path, and the seconds it took (None when reused)."""
    from actionrec.extract import extract_shard
    from actionrec.manifest import build_manifest

    shard = work / f"t{frames}-s{args.size}" / SHARD
    report_path = shard.with_suffix(".tsv")
    seconds = None
    if not (shard.exists() and report_path.exists()):
        start = time.perf_counter()
        extract_shard(build_manifest(args.clips), shard, report_path, frames=frames, size=args.size)
        seconds = time.perf_counter() - start
    got = shard_layout(shard)
    if got != Layout(frames, 1, args.size):
        raise SystemExit(f"{shard} holds another extraction ({got}); use another --work")
    return read_tsv(report_path), shard, seconds


def check_aligned(reports: dict[str, pd.DataFrame], shards: dict[str, Path]) -> None:
    """Stop unless every extraction holds the same clips at the same indices
    (so that one split.tsv reads the same clip from each)."""
    first, *others = reports
    keys = ["clip_id", "shard", "index", "status", "label", "group"]
    for name in others:
        if not reports[name][keys].equals(reports[first][keys]):
            raise SystemExit(
                f"the {name} and {first} extractions hold different clips or indices; "
                "delete --work to extract again"
            )
    ok = reports[first][reports[first]["status"] == "ok"]
    for shard in shards.values():
        with h5py.File(shard) as f:
            ids = f["clip_id"].asstr()[()]
        if list(ids[ok["index"].to_numpy()]) != ok["clip_id"].tolist():
            raise SystemExit(f"{shard}'s clip ids do not match its report; delete --work")


def cache(args, work: Path, name: str, backbone: Path, shard: Path) -> tuple[Path, float]:
    """One backbone's features of every clip of ``shard`` (kept in ``work``,
    computed again when another backbone, code or extraction made them), and
    the seconds per clip the cache took (as recorded in it)."""
    from actionrec.features import cache_features, check_cache

    t = shard_layout(shard).frames
    features = work / f"features-{name}-{backbone.parent.name}-t{t}-s{args.size}" / SHARD
    if features.exists():
        try:
            check_cache({SHARD: features}, {SHARD: shard}, str(backbone), "none")
        except ValueError as err:
            print(f"computing {name}'s features again: {str(err).split('; ')[0]}", flush=True)
            features.unlink()
    if not features.exists():
        cache_features(shard, features, str(backbone), "none", threads=args.threads)
    with h5py.File(features) as f:
        return features, float(f.attrs["seconds"]) / max(len(f["label"]), 1)


def describe(name: str, backbone: Path, frames: int, size: int) -> dict:
    """T, S, the steps a head sees, parameters and FLOPs per clip of one
    backbone; stops if it is not the kind its option asks for."""
    from actionrec.compare import flops_per_clip
    from actionrec.model import build_backbone, feature_steps, is_clip_backbone

    net = build_backbone(str(backbone), size, None, frames=frames)
    want_clip = name == "I3D"
    if is_clip_backbone(net) != want_clip:
        option, kind = ("--i3d", "clip") if want_clip else ("--backbone", "frame")
        raise SystemExit(f"{option} {backbone} is not a {kind} backbone")
    return {
        "backbone": name,
        "file": f"{backbone.parent.name}/{backbone.name}",
        "T": frames,
        "S": size,
        "steps": feature_steps(net, frames),
        "features": int(net.output.shape[-1]),
        "params": net.count_params(),
        "GFLOPs/clip": flops_per_clip(net, frames) / 1e9,
    }


def frozen_head(args, data, backbone: Path, seed: int, work: Path) -> tuple[float, int, float]:
    """The workflow's frozen stage on the cached features: test accuracy of
    the kept head, its epoch and the seconds of the training."""
    from actionrec.evaluate import predict_split
    from actionrec.train import TrainConfig, train

    section = {
        "backbone": str(backbone),
        "weights": "none",
        "head": "average",
        "lr": args.lr,
        "batch_size": args.batch,
        "max_epochs": args.epochs,
        "patience": args.patience,
        "finetune": {"blocks": 0},
        "mixed_precision": False,
        "xla": False,
    }
    start = time.perf_counter()
    with quiet():
        head, history = train(
            data, TrainConfig.from_config(section, seed=seed), work, head_only=True
        )
    seconds = time.perf_counter() - start
    clips, probs = predict_split(head, data, "test", args.batch, features=True)
    kept = int(history.loc[history["kept"], "epoch"].item())
    return float((probs.argmax(axis=1) == clips["label"].to_numpy()).mean()), kept, seconds


def main() -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_clip_arguments(parser)
    parser.add_argument("--i3d", type=Path, default=I3D, help=f"clip backbone (default {I3D})")
    parser.add_argument("--i3d-frames", type=int, default=16, help="the clip backbone's T")
    add_training_arguments(
        parser, seeds=5, epochs=40, lr=0.001, epochs_help="the frozen head's most epochs"
    )
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8, help="clips a batch, on features")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, help="keep extractions and features here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    check_inputs(args)
    if not args.i3d.exists():
        raise SystemExit(f"--i3d {args.i3d} does not exist")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(args.threads, 2))
    from actionrec.pipeline import Data
    from actionrec.split import make_split

    work = args.work or Path(tempfile.mkdtemp(prefix="clip-backbones-"))
    backbones = {"I3D": (args.i3d, args.i3d_frames), "Lite0": (args.backbone, args.frames)}
    info = {name: describe(name, path, t, args.size) for name, (path, t) in backbones.items()}

    reports, shards, extracted = {}, {}, {}
    for t in dict.fromkeys(t for _, t in backbones.values()):  # each geometry once
        reports[t], shards[t], seconds = extract(args, work, t)
        if seconds is not None:
            extracted[f"T={t}"] = seconds
    check_aligned(reports, shards)
    report = reports[args.frames]
    ok = report[report["status"] == "ok"]
    classes = int(report["label"].max()) + 1
    print(
        f"{len(ok)} clips of {ok['class'].nunique()} classes from {args.clips}, S={args.size}; "
        + (
            "extracted in " + ", ".join(f"{k} {v:.1f} s" for k, v in extracted.items())
            if extracted
            else f"extractions reused from {work}"
        ),
        flush=True,
    )
    features = {}
    for name, (path, t) in backbones.items():
        features[name], info[name]["feature s/clip"] = cache(args, work, name, path, shards[t])
        check_aligned({t: report}, {t: features[name]})
        print(
            f"{name} features: {info[name]['feature s/clip']:.3f} s/clip "
            f"({t} frames a clip, {info[name]['steps']} steps of {info[name]['features']})",
            flush=True,
        )

    rows = []
    for seed in range(args.seeds):
        split, _ = make_split(report, "group", seed=seed)
        split_tsv = work / f"splits/split-{seed}.tsv"
        split_tsv.parent.mkdir(parents=True, exist_ok=True)
        write_tsv(split, split_tsv)
        row = {"seed": seed, "test clips": int((split["split"] == "test").sum())}
        for name, (path, t) in backbones.items():
            data = Data.of(split_tsv, [shards[t]], classes, [features[name]])
            accuracy, kept, seconds = frozen_head(args, data, path, seed, work / f"train-{name}")
            row[f"{name} frozen head"] = accuracy
            row[f"{name} logreg"] = logistic_regression_accuracy(data, split_tsv)
            row[f"{name} kept epoch"] = kept
            row[f"{name} train s"] = round(seconds, 1)
        rows.append(row)
        print(
            f"seed {seed} ({row['test clips']} test clips): "
            + "  ".join(f"{k} {row[k]:.3f}" for k in row if k.endswith(("head", "logreg"))),
            flush=True,
        )

    table = pd.DataFrame(rows)
    accuracy = [c for c in table if c.endswith(("head", "logreg"))]
    summary = pd.DataFrame(
        [
            {"seed": "mean", **table[["test clips", *accuracy]].mean().to_dict()},
            {"seed": "std", **table[accuracy].std(ddof=1).to_dict()},
        ]
    )
    shown = pd.concat([table[["seed", "test clips", *accuracy]], summary], ignore_index=True)
    seeds = f"{args.seeds} group splits (seeds 0..{args.seeds - 1})"
    print(f"\nTest accuracy of frozen backbones' features, {seeds}")
    print(shown.round(3).to_markdown(index=False))
    print("\nEpochs kept (best val loss) and seconds of each frozen-head training")
    fits = table[["seed", *[c for c in table if c.endswith(("epoch", " s"))]]]
    print(fits.to_markdown(index=False))
    print("\nBackbones")
    backbone_table = pd.DataFrame(info.values())
    backbone_table["pretraining"] = backbone_table["backbone"].map(PRETRAINING)
    print(backbone_table.round({"GFLOPs/clip": 2, "feature s/clip": 3}).to_markdown(index=False))
    print(
        "\nI3D's accuracies are Kinetics-400 video-pretrained numbers: Kinetics-400 holds "
        "many UCF101 actions, so set them beside ImageNet-backbone numbers as context, "
        "not as a like-for-like comparison."
    )
    print(f"total {time.perf_counter() - started:.0f} s (work folder {work})")


if __name__ == "__main__":
    main()
