"""Evaluation outputs of the tiny run, the predict command and rule, and the report."""

import json
import re

import numpy as np
import pytest

from actionrec.tables import read_tsv
from conftest import snakemake

pytestmark = pytest.mark.workflow


def test_evaluation_outputs(tiny_run):
    final = tiny_run / "results/final"
    predictions = read_tsv(final / "predictions.tsv")
    split = read_tsv(tiny_run / "results/data/split.tsv")
    assert sorted(predictions["clip_id"]) == sorted(split.loc[split["split"] == "test", "clip_id"])
    metrics = json.loads((final / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(predictions["correct"].mean(), abs=1e-4)
    assert metrics["split_method"] == "group" and metrics["test_clips"] == len(predictions)
    assert (metrics["level"], metrics["testing"]) == ("clip", "2 views x 1 crops")
    assert len(read_tsv(final / "per_class.tsv")) == 3
    for name in ("per_class_f1", "learning_curves", "confusion_matrix", "confused_pairs"):
        assert (final / f"figures/{name}.png").read_bytes()[:4] == b"\x89PNG"
    card = (final / "model_card.md").read_text()
    assert f"| accuracy | {metrics['accuracy']:.4f} |" in card
    classes = tiny_run / "results/data/classes.txt"
    assert classes.read_text().split() == ["Checker", "Grow", "Shrink"]


def test_predict_command_agrees_with_the_evaluation(tiny_run, tmp_path, actionrec_here):
    predictions = read_tsv(tiny_run / "results/final/predictions.tsv")
    manifest = read_tsv(tiny_run / "results/data/manifest.tsv").set_index("clip_id")
    videos = [manifest.loc[c, "path"] for c in predictions["clip_id"]]
    # The run stores 2 frames a segment and evaluates 2 views: --views 2 samples a video the
    # same way and averages the same views.
    views = json.loads((tiny_run / "results/final/metrics.json").read_text())["views"]
    assert views == 2
    options = ("--top", "3", "--views", "2", "--output", tmp_path / "p.tsv")
    out = actionrec_here("predict", *videos, *options, cwd=tiny_run)
    assert out.returncode == 0, out.stderr
    table = read_tsv(tmp_path / "p.tsv")
    # The run is calibrated: a clip below the rejection threshold is unknown to both.
    said = np.where(predictions["unknown"], "unknown", predictions["predicted"])
    assert table["predicted"].tolist() == said.tolist()
    np.testing.assert_allclose(table["score"], predictions["score"], atol=1e-4)
    np.testing.assert_allclose(table["probability"], predictions["probability"], atol=1e-4)
    assert out.stdout.count("  1. ") == len(videos)


def test_more_views_than_frames_a_segment_is_refused(tmp_path, actionrec_here):
    out = actionrec_here("predict", "clip.avi", "--views", "3", "--frames-per-segment", "2")
    assert out.returncode == 2
    assert "--views (3) exceeds --frames-per-segment (2)" in out.stderr


def test_predict_on_a_real_clip_prints_k_classes(tiny_run, sample, actionrec_here):
    clip = sample / "UCF-101/Archery/v_Archery_g01_c01.avi"
    out = actionrec_here("predict", clip, "--top", "2", cwd=tiny_run)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(str(clip))
    ranked = [line.split() for line in lines[1:]]
    assert [r[0] for r in ranked] == ["1.", "2."]
    probs = [float(r[-1]) for r in ranked]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6


def test_bad_videos_are_named_and_the_others_still_classified(tiny_run, tmp_path, actionrec_here):
    good = read_tsv(tiny_run / "results/data/manifest.tsv")["path"][0]
    broken = tmp_path / "broken.avi"
    broken.write_text("not a video\n" * 100)
    missing = tmp_path / "missing.avi"
    out = actionrec_here("predict", broken, good, missing, cwd=tiny_run)
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2
    assert errors[0].startswith(f"error: {broken}: ") and "Invalid data" in errors[0]
    assert errors[1] == f"error: {missing}: missing: no such file"
    assert out.stdout.startswith(good) and "  5. " not in out.stdout and "  3. " in out.stdout


def test_predict_rule_classifies_a_folder_alone(tiny_run):
    folder = tiny_run / "predict/new"
    folder.mkdir(parents=True)
    source = tiny_run / read_tsv(tiny_run / "results/data/manifest.tsv")["path"][0]
    (folder / "clip one.avi").write_bytes(source.read_bytes())
    (folder / "broken.avi").write_text("not a video\n" * 100)
    out = snakemake(tiny_run, "results/predict/new.tsv", "--configfile", "tiny.yaml")
    assert out.returncode == 0, out.stderr[-2000:]
    ran = re.findall(r"^(\w+)\s+(\d+)$", out.stderr.split("Job stats:")[1], re.M)
    assert dict(ran) == {"predict": "1", "total": "1"}
    table = read_tsv(tiny_run / "results/predict/new.tsv").set_index("video")
    assert table.loc["predict/new/clip one.avi", "status"] == "ok"
    assert table.loc["predict/new/broken.avi", "status"] == "failed"


def test_predict_rule_names_a_missing_folder(tiny_run):
    out = snakemake(tiny_run, "results/predict/absent.tsv", "--configfile", "tiny.yaml", "-n")
    assert out.returncode != 0 and "predict/absent/" in out.stdout + out.stderr


def test_html_report(tiny_run):
    out = snakemake(tiny_run, "--configfile", "tiny.yaml", "--report", "results/report.html")
    assert out.returncode == 0, out.stderr[-2000:]
    html = (tiny_run / "results/report.html").read_text()
    for name in ("per_class_f1.png", "confusion_matrix.png", "model_card.md", "predictions.tsv"):
        assert name in html
