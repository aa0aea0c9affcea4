"""Groups discovered from frozen features, on clips whose names hide them.

Copies the clips into a temporary folder under new names that carry no group
(``<Class>/<Class>_NNNN.avi``, in a shuffled order), extracts and caches their
frozen features once, then:

  1. discovers the groups (split.groups: discover) at several thresholds and
     scores them against the true groups: adjusted Rand index, the groups
     found, and the share of true same-group clip pairs that stay together
     (what keeps a source video on one side of a split);
  2. over seeded splits, trains the same model under the true-group,
     discovered-group and random splits and gives its test accuracy, and the
     audit's share of test clips with a near-duplicate in train.

The model is a logistic regression on the time-averaged frozen features
(scikit-learn, the probe the workflow's frozen stage matches), fitted on
train and scored on test.

    python bench/groups.py [--clips UCF-101] [--backbone FILE.keras] [--frames 8]
        [--size 224] [--seeds 10] [--thresholds 0.1 0.15 0.2] [--work DIR]
        [--out TABLE.md]

Defaults: the real UCF101 clips of three actions and the ImageNet-pretrained
EfficientNet-Lite0 in ../shared (see their READMEs).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from real import add_clip_arguments, check_inputs, setup_line  # noqa: E402

from actionrec.groups import (  # noqa: E402
    DEFAULT_SIMILARITY,
    DEFAULT_THRESHOLD,
    LEAK_CURVE,
    audit,
    choose_groups,
    clip_vectors,
)
from actionrec.manifest import build_manifest  # noqa: E402
from actionrec.split import make_split  # noqa: E402
from actionrec.tables import read_tsv  # noqa: E402


def hide_groups(clips: Path, out: Path, seed: int = 0) -> dict[str, str]:
    """Copies of ``clips``' videos under names without groups; returns the
    true group (``<Class>_gNN``) of each new clip name."""
    truth = {}
    manifest = build_manifest(clips).sample(frac=1.0, random_state=seed)
    for row in manifest.to_dict("records"):
        folder = out / row["class"]
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{row['class']}_{len(truth):04d}"
        shutil.copyfile(row["path"], folder / f"{name}{Path(row['path']).suffix}")
        truth[name] = row["group"]
    return truth


def prepare(args, work: Path) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """The renamed copy, its extraction and feature cache (kept in ``work``)."""
    from actionrec.extract import extract_shard
    from actionrec.features import cache_features

    seconds = {}
    videos, shard = work / "videos", work / "shards/shard-0000.h5"
    features = work / "features/shard-0000.h5"
    truth_tsv = work / "truth.tsv"
    if not truth_tsv.exists():
        start = time.perf_counter()
        truth = hide_groups(args.clips, videos)
        pd.Series(truth, name="true_group").rename_axis("clip_id").to_csv(truth_tsv, sep="\t")
        seconds["copy"] = time.perf_counter() - start
    truth = pd.read_csv(truth_tsv, sep="\t", index_col="clip_id")["true_group"]
    if not shard.exists():
        start = time.perf_counter()
        extract_shard(
            build_manifest(videos),
            shard,
            shard.with_suffix(".tsv"),
            frames=args.frames,
            size=args.size,
        )
        seconds["extract"] = time.perf_counter() - start
    if not features.exists():
        start = time.perf_counter()
        cache_features(shard, features, str(args.backbone), "none", threads=args.threads)
        seconds["features"] = time.perf_counter() - start
    report = read_tsv(shard.with_suffix(".tsv"))
    report = report[report["status"] == "ok"].reset_index(drop=True)
    report["true_group"] = truth.loc[report["clip_id"]].to_numpy()
    vectors = clip_vectors([features], report)
    return report, vectors, seconds


def pair_recall(true: np.ndarray, found: np.ndarray) -> float:
    """Share of clip pairs of one true group that share a discovered group."""
    same_true = true[:, None] == true[None, :]
    same_found = found[:, None] == found[None, :]
    pairs = np.triu(same_true, k=1)
    return float(same_found[pairs].mean())


def discovery_table(report, vectors, thresholds, seeds) -> pd.DataFrame:
    from sklearn.metrics import adjusted_rand_score

    rows = []
    for threshold in thresholds:
        grouped, _ = choose_groups(report, "discover", vectors, threshold)
        found = grouped["group"].to_numpy()
        scores = [
            split_scores(report, vectors, grouped, seed, kinds=("discovered groups",))
            for seed in range(seeds)
        ]
        rows.append(
            {
                "threshold": threshold,
                "test accuracy, discovered-group split (mean)": round(
                    float(np.mean([r["discovered groups"] for r in scores])), 4
                ),
                "groups found": grouped["group"].nunique(),
                "true groups": report["true_group"].nunique(),
                "adjusted Rand index": round(adjusted_rand_score(report["true_group"], found), 3),
                "true same-group pairs kept together": round(
                    pair_recall(report["true_group"].to_numpy(), found), 3
                ),
            }
        )
    return pd.DataFrame(rows)


KINDS = ("true groups", "discovered groups", "random")


def split_scores(report, vectors, discovered, seed, kinds=KINDS) -> dict:
    """Test accuracy of the logistic regression, and the audit's test
    near-duplicate share, under each kind of split (``discovered``: the clips
    with their discovered groups)."""
    from sklearn.linear_model import LogisticRegression

    tables = {
        "true groups": ("group", report.assign(group=report["true_group"])),
        "discovered groups": ("group", discovered),
        "random": ("random", report),
    }
    row = {"seed": seed}
    for kind in kinds:
        method, table = tables[kind]
        split, _ = make_split(table, method, seed=seed)
        split = split.set_index("clip_id").loc[report["clip_id"]].reset_index()
        train = (split["split"] == "train").to_numpy()
        test = (split["split"] == "test").to_numpy()
        model = LogisticRegression(max_iter=5000).fit(vectors[train], split["label"][train])
        right = model.predict(vectors[test]) == split["label"][test].to_numpy()
        row[kind] = round(float(right.mean()), 4)
        summary, _ = audit(split, vectors, similarity=DEFAULT_SIMILARITY)
        row[f"near-dup. {kind}"] = summary["test"]["near_duplicates"]
        truth = split.assign(group=report["true_group"])
        row[f"true leak {kind}"] = round(
            float(truth.loc[test, "group"].isin(set(truth.loc[train, "group"])).mean()),
            4,
        )
    return row


def nearest_in_train(split: pd.DataFrame, vectors: np.ndarray, true_group: np.ndarray):
    """Per val and test clip of ``split`` (rows aligned with ``vectors``): the
    similarity of its nearest train clip of its class, and whether its true
    group is in train."""
    labels, train = split["label"].to_numpy(), np.flatnonzero(split["split"] == "train")
    held = np.flatnonzero(split["split"] != "train")
    sims = vectors[held] @ vectors[train].T
    sims[labels[held][:, None] != labels[train][None, :]] = -np.inf
    return held, sims.max(axis=1), np.isin(true_group[held], true_group[train])


def leak_calibration(report, vectors, discovered, seeds) -> tuple[tuple, pd.DataFrame]:
    """The logistic curve of sibling_in_train fitted over ``seeds`` discovered-
    group splits, and per split the true share of held-out clips whose source
    video is in train beside the estimate of the shipped curve and of curves
    fitted without the clip's class (how far the estimate carries to a class
    it has not seen)."""
    from sklearn.linear_model import LogisticRegression

    from actionrec.groups import sibling_in_train

    parts = []
    for seed in range(seeds):
        split, _ = make_split(discovered, "group", seed=seed)
        split = split.set_index("clip_id").loc[report["clip_id"]].reset_index()
        held, top, leaked = nearest_in_train(split, vectors, report["true_group"].to_numpy())
        cls = report["class"].to_numpy()[held]
        parts.append(pd.DataFrame({"seed": seed, "cls": cls, "s": top, "leaked": leaked}))

    def fit(rows: pd.DataFrame):
        # a curve needs leaked and clean clips both (tiny smoke runs may lack one)
        if rows["leaked"].nunique() < 2:
            return None
        return LogisticRegression(C=1e6).fit(rows[["s"]], rows["leaked"])

    pooled = pd.concat(parts, ignore_index=True)
    whole = fit(pooled)
    curve = whole and (round(float(whole.intercept_[0]), 2), round(float(whole.coef_[0][0]), 2))
    pooled["shipped"] = sibling_in_train(pooled["s"].to_numpy())
    pooled["other classes"] = np.nan
    for cls in pooled["cls"].unique():
        mine = pooled["cls"] == cls
        other = fit(pooled[~mine])
        if other is not None:
            pooled.loc[mine, "other classes"] = other.predict_proba(pooled.loc[mine, ["s"]])[:, 1]
    table = pooled.groupby("seed")[["leaked", "shipped", "other classes"]].mean()
    table = table.rename(columns={"leaked": "true share", "shipped": "estimate (shipped curve)"})
    table["estimate (curve fitted without the class)"] = table.pop("other classes")
    return curve, table.round(3).reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_clip_arguments(parser)
    parser.add_argument("--seeds", type=int, default=10, help="splits (seeds 0..N-1)")
    parser.add_argument(
        "--thresholds", type=float, nargs="+", default=[0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="the one the splits use (default: split.discover.threshold's)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, help="keep the copy, extraction and features here")
    parser.add_argument("--out", type=Path, help="also write the tables here (Markdown)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    check_inputs(args)
    work = args.work or Path(tempfile.mkdtemp(prefix="groups-"))
    report, vectors, seconds = prepare(args, work)
    print(
        f"{len(report)} clips of {report['class'].nunique()} classes in "
        f"{report['true_group'].nunique()} true groups, names hidden; T={args.frames}, "
        + setup_line(args, seconds),
        flush=True,
    )
    start = time.perf_counter()
    found = discovery_table(report, vectors, args.thresholds, args.seeds)
    discovery_seconds = time.perf_counter() - start
    discovered, _ = choose_groups(report, "discover", vectors, args.threshold)
    rows = [split_scores(report, vectors, discovered, seed) for seed in range(args.seeds)]
    table = pd.DataFrame(rows)
    table = pd.concat(
        [table, table.mean(numeric_only=True).to_frame().T.assign(seed="mean")],
        ignore_index=True,
    ).round(4)
    curve, calibration = leak_calibration(report, vectors, discovered, args.seeds)
    errors = calibration.drop(columns=["seed", "true share"]).sub(calibration["true share"], axis=0)
    text = "\n\n".join(
        [
            f"Discovery against the true groups ({discovery_seconds:.1f} s for "
            f"{len(args.thresholds)} thresholds and their {args.seeds} splits each)",
            found.to_markdown(index=False),
            f"Test accuracy of a logistic regression on the frozen features, per split "
            f"(discovered at threshold {args.threshold}); near-dup.: share of test clips with "
            f"a train clip of their class at cosine >= {DEFAULT_SIMILARITY}; true leak: share "
            "of test clips whose true group is also in train",
            table.to_markdown(index=False),
            f"The estimate of true leakage with discovered groups: held-out (val and test) "
            f"clips whose true group is in train, against the mean of sibling_in_train over "
            f"them. Logistic curve fitted here (intercept, slope): {curve}; shipped: "
            f"{LEAK_CURVE}. Mean absolute error: "
            + ", ".join(f"{k} {v:.3f}" for k, v in errors.abs().mean().items()),
            calibration.to_markdown(index=False),
        ]
    )
    print("\n" + text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
