"""Calibrated confidence and rejection of actions the model was not trained on."""

import json

import numpy as np
import pytest

from actionrec import calibration as cal
from conftest import REPO


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def overconfident(n=600, k=5, seed=0):
    """Labels and probabilities of a toy model that is right about 70% of the
    time but says so with logits 4x too large."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), labels] += 1.5
    return labels, softmax(4.0 * logits)


def test_temperature_scaling_lowers_nll_and_ece_on_an_overconfident_toy():
    labels, probs = overconfident()
    val, test = slice(0, 300), slice(300, None)
    t = cal.fit_temperature(probs[val], labels[val])
    assert 2.5 < t < 6  # the logits were 4x too large
    before, after = probs[test], cal.scale(probs[test], t)
    assert cal.nll(after, labels[test]) < 0.8 * cal.nll(before, labels[test])
    assert cal.ece(after, labels[test]) < 0.5 * cal.ece(before, labels[test])
    # Scaling keeps every clip's ranking of classes: the accuracy is unchanged.
    assert (after.argmax(1) == before.argmax(1)).all()


def test_a_validation_split_without_mistakes_never_sharpens():
    labels, probs = overconfident()
    right = probs.argmax(1) == labels
    assert cal.fit_temperature(probs[right], labels[right]) == pytest.approx(1.0, abs=1e-3)


def test_temperature_of_views_scales_each_view_before_averaging():
    labels, probs = overconfident(n=200)
    views = np.stack([probs, np.roll(probs, 1, axis=1)], axis=1)  # [n, 2, k]
    t = cal.fit_temperature(views, labels)
    mean = cal.mean_scaled(views, t)
    np.testing.assert_allclose(mean, (cal.scale(probs, t) + cal.scale(views[:, 1], t)) / 2)
    assert cal.nll(mean, labels) <= cal.nll(views.mean(axis=1), labels) + 1e-9


@pytest.mark.parametrize("recall", [0.5, 0.9, 0.95, 0.99])
@pytest.mark.parametrize("n", [7, 40, 1000])
def test_threshold_keeps_its_recall_of_the_validation_clips(recall, n):
    scores = np.random.default_rng(n).normal(size=n)
    t = cal.threshold_for_recall(scores, recall)
    assert np.mean(scores >= t) >= recall
    # The largest such threshold: any higher one loses the recall.
    higher = scores[scores > t]
    if len(higher):
        assert np.mean(scores >= higher.min()) < recall


def test_threshold_refuses_a_recall_outside_0_1():
    with pytest.raises(ValueError, match="recall"):
        cal.threshold_for_recall(np.ones(3), 1.0)


def test_open_set_measures():
    known, unknown = np.array([0.9, 0.8, 0.7, 0.95]), np.array([0.1, 0.2, 0.75])
    assert cal.auroc(known, unknown) == pytest.approx(11 / 12)
    # Accepting all 4 known clips (95% TPR) means a threshold of 0.7: 0.75 gets in.
    assert cal.fpr_at_tpr(known, unknown) == pytest.approx(1 / 3)
    assert cal.openset_accuracy(
        np.array([True, True, False, True]), known >= 0.72, unknown < 0.72
    ) == pytest.approx(5 / 7)


def test_distance_score_is_highest_at_a_class_mean():
    features = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 1.0]])
    means = cal.class_means(features, np.array([0, 0, 1, 1]), 2)
    near = cal.rejection_score("distance", None, np.array([[2.0, 0.1]]), means)
    far = cal.rejection_score("distance", None, np.array([[-1.0, -1.0]]), means)
    assert -0.01 < near[0] <= 0 and far[0] < -1


def test_a_calibration_of_another_model_is_refused(tmp_path):
    model = tmp_path / "model.keras"
    model.write_bytes(b"one model")
    fitted = {"model_sha256": cal.sha256(model), "temperature": 2.0, "rejection": {}}
    cal.write_json(fitted, tmp_path / cal.FILE)
    assert cal.read_calibration(model)["temperature"] == 2.0
    model.write_bytes(b"another model")
    with pytest.raises(ValueError) as err:
        cal.read_calibration(model)
    for needed in (str(model), str(tmp_path / cal.FILE), "calibration.json", "--no-calibration"):
        assert needed in str(err.value)
    assert cal.read_calibration(tmp_path / "absent/model.keras") is None
    for broken in ("[1, 2]", "{", '{"temperature": 2}'):
        (tmp_path / cal.FILE).write_text(broken)
        with pytest.raises(ValueError, match="calibration file .* (is not a calibration|lacks)"):
            cal.read_calibration(model)


@pytest.fixture(scope="module")
def tiny_model():
    import keras

    from actionrec.model import build_model

    keras.utils.set_random_seed(0)
    return build_model(3, 4, 32, "smallcnn", "average")


def test_temperature_layer_round_trips_and_changes_nothing_at_1(tiny_model, tmp_path):
    from actionrec.model import load_model_file
    from actionrec.temperature import with_temperature

    clips = np.random.default_rng(0).integers(0, 255, (2, 4, 32, 32, 3), dtype=np.uint8)
    raw = np.asarray(tiny_model.predict(clips, verbose=0), np.float64)
    same = with_temperature(tiny_model, 1.0).predict(clips, verbose=0)
    np.testing.assert_allclose(same, raw, atol=1e-6)
    hot = with_temperature(tiny_model, 0.25)
    hot.save(tmp_path / "hot.keras")
    again = load_model_file(tmp_path / "hot.keras", "model file", "")  # safe mode
    assert again.get_layer("temperature").temperature == 0.25
    np.testing.assert_allclose(again.predict(clips, verbose=0), cal.scale(raw, 0.25), atol=1e-5)


@pytest.mark.parametrize("head", ["average", "gru"])
def test_features_output_keeps_the_probabilities(head):
    from actionrec.model import build_model
    from actionrec.temperature import with_features, with_temperature

    model = build_model(3, 4, 32, "smallcnn", head)
    clips = np.random.default_rng(1).integers(0, 255, (2, 4, 32, 32, 3), dtype=np.uint8)
    probs, features = with_features(with_temperature(model, 2.0)).predict(clips, verbose=0)
    np.testing.assert_allclose(probs, cal.scale(model.predict(clips, verbose=0), 2.0), atol=1e-5)
    assert features.shape == (2, 128)


def small_videos(folder, classes, *, seed, groups=1, frames=None):
    """One demo video of 64 x 48 per class and group (``frames`` long, else 6-14)."""
    from actionrec.synthetic import render_dataset

    lengths = {"min_frames": frames or 6, "max_frames": frames or 14}
    return render_dataset(
        folder,
        seed=seed,
        classes=classes,
        groups=groups,
        clips_per_group=1,
        width=64,
        height=48,
        **lengths,
    )


def test_predict_says_unknown_for_an_action_it_was_not_trained_on(tmp_path, actionrec_here):
    """A model of Grow and Checker, calibrated with the distance score: a
    video of Stripes is below the threshold, the known videos above it."""
    import keras

    from actionrec.model import build_model
    from actionrec.temperature import with_features
    from actionrec.video import decode_clip

    videos = small_videos(tmp_path / "videos", ["Grow", "Checker", "Stripes"], seed=5, frames=8)
    known = [v for v in videos if "Stripes" not in v.name]
    other = [v for v in videos if "Stripes" in v.name]
    keras.utils.set_random_seed(0)
    model = build_model(2, 4, 32, "smallcnn", "average")
    path = tmp_path / "model/model.keras"
    path.parent.mkdir()
    model.save(path)
    (path.parent / "classes.txt").write_text("Checker\nGrow\n")
    with_feats = with_features(model)

    def features(video):
        # A video shorter than a window is sampled as extraction samples a clip.
        clip = decode_clip(video, 4, 32).frames[None]
        return with_feats.predict(clip, verbose=0)[1][0]

    means = np.stack([features(v) for v in known])  # each known video is its class's mean
    outsider = cal.rejection_score("distance", None, features(other[0])[None], means)[0]
    assert outsider < -1e-4, "the untrained action looks exactly like a trained one"
    threshold = outsider / 2  # between the outsider and the known videos (score 0)
    cal.write_json(
        {
            "model_sha256": cal.sha256(path),
            "temperature": 1.5,
            "rejection": {
                "score": "distance",
                "recall": 0.95,
                "thresholds": {"distance": threshold, "probability": 0.0},
            },
            "class_means": means.tolist(),
        },
        path.parent / cal.FILE,
    )
    out = actionrec_here("predict", *videos, "--model", path, "--output", tmp_path / "p.tsv")
    assert out.returncode == 0, out.stderr
    from actionrec.tables import read_tsv

    table = read_tsv(tmp_path / "p.tsv").set_index("video")
    assert table.loc[str(other[0]), "predicted"] == "unknown"
    assert bool(table.loc[str(other[0]), "unknown"])
    assert table.loc[str(other[0]), "score"] == pytest.approx(outsider, abs=1e-4)
    for video in known:
        assert table.loc[str(video), "predicted"] in ("Checker", "Grow")
    assert "unknown: none of the trained actions" in out.stdout
    # Uncalibrated, the same video gets one of the trained classes, as before.
    out = actionrec_here("predict", other[0], "--model", path, "--no-calibration")
    assert out.returncode == 0 and "none of the trained actions" not in out.stdout
    # A calibration of another model is refused, naming the fix.
    model.save(path)  # a new file: another digest
    out = actionrec_here("predict", other[0], "--model", path)
    assert out.returncode == 2 and "--no-calibration" in out.stderr


def test_calibrated_run_reports_calibration(tiny_run):
    final = tiny_run / "results/final"
    fitted = json.loads((final / "calibration.json").read_text())
    assert fitted["model_sha256"] == cal.sha256(final / "model.keras")
    assert fitted["val"]["nll_after"] <= fitted["val"]["nll_before"] + 1e-6
    metrics = json.loads((final / "metrics.json").read_text())
    assert metrics["calibration"]["temperature"] == fitted["temperature"]
    assert {"test_nll_before", "test_nll_after", "test_ece_before", "test_ece_after"} <= set(
        metrics["calibration"]
    )
    kind = metrics["rejection"]["score"]
    assert metrics["rejection"]["threshold"] == fitted["rejection"]["thresholds"][kind]
    assert (final / "figures/reliability.png").read_bytes()[:4] == b"\x89PNG"
    card = (final / "model_card.md").read_text()
    assert f"| NLL | {metrics['calibration']['test_nll_before']:.4f} |" in card


@pytest.mark.parametrize(
    ("key", "value"),
    [("reject_recall", 1.0), ("reject_recall", 0), ("reject_score", "entropy")],
)
def test_bad_rejection_settings_are_refused_by_the_schema(key, value):
    import yaml
    from snakemake.utils import validate
    from snakemake_interface_common.exceptions import WorkflowError

    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config.setdefault("evaluate", {})[key] = value
    with pytest.raises(WorkflowError, match=key):
        validate(config, str(REPO / "config/schema.yaml"))


@pytest.mark.workflow
def test_openset_rule_measures_videos_of_other_actions(tiny_run):
    from conftest import snakemake

    small_videos(tiny_run / "unknown", ["Bounce", "Swing"], seed=9, groups=2)
    (tiny_run / "open.yaml").write_text("evaluate: {unknown_root: unknown}\n")
    targets = ("results/final/openset.json", "results/final/model_card.md")
    out = snakemake(tiny_run, *targets, "--configfile", "tiny.yaml", "open.yaml")
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tiny_run / "results/final/openset.json").read_text())
    assert summary["unknown"]["videos"] == 4 and summary["known"]["clips"] > 0
    for kind in ("probability", "distance"):
        assert 0 <= summary["scores"][kind]["auroc"] <= 1
        assert 0 <= summary["scores"][kind]["fpr_at_95_tpr"] <= 1
    assert (tiny_run / "results/final/figures/openset_scores.png").stat().st_size > 0
    card = (tiny_run / "results/final/model_card.md").read_text()
    assert f"| `distance` | {summary['scores']['distance']['auroc']:.4f} |" in card
    # A missing folder stops before any job, naming the key.
    (tiny_run / "open.yaml").write_text("evaluate: {unknown_root: absent}\n")
    out = snakemake(tiny_run, "-n", *targets, "--configfile", "tiny.yaml", "open.yaml")
    assert out.returncode != 0 and "evaluate.unknown_root" in out.stdout + out.stderr
    # The shared run as the other tests know it: its model card without the open-set lines.
    out = snakemake(tiny_run, "results/final/model_card.md", "--configfile", "tiny.yaml")
    assert out.returncode == 0, out.stderr[-3000:]


def test_the_stream_reports_unknown_steps_below_the_threshold(tiny_model, tmp_path):
    from actionrec.stream import classify_stream

    (video,) = small_videos(tmp_path, ["Swing"], seed=2, frames=30)
    names = ["a", "b", "c"]
    options = {"window_seconds": 0.5, "step_seconds": 0.5, "realtime": False}
    plain = classify_stream(tiny_model, str(video), names, **options)
    assert "unknown" not in plain and set(plain["predicted"]) <= set(names)
    # Every step's top probability is at most 1: a threshold above it rejects every step.
    steps = classify_stream(
        tiny_model, str(video), names, rejection=cal.Rejector("probability", 1.01), **options
    )
    assert len(steps) == len(plain) > 0
    assert steps["unknown"].all() and (steps["predicted"] == "unknown").all()
    np.testing.assert_allclose(steps["score"], plain["probability"], atol=1e-6)
