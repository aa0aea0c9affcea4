"""The model card: a Markdown page written from measured numbers only."""

from __future__ import annotations

import json
import os

import pandas as pd

from .catalog import backbone_input, is_backbone_file
from .tables import read_tsv

HEAD_TEXT = {
    "average": "Dense(num_classes) per frame, averaged over time, softmax "
    "(blind to the order of frames)",
}


def _augmentation(augment: dict) -> str:
    active = [f"{k} {v}" for k, v in augment.items() if v not in (0, 0.0, False, None)]
    return ", ".join(active) or "none"


def _sampling(extract: dict) -> str:
    k = int(extract.get("frames_per_segment", 1))
    if k == 1:
        return "each segment's centre frame, the same every epoch"
    return (
        f"{k} frames stored of each segment, one drawn at random every epoch in training "
        "(TSN's sparse sampling)"
    )


def _finetune_schedule(finetune: dict) -> str:
    parts = []
    warmup = float(finetune.get("warmup_epochs", 0) or 0)
    if warmup:
        parts.append(f"warmed up over {warmup:g} epoch(s)")
    if finetune.get("schedule") == "cosine":
        parts.append("cosine-decayed to 0")
    if finetune.get("clipnorm") is not None:
        parts.append(f"gradient norm clipped at {finetune['clipnorm']:g}")
    if int(finetune.get("accumulate", 1)) > 1:
        parts.append(f"{finetune['accumulate']} batches an update")
    return f" ({', '.join(parts)})" if parts else ""


STAGE_TEXT = {
    "full": "end to end from the start weights",
    "frozen": "the head alone on the frozen pretrained backbone (batch norm in inference mode)",
    "finetune": "{blocks} unfrozen at peak learning rate {lr:.4g}{how}, batch norm {batch_norm}",
}


def _stages(history: pd.DataFrame, train: dict, lr: float) -> str:
    finetune = train.get("finetune", {})
    lines = []
    for stage, epochs in history.groupby("stage", sort=False).size().items():
        blocks = finetune.get("blocks")
        factor = finetune.get("lr_factor")
        text = STAGE_TEXT[stage].format(
            blocks="the whole backbone" if blocks == "all" else f"the top {blocks} block(s)",
            lr=lr * float(factor) if factor is not None else float(finetune.get("lr", lr)),
            how=_finetune_schedule(finetune),
            batch_norm=finetune.get("batch_norm"),
        )
        collapsed = (
            "collapsed" in history and history.loc[history["stage"] == stage, "collapsed"].any()
        )
        note = "; stopped early: train accuracy collapsed" if collapsed else ""
        lines.append(f"- Stage `{stage}`, {epochs} epoch(s): {text}{note}.")
    return "\n".join(lines)


def _backbone(train: dict) -> str:
    name = train["backbone"]
    if (train.get("backbone_input") or backbone_input(name)) == "clip":
        return (
            f"Backbone `{name}`, a video network, applied to the whole clip at once and "
            "giving the head its features per temporal step (average pooled over space)"
        )
    return (
        f"Backbone `{name}` ({train.get('norm', 'batch')} normalisation) applied to every "
        "frame (shared weights), global-average pooled"
    )


def _start_weights(train: dict) -> str:
    weights = str(train["weights"] or "none")
    if is_backbone_file(train["backbone"]) and weights in ("none", "imagenet"):
        return "the backbone file's own (a model file brings its weights)"
    if weights.endswith("-imagenet.weights.h5"):
        return f"ImageNet (fetched once into `{weights}`)"
    return f"`{weights}`" + (" (trained from scratch)" if weights == "none" else "")


def _groups(split: dict) -> str:
    groups = split.get("groups", {"source": "names"})
    count = f"{groups['groups']} groups" if "groups" in groups else "groups"
    if groups["source"] != "names":
        which = (
            "for the clips without a group in their names"
            if groups["source"] != "discovered"
            else "not from names"
        )
        return (
            f"{count} discovered from frozen features (split.groups `{groups['mode']}`: "
            f"per-class clusters cut at cosine distance {groups['threshold']}), {which}."
        )
    unnamed = groups.get("unnamed_clips", 0)
    lacking = f"; {unnamed} clips without one are each a group of their own" if unnamed else ""
    return f"{count} from the clips' names (`_gNN_`){lacking}."


