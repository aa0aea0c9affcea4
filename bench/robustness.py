"""Robustness on real clips: how much of its accuracy a frozen backbone keeps
under the robustness stage's corruptions, and whether augmentation buys any
back without costing clean accuracy.

Two frozen backbones, each with the T it needs: the ImageNet EfficientNet-Lite0
(a frame backbone, 8 frames of 224 px) and the Kinetics-400 I3D (a clip
backbone, 16 frames of 224 px). Each clip is decoded once with the package's
extraction, then its frozen features are computed once clean, under every
corruption x severity of the robustness stage (``corrupt``, drawn from the
seed and the clip's place in the folder's manifest: the same draw in every
run) and under ``--augment-draws`` draws of the workflow's train-time
augmentation (``augment_clip`` with ``--augment``), and cached in ``--work``.

The heads are scikit-learn's logistic regression on the clip-mean of the
features (what the workflow's ``average`` head computes, fitted exactly),
over ``--folds`` seeded folds by source video (StratifiedGroupKFold, once per
seed of ``--seeds``: every clip is tested once a seed, no source video on
both sides). Per fold, four ways of training a head on the train clips:

  none            clean features only: the floor
  augment         clean features and those of the augmented draws (the
                  workflow's train.augment: low light darkens a share of
                  clips, brightness and contrast shift them)
  all corruptions clean features and one draw per clip of any corruption
                  and severity
  matched         per family, clean features and one draw per clip of that
                  family's corruptions: the family's own remedy (an upper
                  bound: the very corruptions, at the severities, that the
                  test applies), scored on that family

and each is scored on the test clips clean and under every condition by the
robustness stage's own code (``classify_under``, ``summarise``): clean
accuracy, mPC (mean accuracy under corruption) and rPC (mPC / clean accuracy),
overall and per family, and the accuracy under low light at severity 3. Then
the paired differences against ``none`` on the same clips, with a 95%
interval from a bootstrap over source videos.

``--cost`` measures the stage's cost instead: the workflow's clip model
(Lite0 and an ``average`` head whose weights are the logistic regression's)
classifies a group split's test clips through ``predict_split`` clean and
under every corruption at one severity (``classify_under``), ``--repeat``
rounds of them after one pass that pays for tracing; it prints each corrupted
pass's seconds (the median over rounds) against the clean pass's.

    python bench/robustness.py [--clips UCF-101] [--backbone LITE0.keras]
        [--i3d I3D.keras] [--backbones Lite0 I3D] [--frames 8] [--i3d-frames 16]
        [--size 224] [--per-group N] [--limit N] [--corruptions ...]
        [--severities 1 2 3 4 5] [--augment low_light=0.5 ...] [--augment-draws 1]
        [--folds 5] [--seeds 3] [--work DIR] [--out RESULT.json] [--cost [--repeat 3]]

Defaults: the 290 real clips of ucf101-real3-train and the backbone files in
../shared (see their READMEs). --per-group keeps the first N clips of each
source video and --limit the first N clips of each class (spread over its
source videos): on 2 shared CPU cores I3D took 2-9 s a clip (8 to 16 frames)
and Lite0 1-1.7 s, so every clip under all 55 conditions takes many hours there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from clip_backbones import I3D, PRETRAINING  # noqa: E402
from real import add_clip_arguments, check_inputs  # noqa: E402

from actionrec import robustness  # noqa: E402
from actionrec.corruptions import CORRUPTIONS, SEVERITIES  # noqa: E402
from actionrec.intervals import paired_difference  # noqa: E402
from actionrec.pipeline import Augment  # noqa: E402
from actionrec.tables import read_tsv, write_tsv  # noqa: E402

FAMILIES = list(dict.fromkeys(c.family for c in CORRUPTIONS.values()))
TRAININGS = ("none", "augment", "all corruptions", "matched")
LOW_LIGHT = ("low_light", 3)
DEFAULT_AUGMENT = ["low_light=0.5", "brightness=0.1", "contrast=0.2"]
BATCH = 8  # clips a backbone call


def choose_clips(clips: Path, per_group: int | None, limit: int | None) -> pd.DataFrame:
    """The folder's manifest, with each clip's ``position`` in it (the
    corruptions' draw), cut to the first ``per_group`` clips of each source
    video and the first ``limit`` of each class, taken across its videos."""
    from actionrec.manifest import build_manifest

    manifest = build_manifest(clips).reset_index(drop=True)
    manifest["position"] = manifest.index
    rank = manifest.sort_values("clip").groupby("group").cumcount()
    if per_group:
        manifest = manifest[rank.loc[manifest.index] < per_group]
    if limit:
        spread = manifest.assign(rank=rank).sort_values(["rank", "group"])
        manifest = spread.groupby("label").head(limit).drop(columns="rank").sort_index()
    return manifest.reset_index(drop=True)


def extract(clips: pd.DataFrame, work: Path, frames: int, size: int):
    """``clips`` decoded once at T = ``frames``, S = ``size`` into one shard
    (kept in ``work``, named by the clip set): the clips that decoded, with
    their position, and their frames, uint8 [n, T, S, S, 3]."""
    from actionrec.extract import extract_shard

    digest = hashlib.sha256("\n".join(clips["clip_id"]).encode()).hexdigest()[:8]
    shard = work / f"t{frames}-s{size}-{digest}" / "shard-0000.h5"
    if not shard.exists():
        start = time.perf_counter()
        extract_shard(clips, shard, shard.with_suffix(".tsv"), frames=frames, size=size)
        print(
            f"decoded {len(clips)} clips at T={frames}, S={size} in "
            f"{time.perf_counter() - start:.0f} s",
            flush=True,
        )
    report = read_tsv(shard.with_suffix(".tsv"))
    ok = report[report["status"] == "ok"]
    ok = ok.merge(clips[["clip_id", "position"]], on="clip_id", validate="one_to_one")
    with h5py.File(shard, "r") as f:
        stored = f["frames"][()]
    return ok.reset_index(drop=True), stored[ok["index"].to_numpy()], shard


def augment_setting(pairs: list[str]) -> Augment:
    """``key=value`` pairs (YAML values) as the workflow's train.augment."""
    return Augment.from_config({k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in pairs)})


