"""Figures of the evaluation, legible from 3 to 101 classes. PNG, every axis
labelled. Only matplotlib, pandas and numpy: no TensorFlow here."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

DPI = 120
# For text that holds names (classes, clips, models): drawn as written. A name
# such as "Jump$x$" would otherwise be set as mathematics, or fail to draw.
LITERAL = {"parse_math": False, "usetex": False}


def literal_legend(legend) -> None:
    """Draw a legend's labels (names) as written: see :data:`LITERAL`."""
    for text in legend.get_texts():
        text.set_parse_math(False)
        text.set_usetex(False)


def _label_size(n: int) -> float:
    """A tick label font size that keeps ``n`` labels apart."""
    return float(np.clip(300 / max(n, 1), 5, 10))


def _save(fig, path: str | os.PathLike, dpi: int = DPI) -> None:
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def per_class_f1(per_class: pd.DataFrame, path: str | os.PathLike, weakest: int = 5) -> None:
    """Horizontal bars of F1, best at the top; the weakest classes in another
    colour and named in the title."""
    table = per_class.sort_values(["f1", "class"], ascending=[True, True]).reset_index(drop=True)
    n = len(table)
    k = min(weakest, n)
    fig, ax = plt.subplots(figsize=(7, max(3.0, 0.17 * n + 1.2)))
    colours = ["#d62728" if i < k else "#1f77b4" for i in range(n)]
    ax.barh(np.arange(n), table["f1"], color=colours, height=0.8)
    ax.set_yticks(np.arange(n), table["class"], fontsize=_label_size(n), **LITERAL)
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xlim(0, 1.0)
    ax.set_xlabel("F1 on the test split")
    ax.set_ylabel("class (sorted by F1)")
    macro = table["f1"].mean()
    ax.axvline(macro, color="k", lw=1, ls="--", label=f"macro F1 {macro:.3f}")
    ax.legend(loc="lower right", fontsize=8)
    names = ", ".join(table["class"][:k])
    # Wrapping measures text as mathematics whatever parse_math says: escaped instead.
    title = f"Per-class F1 ({n} classes); weakest: {names}".replace("$", r"\$")
    ax.set_title(title, fontsize=9, wrap=True, usetex=False)
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)


def learning_curves(history: pd.DataFrame, path: str | os.PathLike) -> None:
    """Accuracy and loss per epoch for train, val and (when recorded) test;
    the epoch kept (lowest val loss) marked."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    epochs = history["epoch"]
    best = int(history.loc[history["val_loss"].idxmin(), "epoch"])
    for ax, metric, label in ((axes[0], "accuracy", "accuracy"), (axes[1], "loss", "loss")):
        for prefix, name, style in (
            ("", "train", "-o"),
            ("val_", "val", "-s"),
            ("test_", "test", "--^"),
        ):
            column = prefix + metric
            if column in history and history[column].notna().any():
                ax.plot(epochs, history[column], style, ms=4, label=name)
        ax.axvline(best, color="grey", lw=1, ls=":", label=f"kept: epoch {best}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(f"{label.capitalize()} per epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylim(0, 1.02)
    _save(fig, path)


def confusion_matrix(cm: np.ndarray, names: list[str], path: str | os.PathLike) -> None:
    """Row-normalised confusion matrix: each row is a true class's clips."""
    n = len(names)
    support = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, support, out=np.zeros(cm.shape, dtype=float), where=support > 0)
    side = float(np.clip(0.16 * n + 2.5, 5, 22))
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    size = _label_size(n)
    ax.set_xticks(np.arange(n), names, rotation=90, fontsize=size, **LITERAL)
    ax.set_yticks(np.arange(n), names, fontsize=size, **LITERAL)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if n <= 20:
        for i, j in zip(*np.nonzero(cm), strict=True):
            ax.text(
                j,
                i,
                f"{share[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if share[i, j] > 0.5 else "black",
            )
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    bar.set_label("share of the true class's test clips")
    ax.set_title("Confusion matrix (rows normalised)")
    # Many classes: more pixels, so that the small labels stay sharp when zoomed.
    _save(fig, path, dpi=DPI if n <= 40 else 160)


def confused_pairs(pairs: pd.DataFrame, path: str | os.PathLike) -> None:
    """The most frequent mistakes as bars: share of the true class's clips."""
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.3 * len(pairs) + 1.2)))
    if pairs.empty:
        ax.text(0.5, 0.5, "no mistakes on the test split", ha="center", va="center")
        ax.set_axis_off()
    else:
        rows = pairs.iloc[::-1]
        labels = [f"{t} -> {p}" for t, p in zip(rows["true"], rows["predicted"], strict=True)]
        ax.barh(np.arange(len(rows)), rows["share"], color="#ff7f0e")
        ax.set_yticks(np.arange(len(rows)), labels, fontsize=8, **LITERAL)
        for i, (share, count) in enumerate(zip(rows["share"], rows["count"], strict=True)):
            ax.text(share, i, f" {count}", va="center", fontsize=7)
        ax.set_xlim(0, min(1.0, rows["share"].max() * 1.25 + 0.05))
        ax.set_xlabel("share of the true class's test clips (count at the bar's end)")
        ax.set_ylabel("true -> predicted")
        ax.set_title("Most-confused class pairs")
        ax.grid(axis="x", alpha=0.3)
    _save(fig, path)