def _leakage(metrics: dict, split: dict) -> str:
    """The leakage share, what groups it is measured on, and with discovered
    groups the estimate of the share of test clips whose source video is in train."""
    source = metrics.get("leakage_groups", "names")
    text = (
        f"Share of test clips whose group is also in train (leakage): "
        f"{metrics['leakage_share']}, measured on groups from {source}."
    )
    if "name_leakage_share" in metrics:
        text += f" By the groups their names give: {metrics['name_leakage_share']}."
    if "estimated_leakage_share" in metrics:
        text += (
            f"\n  Discovered groups do not say which clips share a source video: an estimated "
            f"{metrics['estimated_leakage_share']} of test clips have their source video in "
            "train (from the similarity of each one's nearest train clip)."
        )
    return text


def _audit(split: dict) -> str:
    audit = split.get("audit") or {"skipped": "no audit"}
    if "skipped" in audit:
        text = f"not audited ({audit['skipped']})."
    else:
        text = (
            f"share of val / test clips with a train clip at cosine similarity >= "
            f"{audit['similarity']} (frozen `{audit['features']}` features): "
            f"{audit['val']['near_duplicates']} / {audit['test']['near_duplicates']}."
        )
    return text + "".join(f"\n  **Warning:** {w}." for w in split.get("warnings", []))


def write_model_card(
    path: str | os.PathLike,
    *,
    metrics_json: str | os.PathLike,
    per_class_tsv: str | os.PathLike,
    history_tsv: str | os.PathLike,
    manifest_tsv: str | os.PathLike,
    leakage_json: str | os.PathLike,
    config: dict,
    best_lr_json: str | os.PathLike | None = None,
    robustness_json: str | os.PathLike | None = None,
    shown: int = 5,
    openset_json: str | os.PathLike | None = None,
) -> str:
    with open(metrics_json, encoding="utf-8") as f:
        metrics = json.load(f)
    with open(leakage_json, encoding="utf-8") as f:
        split = json.load(f)
    train, extract = config["train"], config["extract"]
    head = train["head"]
    text = f"""# Model card: action recognition from video clips

{_data_section(read_tsv(manifest_tsv), split, metrics, config)}
## Architecture
- {_backbone(train)};
  head `{head}`: {HEAD_TEXT.get(head, head)}.
- Weights at the start: {_start_weights(train)}.
- Input: raw uint8 frames [batch, {extract["frames"]}, {extract["size"]}, {extract["size"]}, 3];
  the backbone's preprocessing is inside the model.

{_training_section(read_tsv(history_tsv), config, best_lr_json)}
{_results_section(metrics, read_tsv(per_class_tsv), shown)}
{_calibration_section(metrics, openset_json)}
## Limitations
- Numbers hold for this split method only: a `random` split lets clips of one source video
  sit on both sides and overstates accuracy.
- Test accuracy per epoch is recorded for the figures only; nothing was chosen on it.
- {
        "The `average` head cannot tell classes apart that differ only in the order of frames "
        "(e.g. opening vs closing); choose an order-aware head for those."
        if head == "average"
        else "Order-aware head: see docs/models.md for its measured cost."
    }
- {extract["frames"]} frames per clip see the whole clip coarsely; fast actions between sampled
  frames are missed.
{_robustness(robustness_json)}"""
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return text