def condition_list(args) -> list[tuple[str, int]]:
    """Clean, every corruption x severity, then every augmentation draw."""
    draws = [("augment", d) for d in range(args.augment_draws)]
    return robustness.conditions(args.corruptions, args.severities) + draws


class Frames:
    """The frames a backbone sees under one condition, a batch of clips at a time."""

    def __init__(self, stored: np.ndarray, positions: np.ndarray, args, augment: Augment):
        self.stored, self.positions, self.args, self.augment = stored, positions, args, augment

    def batch(self, condition: tuple[str, int], rows: range) -> np.ndarray:
        from actionrec.corruptions import corrupt

        name, level = condition
        clips = self.stored[rows.start : rows.stop]
        if name == "clean":
            return clips
        places = self.positions[rows.start : rows.stop]
        if name == "augment":
            return np.stack(
                [self._augmented(c, p, level) for c, p in zip(clips, places, strict=True)]
            )
        seed = self.args.seed
        return np.stack(
            [corrupt(c, name, level, seed, int(p)) for c, p in zip(clips, places, strict=True)]
        )

    def _augmented(self, clip: np.ndarray, position: int, draw: int) -> np.ndarray:
        import tensorflow as tf

        from actionrec.pipeline import augment_clip

        key = tf.constant([self.args.seed * 1_000_003 + draw, position], tf.int64)
        return augment_clip(tf.constant(clip), self.augment, clip.shape[1], key).numpy()


def backbone_net(name: str, path: Path, frames: int, size: int):
    """The frozen backbone, checked to be the kind its option names."""
    from actionrec.model import build_backbone, is_clip_backbone

    net = build_backbone(str(path), size, None, frames=frames)
    if is_clip_backbone(net) != (name == "I3D"):
        raise SystemExit(f"{path} is not a {'clip' if name == 'I3D' else 'frame'} backbone")
    return net


def clip_means(net, clips: np.ndarray) -> np.ndarray:
    """The clip-mean of a backbone's features: float32 [n, F]."""
    from actionrec.features import clip_features, frame_features
    from actionrec.model import is_clip_backbone

    if is_clip_backbone(net):
        features = clip_features(net, clips, 1)
    else:
        features = frame_features(net, clips)
    return features.astype(np.float32).mean(axis=1)