def bayes_convergence(trials: pd.DataFrame, path: str | os.PathLike) -> None:
    """Each Bayesian trial's val loss and learning rate, and the best so far."""
    fig, (ax, ax_lr) = plt.subplots(1, 2, figsize=(11, 4))
    loss = trials["val_loss"].astype(float)
    k = trials["trial"]
    ax.plot(k, loss, "o", label="trial")
    ax.plot(k, loss.cummin(), "-", color="k", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("lowest val loss within the budget")
    ax.set_title("Bayesian search: convergence")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    sc = ax_lr.scatter(trials["lr"], loss, c=k, cmap="viridis")
    ax_lr.set_xscale("log")
    ax_lr.set_xlabel("learning rate (log)")
    ax_lr.set_ylabel("val loss")
    ax_lr.set_title("Proposals (colour: trial number)")
    fig.colorbar(sc, ax=ax_lr).set_label("trial")
    ax_lr.grid(alpha=0.3)
    _save(fig, path)


def grid_curve(points: pd.DataFrame, path: str | os.PathLike) -> None:
    """Val loss (and val accuracy) against the learning rate, log axis."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(points["lr"], points["val_loss"], "-o", color="#1f77b4", label="val loss")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log)")
    ax.set_ylabel("lowest val loss within the budget", color="#1f77b4")
    acc = ax.twinx()
    acc.plot(points["lr"], points["val_accuracy"], "--s", color="#ff7f0e", label="val accuracy")
    acc.set_ylabel("val accuracy at that epoch", color="#ff7f0e")
    acc.set_ylim(0, 1.02)
    ax.set_title("Grid search over the learning rate")
    ax.grid(alpha=0.3)
    _save(fig, path)


def compare_curves(curves: dict[str, pd.DataFrame], path: str | os.PathLike) -> None:
    """Val (solid) and test (dashed) accuracy per epoch for each model compared."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, history) in enumerate(curves.items()):
        colour = f"C{i}"
        ax.plot(history["epoch"], history["val_accuracy"], "-o", color=colour, label=f"{name} val")
        if "test_accuracy" in history and history["test_accuracy"].notna().any():
            ax.plot(
                history["epoch"], history["test_accuracy"], "--", color=colour, label=f"{name} test"
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title("Accuracy per epoch, same budget for every backbone")
    ax.grid(alpha=0.3)
    literal_legend(ax.legend(fontsize=8))
    _save(fig, path)


def compare_time(summary: pd.DataFrame, path: str | os.PathLike) -> None:
    """Test accuracy against total training time, one point per model."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, row in enumerate(summary.itertuples(index=False)):
        ax.scatter(row.train_seconds_total, row.test_accuracy, s=60, color=f"C{i}")
        ax.annotate(
            f"{row.backbone}/{row.head}",
            (row.train_seconds_total, row.test_accuracy),
            textcoords="offset points",
            xytext=(6, 4),
            fontsize=8,
            **LITERAL,
        )
    ax.set_xlabel("training time, seconds (all epochs)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0, summary["train_seconds_total"].max() * 1.3)
    ax.set_title("Accuracy against training time")
    ax.grid(alpha=0.3)
    _save(fig, path)


def near_duplicates(
    pairs: pd.DataFrame,
    clips: list[tuple[np.ndarray, np.ndarray]],
    path: str | os.PathLike,
    note: str = "",
) -> None:
    """Each held-out clip beside its most similar train clip, as frame strips
    (``clips``: the two clips' frames, [n, S, S, 3] each, in ``pairs``' order),
    with the cosine similarity; or ``note`` when there are none."""
    if pairs.empty:
        fig, ax = plt.subplots(figsize=(7, 1.5))
        text = note or "no val or test clips"
        ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, **LITERAL)
        ax.set_axis_off()
        _save(fig, path)
        return
    n = clips[0][0].shape[0]
    fig, axes = plt.subplots(
        len(pairs), 2 * n, figsize=(1.1 * 2 * n, 1.45 * len(pairs)), squeeze=False
    )
    for row, ((held, train), r) in enumerate(zip(clips, pairs.itertuples(), strict=True)):
        for col in range(2 * n):
            ax = axes[row, col]
            ax.imshow(held[col] if col < n else train[col - n])
            ax.set_xticks([])
            ax.set_yticks([])
        same = "same group" if r.same_group else "another group"
        axes[row, 0].set_title(f"{r.split}: {r.clip_id}", fontsize=7, loc="left", **LITERAL)
        axes[row, n].set_title(
            f"train: {r.train_clip} (cosine {r.similarity:.3f}, {same})",
            fontsize=7,
            loc="left",
            **LITERAL,
        )
    fig.suptitle("Most similar held-out (left) and train (right) clips", fontsize=9)
    _save(fig, path)


def robustness_heatmap(
    table_tsv: str | os.PathLike, summary_json: str | os.PathLike, path: str | os.PathLike
) -> None:
    """Accuracy per corruption (rows) and severity (columns), the clean
    accuracy and each row's rPC beside it."""
    import json

    table = pd.read_csv(table_tsv, sep="\t")
    with open(summary_json, encoding="utf-8") as f:
        summary = json.load(f)
    corrupted = table[table["corruption"] != "clean"]
    grid = corrupted.pivot(index="corruption", columns="severity", values="accuracy")
    grid = grid.loc[list(dict.fromkeys(corrupted["corruption"]))]
    fig, ax = plt.subplots(figsize=(1.2 * grid.shape[1] + 3.5, 0.45 * len(grid) + 1.6))
    image = ax.imshow(grid.to_numpy(), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for (i, j), value in np.ndenumerate(grid.to_numpy()):
        ax.text(
            j,
            i,
            f"{value:.2f}",
            ha="center",
            va="center",
            fontsize=8,
            color="white" if value < 0.5 else "black",
        )
    ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns])
    rpc = summary.get("corruptions", {})
    ax.set_yticks(
        range(len(grid)),
        [f"{c} (rPC {rpc.get(c, {}).get('rPC', float('nan')):.2f})" for c in grid.index],
    )
    ax.set_xlabel("severity")
    ax.set_title(
        f"test accuracy under corruption: clean {summary['clean_accuracy']:.3f}, "
        f"mPC {summary['mPC']:.3f}, rPC {summary['rPC']:.3f}",
        fontsize=9,
    )
    fig.colorbar(image, ax=ax, label="accuracy")
    _save(fig, path)


def reliability_diagram(calibration: dict, path: str | os.PathLike) -> None:
    """Accuracy against confidence in equal-width bins, before and after
    temperature scaling, beside the diagonal of a perfectly calibrated
    model; bars as wide as their bin, the ECE in each panel's title."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), sharey=True)
    for ax, when in zip(axes, ("before", "after"), strict=True):
        bins = [b for b in calibration[f"reliability_{when}"] if b["clips"]]
        lo = np.array([b["lo"] for b in bins])
        width = np.array([b["hi"] - b["lo"] for b in bins])
        acc = np.array([b["accuracy"] for b in bins])
        conf = np.array([b["confidence"] for b in bins])
        ax.bar(
            lo, acc, width=width, align="edge", color="#4c72b0", edgecolor="white", label="accuracy"
        )
        ax.bar(
            lo,
            conf - acc,
            bottom=acc,
            width=width,
            align="edge",
            color="#dd8452",
            alpha=0.5,
            label="gap to confidence",
        )
        ax.plot([0, 1], [0, 1], color="black", linestyle="--", linewidth=1, label="calibrated")
        title = (
            "before calibration"
            if when == "before"
            else (f"after calibration (T = {calibration['temperature']:.3g})")
        )
        ax.set_title(
            f"{title}\nECE {calibration[f'test_ece_{when}']:.4f}, "
            f"NLL {calibration[f'test_nll_{when}']:.4f}"
        )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top probability)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy on the test split")
    axes[1].legend(loc="upper left", fontsize=8)
    fig.suptitle(f"Reliability diagram, {calibration['bins']} bins (test split)")
    fig.tight_layout()
    _save(fig, path)


def openset_scores(scores: dict, summary: dict, path: str | os.PathLike) -> None:
    """Histograms of each rejection score for known (test) and unknown
    clips, the threshold as a line, AUROC and FPR at 95% TPR in the title."""
    kinds = list(summary["scores"])
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds), 3.8))
    for ax, kind in zip(np.atleast_1d(axes), kinds, strict=True):
        known, unknown = scores["known"][kind], scores["unknown"][kind]
        edges = np.histogram_bin_edges(np.r_[known, unknown], bins=20)
        ax.hist(known, bins=edges, alpha=0.6, density=True, label=f"known ({len(known)})")
        ax.hist(unknown, bins=edges, alpha=0.6, density=True, label=f"unknown ({len(unknown)})")
        figures = summary["scores"][kind]
        ax.axvline(figures["threshold"], color="black", linestyle="--", label="threshold")
        chosen = " (used)" if kind == summary["chosen_score"] else ""
        ax.set_title(
            f"{kind}{chosen}\nAUROC {figures['auroc']:.3f}, "
            f"FPR@95TPR {figures['fpr_at_95_tpr']:.3f}"
        )
        ax.set_xlabel(f"{kind} score (higher: more like a trained action)")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