def _data_section(manifest, split: dict, metrics: dict, config: dict) -> str:
    extract = config["extract"]
    data = config["data"].get("root") or "the built-in synthetic demo (results/demo/UCF-101)"
    fractions = (
        "/".join(f"{v:g}" for v in split["fractions"].values())
        if split.get("fractions")
        else "official lists"
    )
    return f"""## Data
- Source: {data}; {len(manifest)} clips of {manifest["class"].nunique()} classes
  in {manifest["group"].nunique()} groups.
- Frames: {extract["frames"]} per clip, one from each of {extract["frames"]} equal segments of
  the whole clip, resized to {extract["size"]} x {extract["size"]} (`{extract["resize"]}`), RGB
  uint8; {_sampling(extract)}.
- Split: `{split["method"]}` ({fractions}, seed {split.get("seed")}); clips train
  {split["clips"]["train"]}, val {split["clips"]["val"]}, test {split["clips"]["test"]}.
  {_leakage(metrics, split)}
- Groups: {_groups(split)}
- Near-duplicates: {_audit(split)}
"""


def _training_section(history, config: dict, best_lr_json) -> str:
    train = config["train"]
    best = history.loc[history["kept"]].iloc[0]
    monitor = train.get("monitor", "val_loss").replace("_", " ")
    if best_lr_json:
        with open(best_lr_json, encoding="utf-8") as f:
            chosen = json.load(f)
        lr = chosen["lr"]
        lr_source = (
            f"`lr: auto`, chosen by the {chosen['search']} search: val loss "
            f"{chosen['val_loss']:.4f} after {config['search']['epochs']} epoch(s)"
        )
        noise = chosen.get("val_noise", {}).get("sentence")
    else:
        lr, lr_source, noise = train["lr"], "fixed in the config", None
    weights = "on" if train["class_weights"] else "off"
    noise_line = f"- Learning-rate search: {noise}\n" if noise else ""
    return f"""## Training
- Adam, learning rate {lr:.4g} ({lr_source});
  batch size {train["batch_size"]}; early stopping on {monitor} with patience {
        train["patience"]
    }, best weights kept.
{noise_line}{_stages(history, train, lr)}
- Loss `{train["loss"]}`, label smoothing {train.get("label_smoothing", 0.0):g}; class weights {
        weights
    };
  dropout {train["dropout"]}; augmentation: {_augmentation(train["augment"])}.
- Trained {len(history)} epochs; kept epoch {int(best["epoch"])} ({best["stage"]}): val loss
  {best["val_loss"]:.4f}, val accuracy {best["val_accuracy"]:.4f}.
"""


def _results_section(metrics: dict, per_class, shown: int) -> str:
    per_class = per_class.sort_values(["f1", "class"], ascending=[False, True])
    top_key = next(k for k in metrics if k.startswith("top") and k.endswith("_accuracy"))
    cols = ["class", "f1", "precision", "recall", "support"]
    weak = per_class.iloc[::-1].head(shown)[cols]
    strong = per_class.head(shown)[cols]
    where = f"{metrics['test_clips']} clips, `{metrics['split_method']}` split"
    return f"""## Results on the test split ({where})
Each clip scored once as the mean over {metrics.get("testing", "1 views x 1 crops")}
(clip level).

| metric | value | 95% interval |
|---|---|---|
| accuracy | {metrics["accuracy"]:.4f} | {_ci(metrics, "accuracy")} |
| {top_key.replace("_", " ")} | {metrics[top_key]:.4f} | {_ci(metrics, top_key)} |
| macro F1 | {metrics["macro_f1"]:.4f} | {_ci(metrics, "macro_f1")} |
| weighted F1 | {metrics["weighted_f1"]:.4f} | |

{_uncertainty(metrics)}

Best classes by F1:

{strong.to_markdown(index=False)}

Weakest classes by F1:

{weak.to_markdown(index=False)}
"""


def _ci(metrics: dict, key: str) -> str:
    if f"{key}_ci" not in metrics:
        return "-"
    low, high = metrics[f"{key}_ci"]
    return f"{low:.4f} - {high:.4f}"


