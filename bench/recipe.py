"""The training recipe on real clips, stage by stage, against a logistic
regression on the same frozen features and splits.

One extraction (T segments x K stored frames per clip, S x S) and one feature
cache serve every split. For each seeded group split (no source video on two
sides) it prints the test accuracy of:

  logreg        scikit-learn's logistic regression on the time-averaged frozen
                features of the T middle frames (one per segment)
  logreg all    the same on the average of all T x K stored frames
  frozen        the head on the frozen backbone's features of the T middle
                frames, every epoch the same (the workflow without temporal
                sampling), tested on those frames
  + sampling    the same head trained with one stored frame per segment drawn
                at random every epoch (TSN's sparse sampling), tested on the
                middle view
  + views       that head, tested as the mean over K views
  fine-tuned    the recipe: that frozen stage, then the whole backbone
                fine-tuned on frames with sampling and augmentation, tested on
                the middle view, and over K views (x 3 crops)

with each stage's seconds, and every fine-tuning epoch's train and val
accuracy. The recipe's settings are config/ucf101.yaml's (train.finetune,
train.label_smoothing, train.augment); the frozen head's rate is fixed
(--lr) rather than searched.

    python bench/recipe.py [--clips UCF-101] [--backbone FILE.keras] [--frames 8]
        [--per-segment 4] [--size 224] [--seeds 5 | --seed K ...] [--finetune-epochs N]
        [--frozen-epochs 30] [--work DIR] [--out TABLE.md] [--train finetune.lr=1e-4 ...]

Defaults: the real UCF101 clips of three actions and the ImageNet-pretrained
EfficientNet-Lite0 in ../shared (see their READMEs). --work keeps the
extraction and features for a rerun with other training settings.
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
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from real import (  # noqa: E402
    REPO,
    add_clip_arguments,
    add_frozen_epochs,
    check_inputs,
    quiet,
    setup_line,
)

from actionrec.pipeline import Layout, shard_layout  # noqa: E402
from actionrec.tables import read_tsv, write_tsv  # noqa: E402

COLUMNS = {
    "logreg": "logistic regression",
    "logreg_all": "logistic regression, all stored frames",
    "frozen": "frozen stage",
    "sampled": "frozen + temporal sampling",
    "sampled_views": "frozen + sampling, K views",
    "finetuned": "fine-tuned (recipe), middle view",
    "finetuned_views": "fine-tuned (recipe), K views",
    "finetuned_crops": "fine-tuned (recipe), K views x 3 crops",
}


def recipe_settings(overrides: list[str]) -> dict:
    """The train section of config/ucf101.yaml (the recipe), with
    ``KEY=VALUE`` overrides (``finetune.lr=1e-4``; values read as YAML)."""
    with open(REPO / "config/ucf101.yaml", encoding="utf-8") as f:
        train = yaml.safe_load(f)["train"]
    for item in overrides:
        key, _, value = item.partition("=")
        *path, last = key.split(".")
        node = train
        for part in path:
            node = node[part]
        if last not in node:
            raise SystemExit(f"--train {item}: train has no key {key}")
        node[last] = yaml.safe_load(value)
    return train


def prepare(args, work: Path) -> tuple[pd.DataFrame, Path, Path, dict]:
    """Extract the clips and cache their features once (kept in ``work``)."""
    from actionrec.extract import extract_shard
    from actionrec.features import cache_features
    from actionrec.manifest import build_manifest

    shard = work / "shards/shard-0000.h5"
    features = work / "features/shard-0000.h5"
    seconds = {}
    report_path = shard.with_suffix(".tsv")
    if not shard.exists():
        start = time.perf_counter()
        extract_shard(
            build_manifest(args.clips),
            shard,
            report_path,
            frames=args.frames,
            size=args.size,
            frames_per_segment=args.per_segment,
        )
        seconds["extract"] = time.perf_counter() - start
    got = shard_layout(shard)
    if got != Layout(args.frames, args.per_segment, args.size):
        raise SystemExit(f"{work} holds another extraction ({got}); use another --work")
    if not features.exists():
        start = time.perf_counter()
        cache_features(shard, features, str(args.backbone), "none")
        seconds["features"] = time.perf_counter() - start
    return read_tsv(report_path), shard, features, seconds


def middle_view(shard: Path, features: Path, out: Path) -> tuple[Path, Path]:
    """A frame shard and its feature shard of the T middle stored frames only
    (K = 1), under ``out``: what the frozen stage trains on without temporal
    sampling (a feature shard always covers every frame of its frame shard)."""
    frames_out, features_out = out / "shards" / shard.name, out / "features" / features.name
    if features_out.exists():
        return frames_out, features_out
    for path in (frames_out, features_out):
        path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(shard) as src, h5py.File(frames_out, "w") as dst:
        k = int(src.attrs["frames_per_segment"])
        n, stored = src["frames"].shape[:2]
        middle = dst.create_dataset(
            "frames", (n, stored // k, *src["frames"].shape[2:]), "uint8", chunks=True
        )
        for i in range(n):  # one clip a read: no fancy indexing of the chunked source
            middle[i] = src["frames"][i][k // 2 :: k]
        for name in ("label", "clip_id"):
            dst.create_dataset(name, data=src[name][()])
        dst.attrs.update({**src.attrs, "frames_per_segment": 1, "stored_frames": stored // k})
    with h5py.File(features) as src, h5py.File(features_out, "w") as dst:
        dst["features"] = src["features"][:, k // 2 :: k]
        for name in ("label", "clip_id"):
            dst.create_dataset(name, data=src[name][()])
        dst.attrs.update({**src.attrs, "frames_per_segment": 1})
        dst.attrs["stored_frames"] = dst["features"].shape[1]
    return frames_out, features_out


def logistic_regression(data, split_tsv: Path, offset: int | None) -> float:
    """Logistic regression on time-averaged cached features (one stored frame
    per segment, or all of them when ``offset`` is None)."""
    from sklearn.linear_model import LogisticRegression

    from actionrec.pipeline import clip_table, load_features

    k = shard_layout(next(iter(data.features.values()))).per_segment

    def part(name):
        table = clip_table(split_tsv, name)
        feats = load_features(data, table).astype(np.float32)
        if offset is not None:
            feats = feats[:, offset::k]
        return feats.mean(axis=1), table["label"]

    (x, y), (x_test, _) = part("train"), part("test")
    model = LogisticRegression(max_iter=5000).fit(x, y)
    return scored(clip_table(split_tsv, "test"), model.predict(x_test))


def scored(clips: pd.DataFrame, predicted: np.ndarray) -> tuple[float, str]:
    """Test accuracy, and the wrong clips by source video (group): "g: wrong/clips"."""
    right = predicted == clips["label"].to_numpy()
    by_group = pd.DataFrame({"group": clips["group"], "wrong": ~right}).groupby("group")["wrong"]
    wrong = by_group.agg(["sum", "size"])
    wrong = wrong[wrong["sum"] > 0]
    return float(right.mean()), ", ".join(
        f"{group} {int(r['sum'])}/{int(r['size'])}" for group, r in wrong.iterrows()
    )


def accuracy(model, data, **options) -> tuple[float, str]:
    from actionrec.evaluate import predict_split

    clips, probs = predict_split(model, data, "test", 8, **options)
    return scored(clips, probs.argmax(axis=1))


def run_split(seed: int, args, report, shard, features, middle, work: Path) -> tuple[dict, list]:
    from actionrec.pipeline import Data
    from actionrec.split import make_split
    from actionrec.train import TrainConfig, train

    split, _ = make_split(report, "group", seed=seed)
    split_tsv = work / f"split-{seed}.tsv"
    write_tsv(split, split_tsv)
    classes = int(report["label"].max()) + 1
    sampled = Data.of(split_tsv, [shard], classes, [features])
    fixed = Data.of(split_tsv, [middle[0]], classes, [middle[1]])
    recipe = recipe_settings(args.train)
    base = {
        **recipe,
        "backbone": str(args.backbone),
        "weights": "none",
        "lr": args.lr,
        "max_epochs": args.frozen_epochs,
        "patience": 5,
        "mixed_precision": False,
        "xla": False,
    }
    frozen_only = {**base, "finetune": {**recipe["finetune"], "blocks": 0}}
    row = {"seed": seed, "test_clips": int((split["split"] == "test").sum())}
    k = args.per_segment
    row["logreg"], wrong = logistic_regression(sampled, split_tsv, k // 2)
    row["logreg_all"], _ = logistic_regression(sampled, split_tsv, None)
    wrong_groups = {"seed": seed, "logistic regression": wrong}
    seconds = {}

    def fit(data, section, name):
        start = time.perf_counter()
        cfg = TrainConfig.from_config(section, seed=seed)
        with quiet():
            model, history = train(data, cfg, work / "train")
        seconds[name] = time.perf_counter() - start
        return model, history

    from actionrec.model import head_of

    model, _ = fit(fixed, frozen_only, "frozen")
    row["frozen"], _ = accuracy(head_of(model), fixed, features=True)
    model, _ = fit(sampled, frozen_only, "sampled")
    head = head_of(model)
    row["sampled"], _ = accuracy(head, sampled, features=True)
    row["sampled_views"], _ = accuracy(head, sampled, features=True, views=k)
    curves = []
    if args.finetune_epochs:
        section = {
            **base,
            "finetune": {**recipe["finetune"], "max_epochs": args.finetune_epochs},
        }
        model, history = fit(sampled, section, "finetune")
        seconds["finetune"] -= seconds["sampled"]  # the same frozen stage, run again
        kept = history.loc[history["kept"], "stage"].item()
        start = time.perf_counter()
        row["finetuned"], _ = accuracy(model, sampled)
        row["finetuned_views"], _ = accuracy(model, sampled, views=k)
        row["finetuned_crops"], wrong_groups["the recipe"] = accuracy(
            model, sampled, views=k, crops=3
        )
        seconds["multi-view test"] = time.perf_counter() - start
        row["kept"] = kept
        for r in history[history["stage"] == "finetune"].itertuples():
            curves.append(
                {
                    "seed": seed,
                    "epoch": int(r.epoch),
                    "train_accuracy": round(float(r.accuracy), 4),
                    "val_accuracy": round(float(r.val_accuracy), 4),
                    "val_loss": round(float(r.val_loss), 4),
                    "test_accuracy": round(float(r.test_accuracy), 4),
                    "collapsed": bool(r.collapsed),
                    "seconds": round(float(r.seconds), 1),
                }
            )
    row.update({f"s_{name}": round(value, 1) for name, value in seconds.items()})
    return row, curves, wrong_groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_clip_arguments(parser)
    parser.add_argument("--per-segment", type=int, default=4, help="K, frames stored a segment")
    parser.add_argument("--seeds", type=int, default=5, help="group splits (seeds 0..N-1)")
    parser.add_argument(
        "--seed", type=int, action="append", help="only these splits (repeatable; not --seeds)"
    )
    parser.add_argument(
        "--finetune-epochs",
        type=int,
        help="most fine-tuning epochs (default: the recipe's finetune.max_epochs; 0: none)",
    )
    add_frozen_epochs(parser)
    parser.add_argument("--lr", type=float, default=0.001, help="the frozen head's rate")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--train",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of the recipe's train section (repeatable)",
    )
    parser.add_argument("--work", type=Path, help="keep extraction and features here")
    parser.add_argument("--out", type=Path, help="also write the tables here (Markdown)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(args.threads, 2))
    check_inputs(args)
    work = args.work or Path(tempfile.mkdtemp(prefix="recipe-"))
    report, shard, features, prep = prepare(args, work)
    middle = middle_view(shard, features, work / "middle")
    ok = report[report["status"] == "ok"]
    print(
        f"{len(ok)} clips of {ok['class'].nunique()} classes, T={args.frames} segments x "
        f"K={args.per_segment} stored frames, " + setup_line(args, prep),
        flush=True,
    )
    recipe = recipe_settings(args.train)
    if args.finetune_epochs is None:
        args.finetune_epochs = int(recipe["finetune"]["max_epochs"])
    print(
        f"recipe: label_smoothing {recipe['label_smoothing']}, augment {recipe['augment']}, "
        f"finetune {dict(recipe['finetune'], max_epochs=args.finetune_epochs)}; "
        f"frozen head lr {args.lr}, at most {args.frozen_epochs} epochs",
        flush=True,
    )
    rows, curves, wrong = [], [], []
    for seed in args.seed or range(args.seeds):
        row, curve, wrong_groups = run_split(seed, args, report, shard, features, middle, work)
        rows.append(row)
        curves.extend(curve)
        wrong.append(wrong_groups)
        shown = "  ".join(f"{key} {row[key]:.3f}" for key in COLUMNS if key in row)
        print(f"seed {seed} ({row['test_clips']} test clips): {shown}", flush=True)
        text = tables(rows, curves, wrong)
        if args.out:  # after every split, so that a long run shows what it has
            args.out.write_text(text + "\n", encoding="utf-8")
    print("\n" + text)


def tables(rows: list[dict], curves: list[dict], wrong: list[dict]) -> str:
    """The accuracy table (with the mean), the wrong test clips by source video,
    the seconds and the fine-tuning curves."""
    table = pd.DataFrame(rows)
    accuracy_table = table[["seed", "test_clips", *[c for c in COLUMNS if c in table]]]
    mean = accuracy_table.mean(numeric_only=True).to_frame().T.assign(seed="mean")
    accuracy_table = pd.concat([accuracy_table, mean], ignore_index=True)
    accuracy_table = accuracy_table.rename(columns=COLUMNS).round(3)
    time_table = table[["seed", *[c for c in table if c.startswith("s_")]]]
    time_table = time_table.rename(columns=lambda c: c.removeprefix("s_"))
    parts = [
        "Test accuracy per group split",
        accuracy_table.to_markdown(index=False),
        "Wrong test clips by source video (group: wrong/clips)",
        pd.DataFrame(wrong).to_markdown(index=False),
        "Seconds per stage",
        time_table.to_markdown(index=False),
    ]
    if curves:
        parts += ["Fine-tuning, every epoch", pd.DataFrame(curves).to_markdown(index=False)]
    return "\n\n".join(parts)


if __name__ == "__main__":
    main()