def cached_features(name, path, frames, args, work, augment) -> tuple[pd.DataFrame, dict]:
    """One backbone's clip-mean features of every clip under every condition,
    computed once and kept in ``work``, in a folder named by what made them:
    the backbone file, the code that corrupts, augments and computes
    features, the seed and the augmentation (another of these, another
    folder)."""
    import inspect

    from actionrec import corruptions, features, pipeline
    from actionrec.provenance import file_sha256

    per_group = args.i3d_per_group if name == "I3D" and args.i3d_per_group else args.per_group
    clips, stored, shard = extract(
        choose_clips(args.clips, per_group, args.limit), work, frames, args.size
    )
    code = [corruptions, features.frame_features, features.clip_features, pipeline.augment_clip]
    made_by = {
        "backbone_sha256": file_sha256(path),
        "code": hashlib.sha256("".join(map(inspect.getsource, [*code, Frames])).encode()),
        "seed": args.seed,
        "augment": vars(augment),
    }
    made_by["code"] = made_by["code"].hexdigest()[:16]
    digest = hashlib.sha256(json.dumps(made_by, sort_keys=True).encode()).hexdigest()[:10]
    folder = shard.parent / f"features-{name}-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "made_by.json").write_text(json.dumps(made_by, indent=1))
    todo = [c for c in condition_list(args) if not (folder / f"{c[0]}-{c[1]}.npy").exists()]
    if todo:
        net = backbone_net(name, path, frames, args.size)
        source = Frames(stored, clips["position"].to_numpy(), args, augment)
        with ThreadPoolExecutor(1) as pool:  # the next batch's frames while the backbone runs
            for k, condition in enumerate(todo, 1):
                start = time.perf_counter()
                batches = [
                    range(b, min(b + BATCH, len(clips))) for b in range(0, len(clips), BATCH)
                ]
                ahead = pool.submit(source.batch, condition, batches[0])
                out = []
                for i in range(len(batches)):
                    x = ahead.result()
                    if i + 1 < len(batches):
                        ahead = pool.submit(source.batch, condition, batches[i + 1])
                    out.append(clip_means(net, x))
                np.save(folder / f"{condition[0]}-{condition[1]}.npy", np.concatenate(out))
                seconds = time.perf_counter() - start
                print(
                    f"  {name} [{k}/{len(todo)}] {condition[0]} {condition[1]}: {len(clips)} "
                    f"clips in {seconds:.0f} s ({seconds / len(clips):.2f} s a clip)",
                    flush=True,
                )
    features = {c: np.load(folder / f"{c[0]}-{c[1]}.npy") for c in condition_list(args)}
    return clips, features


def fit_head(x: np.ndarray, y: np.ndarray):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=5000).fit(x, y)


def probabilities(head, x: np.ndarray, classes: int) -> np.ndarray:
    """Probabilities [n, classes], a class missing from train at 0."""
    out = np.zeros((len(x), classes))
    out[:, head.classes_] = head.predict_proba(x)
    return out


def extra_draws(corrupted: list, train: np.ndarray, rng) -> list[np.ndarray]:
    """Rows of ``train`` clips' features to add to the clean ones: one draw
    per clip from ``corrupted`` (the conditions' feature arrays)."""
    if not corrupted:
        return []
    pick = rng.integers(len(corrupted), size=len(train))
    return [np.stack([corrupted[p][i] for p, i in zip(pick, train, strict=True)])]


def score(head, features, clips, test, corruptions, args, classes, names) -> tuple[dict, dict]:
    """The robustness stage's table and summary of one head on the test
    clips (its conditions in :func:`robustness.conditions` order), and each
    condition's per-clip correctness."""
    clean, *corrupted = robustness.conditions(corruptions, args.severities)
    order = iter(corrupted)
    part = clips.iloc[test].reset_index(drop=True)

    def predict(transform):
        condition = clean if transform is None else next(order)
        return part, probabilities(head, features[condition][test], classes)

    true, table, predicted = robustness.classify_under(predict, corruptions, args.severities, 0)
    summary = robustness.summarise(table, true, predicted, names)
    summary["table"] = table
    return summary, {k: v == true for k, v in predicted.items()}