def _uncertainty(metrics: dict) -> str:
    """How the intervals were drawn, and how the wrong clips spread over
    source videos: one scene's mistakes or a pattern."""
    interval = metrics.get("interval")
    if interval is None:
        return "- Intervals: not computed."
    if interval.get("method") is None:
        text = f"- Intervals: none ({interval['reason']})."
    else:
        text = (
            f"- Intervals: {interval['level']:.0%} percentile intervals of a bootstrap over the "
            f"test split's {interval['groups']} source videos (groups; {interval['resamples']} "
            "resamples), whose clips are right or wrong together."
        )
        if "note" in interval:
            text += f" Note: {interval['note']}."
    mistakes = metrics.get("mistakes")
    if mistakes and mistakes["wrong"]:
        text += (
            f"\n- Mistakes: {mistakes['wrong']} wrong clip(s) in {mistakes['groups']} of "
            f"{mistakes['of_groups']} source videos; the most in one video: "
            f"{mistakes['most_in_one_group']} (`{mistakes['worst_group']}`; "
            "results/final/mistakes_by_video.tsv)."
        )
    return text


def _robustness(robustness_json) -> str:
    """The limitations the robustness stage measured, from its numbers."""
    if not robustness_json:
        return (
            "- Robustness to low light, blur, noise, compression and other conditions: not "
            "measured (robustness.enabled).\n"
        )
    with open(robustness_json, encoding="utf-8") as f:
        r = json.load(f)
    families = sorted(r["families"].items(), key=lambda kv: kv[1]["rPC"])
    worst = ", ".join(f"{name} (rPC {v['rPC']:.2f})" for name, v in families[:3])
    losing = ", ".join(
        f"{c['class']} ({c['clean']:.2f} -> {c['corrupted']:.2f})" for c in r["losing_classes"][:3]
    )
    return (
        f"- Under corrupted frames (results/final/robustness.tsv, severities "
        f"{', '.join(map(str, r['severities']))}): mPC {r['mPC']:.4f} against a clean accuracy of "
        f"{r['clean_accuracy']:.4f}, rPC {r['rPC']:.4f}. The conditions it copes with worst: "
        f"{worst}. The classes that lose most: {losing}.\n"
    )


def _calibration_section(metrics: dict, openset_json: str | os.PathLike | None) -> str:
    """Calibration and rejection on the test split; the open-set figures
    when unknown videos were given."""
    calibration, rejection = metrics.get("calibration"), metrics.get("rejection")
    if calibration is None:
        return "## Calibration\n- Not calibrated: the probabilities are the softmax's as trained.\n"
    text = f"""## Calibration and unknown actions
- Temperature {calibration["temperature"]:.4g}, fitted on the validation split by negative
  log-likelihood (the logits divided by T: no prediction changes); predict, the stream and every
  exported format give the calibrated probabilities (figures/reliability.png).

| test split | before | after |
|---|---|---|
| NLL | {calibration["test_nll_before"]:.4f} | {calibration["test_nll_after"]:.4f} |
| ECE ({calibration["bins"]} bins) | {calibration["test_ece_before"]:.4f} | {
        calibration["test_ece_after"]:.4f} |

- Unknown below score `{rejection["score"]}` {rejection["threshold"]:.4g}, the threshold that
  keeps {rejection["recall"]:.0%} of validation clips; it rejects {rejection["test_rejected"]:.1%}
  of test clips (all of known actions).
"""
    if openset_json is None:
        return text + "- Open-set figures: not measured (set evaluate.unknown_root).\n"
    with open(openset_json, encoding="utf-8") as f:
        openset = json.load(f)
    rows = "\n".join(
        f"| `{kind}` | {v['auroc']:.4f} | {v['fpr_at_95_tpr']:.4f} | {v['known_accepted']:.4f} | "
        f"{v['unknown_rejected']:.4f} |"
        for kind, v in openset["scores"].items()
    )
    return (
        text
        + f"""
Open set: {openset["known"]["clips"]} test clips (known) against {openset["unknown"]["videos"]}
videos of other actions (figures/openset_scores.png); open-set accuracy
{openset["openset_accuracy"]:.4f} with `{openset["chosen_score"]}` (closed-set accuracy
{openset["closed_set_accuracy"]:.4f}).

| score | AUROC | FPR at 95% TPR | known accepted | unknown rejected |
|---|---|---|---|---|
{rows}
"""
    )
