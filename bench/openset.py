"""Open-set rejection and calibration on real clips: how well each rejection
score tells actions the model was trained on from others, and what
temperature scaling does to the calibration.

Known actions: the clips of --clips (by default the three actions of
ucf101-real3-train). Unknown actions: the clips of --unknown (by default
ucf101-sample) whose class is not a known one (18 other UCF101 actions). For
each seeded group split of the known clips (60/20/20, no source video on two
sides), on the frozen features of each backbone (the ImageNet
EfficientNet-Lite0 on 8 frames, and the Kinetics-400 I3D on one clip of 16
frames; both at 224 x 224), averaged over the clip:

- a head: scikit-learn's logistic regression on the train split's clip-mean
  features (a linear softmax classifier, like the workflow's average head on
  a frozen backbone, but fitted by L-BFGS rather than Adam: a stand-in that
  needs no training loop);
- a temperature fitted on the val split by NLL; ECE (15 bins) and NLL on
  test before and after;
- the rejection scores of actionrec.calibration: ``probability`` (calibrated
  top probability) and ``distance`` (minus the cosine distance to the nearest
  train class mean of the features); AUROC and FPR at 95% TPR of the test
  split's known clips against every unknown clip, and, at the threshold that
  keeps 95% of the val clips, the share of known test clips kept, of unknown
  clips rejected and the open-set accuracy.

Printed: a markdown table per split and the mean and standard deviation.
I3D is Kinetics-400 video-pretrained: Kinetics holds many UCF101 actions (the
unknown ones too), so its numbers are context, not like for like.

    python bench/openset.py [--clips UCF-101] [--unknown UCF-101] [--backbone LITE0.keras]
        [--i3d I3D.keras] [--frames 8] [--i3d-frames 16] [--size 224] [--seeds 5]
        [--recall 0.95] [--limit N] [--work DIR] [--out table.md]

--work keeps the extractions and feature caches, so that a rerun skips them;
--limit N takes N clips a class (one from each of its first groups), for a
seconds-long smoke run.
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
from real import LITE0, REAL3, SAMPLE  # noqa: E402

from actionrec import calibration as cal  # noqa: E402
from actionrec.tables import write_tsv  # noqa: E402

I3D = LITE0.parents[1] / "i3d-kinetics400/backbone.keras"
SHARD = "shard-0000.h5"


def manifest(root: Path, limit: int | None, keep=None, drop=()) -> pd.DataFrame:
    """The clips under ``root`` (of the classes in ``keep``, not in ``drop``);
    with ``limit``, that many a class, one from each of its first groups."""
    from actionrec.manifest import build_manifest

    table = build_manifest(root)
    if keep is not None:
        table = table[table["class"].isin(keep)]
    table = table[~table["class"].isin(drop)].reset_index(drop=True)
    if limit:
        table = table.groupby("class", sort=True).apply(
            lambda g: g.drop_duplicates("group").head(limit), include_groups=False
        )
        table = table.reset_index(level=0).reset_index(drop=True)
        table["label"] = table["class"].map(
            {c: i for i, c in enumerate(sorted(set(table["class"])))}
        )
    return table


def features(
    table: pd.DataFrame, name: str, backbone: Path, frames: int, size: int, work: Path
) -> tuple[pd.DataFrame, np.ndarray]:
    """The extract report of ``table``'s clips and each ok clip's clip-mean
    frozen features [n, F] (extraction and features kept in ``work``)."""
    from actionrec.extract import extract_shard
    from actionrec.features import cache_features
    from actionrec.tables import read_tsv

    folder = work / f"{name}-t{frames}-s{size}"
    shard, report = folder / SHARD, folder / "report.tsv"
    cached = folder / f"features-{backbone.parent.name}" / SHARD
    if not report.exists():
        extract_shard(table, shard, report, frames=frames, size=size)
    if not cached.exists():
        cache_features(shard, cached, str(backbone), "none", threads=2)
    report = read_tsv(report)
    with h5py.File(cached) as f:
        x = np.asarray(f["features"][()], np.float32)  # [n, T', F]
    ok = report["status"] == "ok"
    return report[ok].reset_index(drop=True), x[report.loc[ok, "index"].to_numpy()].mean(axis=1)


def one_split(x, y, split: pd.Series, unknown: np.ndarray, recall: float) -> dict:
    """Every figure of one split: accuracy, calibration, and per score AUROC,
    FPR at 95% TPR and the verdicts at the threshold chosen on val."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    part = {s: (split == s).to_numpy() for s in ("train", "val", "test")}
    scaler = StandardScaler().fit(x[part["train"]])
    head = LogisticRegression(max_iter=5000).fit(
        scaler.transform(x[part["train"]]), y[part["train"]]
    )
    k = len(head.classes_)

    def probs(rows):
        return head.predict_proba(scaler.transform(rows))

    val, test, other = probs(x[part["val"]]), probs(x[part["test"]]), probs(unknown)
    t = cal.fit_temperature(val, y[part["val"]])
    means = cal.class_means(x[part["train"]], y[part["train"]], k)
    yt = y[part["test"]]
    row = {
        "accuracy": float((test.argmax(1) == yt).mean()),
        "T": t,
        "ECE before": cal.ece(test, yt),
        "ECE after": cal.ece(cal.scale(test, t), yt),
        "NLL before": cal.nll(test, yt),
        "NLL after": cal.nll(cal.scale(test, t), yt),
    }
    scored = {
        kind: {
            name: cal.rejection_score(kind, cal.scale(p, t), rows, means)
            for name, (p, rows) in {
                "val": (val, x[part["val"]]),
                "test": (test, x[part["test"]]),
                "unknown": (other, unknown),
            }.items()
        }
        for kind in cal.SCORES
    }
    right = cal.scale(test, t).argmax(1) == yt
    for kind, s in scored.items():
        threshold = cal.threshold_for_recall(s["val"], recall)
        row[f"{kind} AUROC"] = cal.auroc(s["test"], s["unknown"])
        row[f"{kind} FPR95"] = cal.fpr_at_tpr(s["test"], s["unknown"])
        row[f"{kind} known kept"] = float(np.mean(s["test"] >= threshold))
        row[f"{kind} unknown rejected"] = float(np.mean(s["unknown"] < threshold))
        row[f"{kind} open-set acc"] = cal.openset_accuracy(
            right, s["test"] >= threshold, s["unknown"] < threshold
        )
    return row