def fold_results(clips, features, args, names):
    """Every fold's summary per training, and per training each clip's
    correctness under each condition, averaged over seeds."""
    from sklearn.model_selection import StratifiedGroupKFold

    y, classes = clips["label"].to_numpy(), len(names)
    corrupt = [c for c in features if c[0] not in ("clean", "augment")]
    augmented = [features[c] for c in features if c[0] == "augment"]
    rows, correct = [], {}
    for seed in range(args.seeds):
        folds = StratifiedGroupKFold(args.folds, shuffle=True, random_state=seed)
        for fold, (train, test) in enumerate(folds.split(y, y, clips["group"])):
            rng = np.random.default_rng([seed, fold])
            clean = features[("clean", 0)][train]
            sets = {
                "none": ([], args.corruptions),
                "augment": ([a[train] for a in augmented], args.corruptions),
                "all corruptions": (
                    extra_draws([features[c] for c in corrupt], train, rng),
                    args.corruptions,
                ),
            }
            for family in FAMILIES:
                mine = [c for c in corrupt if CORRUPTIONS[c[0]].family == family]
                if mine:
                    draws = extra_draws([features[c] for c in mine], train, rng)
                    sets[f"matched {family}"] = (
                        draws,
                        sorted({c[0] for c in mine}, key=list(CORRUPTIONS).index),
                    )
            for training, (extra, corruptions) in sets.items():
                x = np.concatenate([clean, *extra])
                head = fit_head(x, np.tile(y[train], 1 + len(extra)))
                summary, hits = score(
                    head, features, clips, test, corruptions, args, classes, names
                )
                rows.append({"seed": seed, "fold": fold, "training": training, **flat(summary)})
                for condition, hit in hits.items():
                    key = (training, condition)
                    correct.setdefault(key, np.zeros(len(clips)))[test] += hit / args.seeds
    return pd.DataFrame(rows), correct


def flat(summary: dict) -> dict:
    table = summary["table"].set_index(["corruption", "severity"])["accuracy"]
    return {
        "clean": summary["clean_accuracy"],
        "mPC": summary["mPC"],
        "rPC": summary["rPC"],
        **{f"rPC {f}": v["rPC"] for f, v in summary["families"].items()},
        "accuracies": table.to_dict(),
    }


def matched_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """One 'matched' row per fold from its per-family heads: each family's
    rPC from its own head, clean accuracy their mean, mPC the mean accuracy
    of every corrupted condition under its family's head."""
    out = []
    for (seed, fold), part in rows[rows["training"].str.startswith("matched ")].groupby(
        ["seed", "fold"]
    ):
        clean = part["clean"].mean()
        corrupted = [a for d in part["accuracies"] for k, a in d.items() if k[0] != "clean"]
        row = {"seed": seed, "fold": fold, "training": "matched", "clean": clean}
        row["mPC"] = float(np.mean(corrupted))
        row["rPC"] = row["mPC"] / clean if clean else float("nan")
        for _, r in part.iterrows():
            family = r["training"].removeprefix("matched ")
            row[f"rPC {family}"] = r[f"rPC {family}"]
            row["accuracies"] = {**row.get("accuracies", {}), **r["accuracies"]}
        out.append(row)
    return pd.DataFrame(out)


def summary_table(name: str, rows: pd.DataFrame, clips: int) -> pd.DataFrame:
    """Mean over folds (and seeds) per training, with the spread (std) of
    clean accuracy, rPC and low light at severity 3."""
    rows = pd.concat([rows[~rows["training"].str.startswith("matched ")], matched_rows(rows)])
    rows["low light 3"] = [a.get(LOW_LIGHT, np.nan) for a in rows["accuracies"]]
    table = []
    for training in TRAININGS:
        part = rows[rows["training"] == training]
        if part.empty:
            continue
        mean, std = part.mean(numeric_only=True), part.std(numeric_only=True, ddof=1)

        def spread(key, mean=mean, std=std):
            return (
                f"{mean[key]:.3f} ({std[key]:.3f})" if np.isfinite(std[key]) else f"{mean[key]:.3f}"
            )

        row = {"backbone": name, "training": training, "clips": clips, "clean": spread("clean")}
        row.update({"mPC": round(mean["mPC"], 3), "rPC": spread("rPC")})
        row.update({f: round(mean[f"rPC {f}"], 3) for f in FAMILIES if f"rPC {f}" in mean})
        row["low light s3"] = spread("low light 3") if np.isfinite(mean["low light 3"]) else "-"
        table.append(row)
    return pd.DataFrame(table)


