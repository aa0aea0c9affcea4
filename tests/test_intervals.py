"""Intervals over source videos, paired comparisons of two models and the
mistakes by video: on synthetic clips whose truth is known."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from actionrec import report_intro
from actionrec.intervals import (
    accuracy_resamples,
    group_codes,
    macro_f1_resamples,
    mistakes_by_group,
    paired_difference,
    resample_counts,
    score_intervals,
)
from actionrec.scores import prediction_table, summary_metrics
from actionrec.search import validation_noise
from actionrec.tables import write_tsv
from actionrec.verdict import claim_sentence, markdown, paired_comparisons

NAMES = ["Bounce", "Grow", "Shrink"]


def clustered_correctness(rng, truth: float, videos: int, clips: int) -> tuple:
    """Per-clip correctness whose videos differ in difficulty: each video's
    accuracy is drawn from a Beta of mean ``truth`` (within-video correlation
    1/5), then its clips from that accuracy. The expected accuracy is ``truth``."""
    per_video = rng.beta(4 * truth, 4 * (1 - truth), size=videos)
    groups = np.repeat(np.arange(videos), clips)
    return rng.random(videos * clips) < per_video[groups], groups


def coverage(groups_known: bool, datasets: int = 200, truth: float = 0.8) -> float:
    rng = np.random.default_rng(11)
    covered = 0
    for k in range(datasets):
        correct, groups = clustered_correctness(rng, truth, videos=30, clips=8)
        stats = accuracy_resamples(correct, groups if groups_known else None, seed=k)
        low, high = np.quantile(stats, [0.025, 0.975])
        covered += low <= truth <= high
    return covered / datasets


def test_the_interval_covers_the_true_accuracy_at_about_its_level():
    share = coverage(groups_known=True)
    assert 0.88 <= share <= 0.99, share
    # Resampling clips as if independent ignores that a video's clips move
    # together: its intervals are too short and miss the truth more often.
    assert coverage(groups_known=False) < min(0.88, share - 0.05)


def test_macro_f1_of_every_resample_is_scikit_learns():
    rng = np.random.default_rng(2)
    true = rng.integers(0, 4, 60)
    pred = np.where(rng.random(60) < 0.6, true, rng.integers(0, 4, 60))
    groups = rng.integers(0, 12, 60)
    stats = macro_f1_resamples(true, pred, groups, resamples=20, seed=5)
    codes = group_codes(groups, 60)
    counts = resample_counts(codes.max() + 1, 20, 5)
    for r in range(20):
        drawn = np.repeat(np.arange(codes.max() + 1), counts[r])
        rows = np.concatenate([np.flatnonzero(codes == g) for g in drawn])
        expected = f1_score(true[rows], pred[rows], average="macro", zero_division=0.0)
        assert stats[r] == pytest.approx(expected)


def test_a_model_compared_with_itself_is_not_distinguishable():
    rng = np.random.default_rng(3)
    correct, groups = clustered_correctness(rng, 0.7, videos=21, clips=5)
    test = paired_difference(correct, correct, groups)
    assert test["verdict"] == "not distinguishable"
    assert test["difference"] == 0 and test["difference_ci"] == [0.0, 0.0] and test["p"] == 1.0


def test_a_clearly_better_model_is_significant_either_way_round():
    rng = np.random.default_rng(4)
    worse, groups = clustered_correctness(rng, 0.5, videos=30, clips=4)
    better = worse | (rng.random(len(worse)) < 0.8)  # right wherever worse is, and more
    assert paired_difference(better, worse, groups)["verdict"] == "A better"
    test = paired_difference(worse, better, groups)
    assert test["verdict"] == "B better" and test["difference_ci"][1] < 0 and test["p"] < 0.05


def test_a_difference_that_two_videos_make_is_not_distinguishable():
    # B is wrong on every clip of 2 of 20 videos and nowhere else: 10 clips that
    # one would count as independent evidence are two scenes.
    groups = np.repeat(np.arange(20), 5)
    a = np.ones(100, bool)
    b = ~np.isin(groups, [3, 4])
    assert paired_difference(a, b, groups)["verdict"] == "not distinguishable"


def test_intervals_need_at_least_two_source_videos():
    true, pred = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])
    fields = score_intervals(true, pred, ["g1"] * 4)
    assert "accuracy_ci" not in fields and "one source video" in fields["interval"]["reason"]
    fields = score_intervals(true, pred, ["", "", "", ""])
    assert "accuracy_ci" not in fields and "unknown" in fields["interval"]["reason"]
    fields = score_intervals(true, pred, ["g1", "g1", "g2", "g3"])
    assert fields["interval"] == {
        "method": "bootstrap over source videos",
        "groups": 3,
        "resamples": 2000,
        "level": 0.95,
        "note": "only 3 source videos: the interval is rough",
    }
    low, high = fields["accuracy_ci"]
    assert low <= 0.75 <= high


def hand_made():
    """Six clips of three videos; the two wrong clips of Shrink are one video's."""
    clips = pd.DataFrame(
        {
            "clip_id": [f"v{i}" for i in range(6)],
            "label": [0, 0, 1, 1, 2, 2],
            "group": ["B_g1", "B_g1", "G_g1", "G_g1", "S_g1", "S_g1"],
        }
    )
    probs = np.array(
        [
            [0.7, 0.2, 0.1],
            [0.6, 0.3, 0.1],
            [0.1, 0.5, 0.4],
            [0.1, 0.3, 0.6],  # Grow taken for Shrink
            [0.2, 0.5, 0.3],  # Shrink taken for Grow
            [0.5, 0.1, 0.4],  # and for Bounce
        ]
    )
    return clips, probs