def main() -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=Path, default=REAL3, help=f"known (default {REAL3})")
    parser.add_argument("--unknown", type=Path, default=SAMPLE, help=f"default {SAMPLE}")
    parser.add_argument("--backbone", type=Path, default=LITE0, help=f"default {LITE0}")
    parser.add_argument("--i3d", type=Path, default=I3D, help=f"default {I3D}; none: skip it")
    parser.add_argument("--frames", type=int, default=8, help="the frame backbone's T")
    parser.add_argument("--i3d-frames", type=int, default=16, help="the clip backbone's T")
    parser.add_argument("--size", type=int, default=224, help="S, pixels a side")
    parser.add_argument("--seeds", type=int, default=5, help="group splits (seeds 0..N-1)")
    parser.add_argument("--recall", type=float, default=0.95, help="known val clips kept")
    parser.add_argument("--limit", type=int, help="clips a class, for a smoke run")
    parser.add_argument("--work", type=Path, help="keep extractions and features here")
    parser.add_argument("--out", type=Path, help="also write the tables here (markdown)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for what, path in (
        ("clips", args.clips),
        ("unknown", args.unknown),
        ("backbone", args.backbone),
    ):
        if not path.exists():
            raise SystemExit(f"--{what} {path} does not exist")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    from actionrec.split import make_split

    work = args.work or Path(tempfile.mkdtemp(prefix="openset-"))
    work.mkdir(parents=True, exist_ok=True)
    known = manifest(args.clips, args.limit)
    classes = sorted(set(known["class"]))
    other = manifest(args.unknown, args.limit, drop=classes)
    if other.empty:
        raise SystemExit(f"--unknown {args.unknown} holds no clips of classes other than {classes}")
    backbones = {"Lite0": (args.backbone, args.frames)}
    if str(args.i3d) != "none" and args.i3d.exists():
        backbones["I3D"] = (args.i3d, args.i3d_frames)
    print(
        f"known: {len(known)} clips of {classes} ({args.clips}); unknown: {len(other)} clips of "
        f"{other['class'].nunique()} other classes ({args.unknown}); S={args.size}",
        flush=True,
    )
    lines, rows = [], []
    for name, (path, frames) in backbones.items():
        tick = time.perf_counter()
        report, x = features(known, f"known-{name}", path, frames, args.size, work)
        _, unknown = features(other, f"unknown-{name}", path, frames, args.size, work)
        print(
            f"{name}: features of {len(x)} + {len(unknown)} clips, "
            f"{time.perf_counter() - tick:.0f} s",
            flush=True,
        )
        y = report["label"].to_numpy()
        for seed in range(args.seeds):
            split, _ = make_split(report, "group", seed=seed)
            split = split.set_index("clip_id").loc[report["clip_id"], "split"]
            rows.append(
                {"backbone": name, "seed": seed, **one_split(x, y, split, unknown, args.recall)}
            )
        write_tsv(pd.DataFrame(rows), work / "openset.tsv")
    table = pd.DataFrame(rows)
    numbers = [c for c in table if c not in ("backbone", "seed")]
    summary = table.groupby("backbone", sort=False)[numbers].agg(["mean", "std"])
    mean_std = pd.DataFrame(
        {c: [f"{m:.3f} ± {s:.3f}" for m, s in summary[c].to_numpy()] for c in numbers},
        index=summary.index,
    ).reset_index()
    splits = f"{args.seeds} group splits (seeds 0..{args.seeds - 1})"
    head = ["backbone", "accuracy", "T", "ECE before", "ECE after", "NLL before", "NLL after"]
    lines.append(
        f"Calibration of the logistic-regression head, test split, mean ± std over {splits}\n"
    )
    lines.append(mean_std[head].to_markdown(index=False))
    rejection = ["backbone"] + [
        f"{kind} {what}"
        for kind in cal.SCORES
        for what in ("AUROC", "FPR95", "known kept", "unknown rejected", "open-set acc")
    ]
    lines.append(
        f"\nRejection of unknown actions: known test clips against {len(other)} unknown clips; "
        f"threshold keeping {args.recall:.0%} of val clips; mean ± std over {splits}\n"
    )
    lines.append(mean_std[rejection].to_markdown(index=False))
    lines.append("\nPer split\n")
    lines.append(table.round(3).to_markdown(index=False))
    text = "\n".join(lines)
    print("\n" + text)
    if args.out:
        args.out.write_text(text + "\n")
    print(f"total {time.perf_counter() - started:.0f} s (work folder {work})")


if __name__ == "__main__":
    main()