def differences(name: str, correct: dict, clips: pd.DataFrame, args) -> pd.DataFrame:
    """Each training against ``none`` on the same clips (each clip's
    correctness averaged over seeds): clean, low light at severity 3 and the
    mean under corruption, with a 95% bootstrap interval over source videos."""
    groups = clips["group"].to_numpy()
    conditions = robustness.conditions(args.corruptions, args.severities)

    def hits(training: str, measure: str) -> np.ndarray:
        if training == "matched":
            families = [t for t, _ in correct if t.startswith("matched ")]
            heads = {t.removeprefix("matched "): t for t in dict.fromkeys(families)}
            if measure == "clean":
                return np.mean([correct[(t, ("clean", 0))] for t in heads.values()], axis=0)
            pick = [(heads[CORRUPTIONS[c[0]].family], c) for c in conditions[1:]]
        else:
            pick = [(training, c) for c in conditions[1:]]
            if measure == "clean":
                return correct[(training, ("clean", 0))]
        if measure == "low light s3":
            pick = [p for p in pick if p[1] == LOW_LIGHT]
        return np.mean([correct[p] for p in pick], axis=0) if pick else None

    out = []
    for training in TRAININGS[1:]:
        for measure in ("clean", "low light s3", "under corruption"):
            a, b = hits(training, measure), hits("none", measure)
            if a is None or b is None:
                continue
            d = paired_difference(a, b, groups)
            out.append(
                {
                    "backbone": name,
                    "training against none": training,
                    "accuracy": measure,
                    "difference": d["difference"],
                    "95% interval": f"[{d['difference_ci'][0]:+.3f}, {d['difference_ci'][1]:+.3f}]",
                    "verdict": {"A better": "better", "B better": "worse"}.get(
                        d["verdict"], "not distinguishable"
                    ),
                }
            )
    return pd.DataFrame(out)


def measure_cost(args, work: Path, augment: Augment, names: list[str]) -> pd.DataFrame:
    """The robustness stage's seconds on the test clips of one group split,
    clean and under every corruption at ``--severities``' first, with the
    workflow's Lite0 clip model whose head is the logistic regression on the
    train clips' clean features."""
    import keras

    from actionrec.evaluate import predict_split
    from actionrec.model import build_model
    from actionrec.pipeline import Data
    from actionrec.split import make_split

    severity = args.severities[0]
    saved = args.corruptions, args.severities, args.augment_draws
    args.corruptions, args.severities, args.augment_draws = [], [severity], 0
    clips, features = cached_features("Lite0", args.backbone, args.frames, args, work, augment)
    args.corruptions, args.severities, args.augment_draws = saved
    _, _, shard = extract(
        choose_clips(args.clips, args.per_group, args.limit), work, args.frames, args.size
    )
    split, _ = make_split(read_tsv(shard.with_suffix(".tsv")), "group", seed=0)
    split_tsv = work / "cost-split.tsv"
    write_tsv(split, split_tsv)
    train = clips["clip_id"].isin(split.loc[split["split"] == "train", "clip_id"]).to_numpy()
    head = fit_head(features[("clean", 0)][train], clips["label"].to_numpy()[train])
    weights = np.zeros((features[("clean", 0)].shape[1], len(names)), np.float32)
    bias = np.full(len(names), -30.0, np.float32)  # a class absent from train: never chosen
    coef = head.coef_ if len(head.classes_) > 2 else np.vstack([-head.coef_, head.coef_]) / 2
    intercept = head.intercept_ if len(head.classes_) > 2 else np.r_[-1, 1] * head.intercept_ / 2
    weights[:, head.classes_], bias[head.classes_] = coef.T, intercept
    keras.utils.set_random_seed(0)
    model = build_model(len(names), args.frames, args.size, str(args.backbone), weights="none")
    model.get_layer("head").get_layer("frame_logits").set_weights([weights, bias])
    data = Data.of(split_tsv, [shard], len(names))

    def predict(transform):
        return predict_split(model, data, "test", BATCH, transform=transform)

    start = time.perf_counter()
    predict(None)  # traced once here, so that no pass pays for it
    warm = time.perf_counter() - start
    # Rounds of every pass, the median taken: on shared cores the load drifts.
    rounds = [
        robustness.classify_under(predict, args.corruptions, [severity], args.seed)[1]
        for _ in range(args.repeat)
    ]
    table = rounds[0].assign(seconds=np.median([r["seconds"] for r in rounds], axis=0))
    table["x clean"] = (table["seconds"] / table.loc[0, "seconds"]).round(2)
    table.loc[0, "x clean"] = np.nan
    print(
        f"{table.loc[0, 'test_clips']} test clips of a group split (seed 0), T={args.frames}, "
        f"S={args.size}, Lite0 clip model, batch {BATCH}: first pass (with tracing) {warm:.1f} s; "
        f"seconds are the median of {args.repeat} rounds, clean in each: "
        + ", ".join(f"{r.loc[0, 'seconds']:.1f}" for r in rounds),
        flush=True,
    )
    return table


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backbones", nargs="+", choices=["Lite0", "I3D"], default=["Lite0", "I3D"]
    )
    add_clip_arguments(parser)
    parser.add_argument("--i3d", type=Path, default=I3D, help=f"default {I3D}")
    parser.add_argument("--i3d-frames", type=int, default=16, help="I3D's T (default 16)")
    parser.add_argument("--per-group", type=int, help="the first N clips of each source video")
    parser.add_argument("--limit", type=int, help="the first N clips of each class")
    parser.add_argument("--i3d-per-group", type=int, help="I3D's --per-group (default: the same)")
    parser.add_argument(
        "--corruptions", nargs="+", default=list(CORRUPTIONS), choices=list(CORRUPTIONS)
    )
    parser.add_argument(
        "--severities", nargs="+", type=int, default=list(SEVERITIES), choices=SEVERITIES
    )
    parser.add_argument(
        "--augment",
        nargs="+",
        default=DEFAULT_AUGMENT,
        help="train.augment as key=value (default: %(default)s)",
    )
    parser.add_argument("--augment-draws", type=int, default=1, help="augmented copies a clip")
    parser.add_argument("--folds", type=int, default=5, help="folds by source video")
    parser.add_argument("--seeds", type=int, default=3, help="fold assignments (seeds 0..N-1)")
    parser.add_argument("--seed", type=int, default=0, help="the corruptions' and augmentation's")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, help="keep extractions and features here")
    parser.add_argument("--out", type=Path, help="also write the results here (JSON)")
    parser.add_argument("--cost", action="store_true", help="measure the stage's cost instead")
    parser.add_argument("--repeat", type=int, default=1, help="--cost: rounds of every pass")
    return parser.parse_args()