def test_mistakes_are_listed_by_source_video():
    clips, probs = hand_made()
    table = mistakes_by_group(prediction_table(clips, probs, NAMES))
    assert table["group"].tolist() == ["S_g1", "G_g1"]
    first = table.iloc[0]
    assert (first["class"], first["clips"], first["wrong"], first["share"]) == ("Shrink", 2, 2, 1.0)
    assert first["of_mistakes"] == 0.6667
    assert set(first["predicted"].split("; ")) == {"Bounce x1", "Grow x1"}
    assert table.iloc[1]["predicted"] == "Shrink x1"


def test_metrics_json_carries_the_intervals_and_the_mistakes():
    clips, probs = hand_made()
    table = prediction_table(clips, probs, NAMES, top=2)
    assert table["group"].tolist() == clips["group"].tolist()
    true, pred = clips["label"].to_numpy(), probs.argmax(axis=1)
    metrics = json.loads(json.dumps(summary_metrics(table, true, pred, {"method": "group"})))
    for key in ("accuracy", "macro_f1", "top2_accuracy"):
        low, high = metrics[f"{key}_ci"]
        assert 0 <= low <= metrics[key] <= high <= 1, (key, metrics)
    assert metrics["interval"]["groups"] == 3 and metrics["interval"]["resamples"] == 2000
    assert metrics["mistakes"] == {
        "wrong": 3,
        "groups": 2,
        "of_groups": 3,
        "most_in_one_group": 2,
        "worst_group": "S_g1",
    }
    labels = report_intro.headline(
        {**metrics, "leakage_share": 0.0}, {"leakage": {"val": 0.0, "test": 0.0}}
    )
    low, high = metrics["accuracy_ci"]
    assert labels["test accuracy"] == (
        f"0.5000 (95% interval {low:.4f} to {high:.4f} over 3 source videos)"
    )


def test_the_search_says_whether_its_best_rates_are_within_the_noise():
    trials = pd.DataFrame(
        {
            "trial": [1, 2, 3, 4],
            "lr": [1e-4, 3e-4, 1e-3, 1e-2],
            "val_loss": [0.90, 0.85, 0.80, np.nan],
            "val_accuracy": [0.60, 0.62, 0.65, np.nan],
            "epoch": [1, 1, 1, 1],
            "seconds": [1.0, 1.0, 1.0, 1.0],
        }
    )
    few = validation_noise({"grid": trials}, [f"g{i // 5}" for i in range(40)])
    assert few["val_groups"] == 8 and few["val_clips"] == 40 and few["within_noise"]
    assert [t["lr"] for t in few["best"]] == [1e-3, 3e-4, 1e-4]
    assert few["sentence"].startswith("The best 3 rates (0.001, 0.0003, 0.0001) are within")
    assert few["accuracy_se"] > few["accuracy_se_clips"]
    apart = trials.assign(val_accuracy=[0.30, 0.62, 0.95, np.nan])
    many = validation_noise({"grid": apart}, [f"g{i}" for i in range(400)])
    assert not many["within_noise"] and "not all within" in many["sentence"]


def write_model(tmp_path, backbone, correct, groups):
    folder = tmp_path / backbone
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"backbone": backbone, "head": "average"}))
    clips = pd.DataFrame(
        {
            "clip_id": [f"c{i}" for i in range(len(correct))],
            "group": groups,
            "label": 0,
            "predicted": np.where(correct, 0, 1),
            "correct": correct,
        }
    )
    write_tsv(clips, folder / "predictions.tsv")
    return folder / "metrics.json", folder / "predictions.tsv"


def test_the_comparison_says_whether_each_difference_is_noise(tmp_path):
    rng = np.random.default_rng(6)
    correct, groups = clustered_correctness(rng, 0.6, videos=21, clips=5)
    files = [
        write_model(tmp_path, "efficientnetb0", correct, groups),
        write_model(tmp_path, "resnet50", correct, groups),
        write_model(tmp_path, "smallcnn", np.zeros_like(correct), groups),
    ]
    pairs = paired_comparisons([m for m, _ in files], [p for _, p in files])
    verdicts = {(a, b): v for a, b, v in pairs[["model_a", "model_b", "verdict"]].to_numpy()}
    assert verdicts == {
        ("efficientnetb0/average", "resnet50/average"): "not distinguishable",
        ("efficientnetb0/average", "smallcnn/average"): "efficientnetb0/average better",
        ("resnet50/average", "smallcnn/average"): "resnet50/average better",
    }
    summary = pd.DataFrame(
        [
            {"backbone": b, "head": "average", "test_accuracy": correct.mean(), **common}
            for b, common in (
                ("efficientnetb0", {"train_seconds_per_epoch": 10.0}),
                ("resnet50", {"train_seconds_per_epoch": 40.0}),
            )
        ]
    ).assign(split_method="group", hardware="CPU", epochs=3, classes=10)
    sentence = claim_sentence(summary, pairs)
    assert "over 21 source videos: not distinguishable)" in sentence and "it supports" in sentence
    text = markdown(summary, sentence, pairs)
    assert "## Paired on the same test clips" in text and "efficientnetb0/average better" in text
    shorter = write_model(tmp_path, "mobilenetv2", correct[:-1], groups[:-1])
    with pytest.raises(ValueError, match="not scored on the same test clips"):
        paired_comparisons([files[0][0], shorter[0]], [files[0][1], shorter[1]])