def main() -> None:
    started = time.perf_counter()
    args = arguments()
    logging.basicConfig(level=logging.WARNING)
    check_inputs(args)
    if "I3D" in args.backbones and not args.cost and not args.i3d.exists():
        raise SystemExit(f"--i3d {args.i3d} does not exist")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from actionrec.manifest import class_names

    work = args.work or Path(tempfile.mkdtemp(prefix="robustness-"))
    augment = augment_setting(args.augment)
    names = class_names(choose_clips(args.clips, args.per_group, args.limit))
    if args.cost:
        table = measure_cost(args, work, augment, names)
        shown = table[["corruption", "family", "severity", "accuracy", "seconds", "x clean"]]
        print(shown.to_markdown(index=False))
        corrupted = table["x clean"].dropna()
        print(
            f"corrupted pass / clean pass: mean {corrupted.mean():.2f}, "
            f"most {corrupted.max():.2f} ({table.loc[corrupted.idxmax(), 'corruption']})"
        )
        if args.out:
            args.out.write_text(table.to_json(orient="records", indent=1))
        print(f"total {time.perf_counter() - started:.0f} s (work folder {work})")
        return

    backbones = {"Lite0": (args.backbone, args.frames), "I3D": (args.i3d, args.i3d_frames)}
    tables, diffs, results = [], [], {}
    for name in args.backbones:
        path, frames = backbones[name]
        clips, features = cached_features(name, path, frames, args, work, augment)
        print(
            f"{name}: {len(clips)} clips of {clips['group'].nunique()} source videos, "
            f"T={frames}, S={args.size}; heads on {args.folds} folds x {args.seeds} seed(s)",
            flush=True,
        )
        rows, correct = fold_results(clips, features, args, names)
        tables.append(summary_table(name, rows, len(clips)))
        diffs.append(differences(name, correct, clips, args))
        results[name] = json.loads(rows.drop(columns="accuracies").to_json(orient="records"))
    table, diff = pd.concat(tables, ignore_index=True), pd.concat(diffs, ignore_index=True)
    severities = "/".join(map(str, args.severities))
    print(
        f"\nClean accuracy, mPC and rPC (overall and per family) and low light at severity 3: "
        f"mean over {args.folds} folds by source video x {args.seeds} seed(s) (std); "
        f"{len(args.corruptions)} corruptions at severities {severities}; augment: "
        + ", ".join(args.augment)
    )
    print(table.to_markdown(index=False))
    print("\nAgainst no augmentation, on the same clips (95% bootstrap over source videos)")
    print(diff.to_markdown(index=False))
    print("\n" + "; ".join(f"{n}: {PRETRAINING[n]}" for n in args.backbones))
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "table": json.loads(table.to_json(orient="records")),
                    "differences": json.loads(diff.to_json(orient="records")),
                    "folds": results,
                    "settings": {k: str(v) for k, v in vars(args).items()},
                },
                indent=1,
            )
        )
    print(f"total {time.perf_counter() - started:.0f} s (work folder {work})")


if __name__ == "__main__":
    main()
