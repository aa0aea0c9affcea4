"""The robustness evaluation: the final model under corruptions x severities,
its table, mPC and rPC, and the workflow's stage."""

import json

import numpy as np
import pandas as pd
import pytest

from actionrec import corruptions, robustness


def fake_predict(monkeypatch, accuracy_of):
    """A stand-in for the evaluation: ``accuracy_of(name, severity)`` of 20
    clips of 2 classes right, the first ones of each class wrong first."""
    monkeypatch.setattr(corruptions, "transform_for", lambda n, s, seed: (n, s, seed))
    clips = pd.DataFrame({"label": [0] * 10 + [1] * 10})

    def predict(transform):
        name, severity = ("clean", 0) if transform is None else transform[:2]
        wrong = int(round((1 - accuracy_of(name, severity)) * 10))
        probs = np.zeros((20, 2))
        pred = clips["label"].to_numpy().copy()
        pred[:wrong] = 1  # class 0 loses first, then class 1
        pred[10 : 10 + max(0, wrong - 10)] = 0
        probs[np.arange(20), pred] = 1
        return clips, probs

    return predict


def test_the_table_and_summary_give_mpc_rpc_per_family_and_the_losing_classes(monkeypatch):
    def accuracy(name, severity):
        return 1.0 if name == "clean" else 1.0 - 0.1 * severity * (name == "low_light")

    predict = fake_predict(monkeypatch, accuracy)
    true, table, predicted = robustness.classify_under(
        predict, ["low_light", "occlusion"], [1, 3], seed=0
    )
    assert table[["corruption", "severity"]].values.tolist() == [
        ["clean", 0],
        ["low_light", 1],
        ["low_light", 3],
        ["occlusion", 1],
        ["occlusion", 3],
    ]
    assert table["family"].tolist() == ["none", "light", "light", "occlusion", "occlusion"]
    assert table["accuracy"].tolist() == [1.0, 0.95, 0.85, 1.0, 1.0]
    summary = robustness.summarise(table, true, predicted, ["Run", "Jump"])
    assert summary["clean_accuracy"] == 1.0 and summary["mPC"] == 0.95
    assert summary["rPC"] == 0.95 and summary["families"]["light"] == {"mPC": 0.9, "rPC": 0.9}
    assert summary["families"]["occlusion"]["rPC"] == 1.0
    assert summary["losing_classes"][0]["class"] == "Run"
    assert summary["losing_classes"][0]["corrupted"] < summary["losing_classes"][0]["clean"]


def test_severity_0_through_the_stage_is_the_clean_evaluation(monkeypatch):
    predict = fake_predict(monkeypatch, lambda name, severity: 0.7)
    _, table, _ = robustness.classify_under(predict, ["contrast"], [1], seed=3)
    assert table["accuracy"].nunique() == 1 and table["macro_f1"].nunique() == 1


@pytest.mark.parametrize(
    ("names", "severities", "message"),
    [
        (["fog"], [1], "robustness.corruptions: ['fog'] unknown"),
        (["low_light"], [6], "robustness.severities must be among [1, 2, 3, 4, 5]"),
        (["low_light"], [0], "robustness.severities must be among"),
        (["low_light"], [], "robustness.severities must be among"),
    ],
)
def test_bad_settings_name_the_key_and_the_choices(names, severities, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        robustness.check_settings(names, severities)


def test_the_stage_writes_its_table_and_summary(tiny_data, tmp_path):
    """On a saved model and real shards, through the evaluation's frame hook."""
    import keras

    from actionrec.evaluate import predict_split
    from actionrec.pipeline import shard_geometry

    frames, size = shard_geometry(sorted(tiny_data["shards"].glob("shard-*.h5"))[0])
    model = keras.Sequential(
        [
            keras.Input((frames, size, size, 3), dtype="uint8"),
            keras.layers.Rescaling(1 / 255),
            keras.layers.GlobalAveragePooling3D(),
            keras.layers.Dense(tiny_data["classes"], activation="softmax"),
        ]
    )
    model.save(tmp_path / "model.keras")
    names = [f"c{i}" for i in range(tiny_data["classes"])]
    summary = robustness.evaluate_robustness(
        tmp_path / "model.keras",
        tiny_data["data"],
        names,
        corruptions=["low_light", "dropped_frames"],
        severities=[1, 5],
        seed=0,
        out_table=tmp_path / "robustness.tsv",
        out_summary=tmp_path / "robustness.json",
    )
    table = pd.read_csv(tmp_path / "robustness.tsv", sep="\t")
    assert len(table) == 5 and (table["test_clips"] == table["test_clips"][0]).all()
    assert json.loads((tmp_path / "robustness.json").read_text())["mPC"] == summary["mPC"]
    # The stage's clean row is the evaluation's own score on clean frames.
    clips, probs = predict_split(model, tiny_data["data"], "test", 8)
    clean = float((probs.argmax(axis=1) == clips["label"].to_numpy()).mean())
    assert table.loc[0, "corruption"] == "clean" and table.loc[0, "accuracy"] == round(clean, 4)
    # This model reads mean brightness alone: very dark frames change what it says.
    dark = robustness.conditions(["low_light"], [5])[1]
    _, dark_probs = predict_split(
        model, tiny_data["data"], "test", 8, transform=corruptions.transform_for(*dark, 0)
    )
    assert not np.allclose(dark_probs, probs) and summary["cost"] > 0


@pytest.mark.workflow
def test_the_robustness_stage_runs_on_the_tiny_workflow(tiny_run):
    from conftest import snakemake

    (tiny_run / "robust.yaml").write_text(
        "robustness: {corruptions: [low_light, compression], severities: [1, 5]}\n"
    )
    target = "results/final/robustness.tsv"
    out = snakemake(tiny_run, target, "--configfile", "tiny.yaml", "robust.yaml")
    assert out.returncode == 0, out.stderr[-3000:]
    # Only the stage ran: the trained model and its evaluation were up to date.
    assert "rule robustness" in out.stdout + out.stderr and "rule train" not in out.stdout
    table = pd.read_csv(tiny_run / target, sep="\t")
    assert table[["corruption", "severity"]].values.tolist() == [
        ["clean", 0],
        ["low_light", 1],
        ["low_light", 5],
        ["compression", 1],
        ["compression", 5],
    ]
    metrics = json.loads((tiny_run / "results/final/metrics.json").read_text())
    # The stage's clean pass is the evaluation's (same views and crops): same accuracy.
    assert table.loc[0, "accuracy"] == metrics["accuracy"]
    summary = json.loads((tiny_run / "results/final/robustness.json").read_text())
    assert set(summary["families"]) == {"light", "digital"} and 0 <= summary["rPC"]
    for figure in ("robustness.png", "corruptions.png"):
        assert (tiny_run / "results/final/figures" / figure).stat().st_size > 5_000


def test_the_model_card_quotes_mpc_and_rpc(tmp_path):
    from actionrec.model_card import _robustness

    assert "not measured" in _robustness(None)
    summary = {
        "severities": [1, 3],
        "mPC": 0.61,
        "clean_accuracy": 0.9,
        "rPC": 0.6778,
        "families": {"light": {"mPC": 0.4, "rPC": 0.44}, "blur": {"mPC": 0.8, "rPC": 0.89}},
        "losing_classes": [{"class": "Punch", "clean": 0.9, "corrupted": 0.3}],
    }
    (tmp_path / "r.json").write_text(json.dumps(summary))
    line = _robustness(tmp_path / "r.json")
    assert "mPC 0.6100 against a clean accuracy of 0.9000, rPC 0.6778" in line
    assert line.index("light (rPC 0.44)") < line.index("blur (rPC 0.89)")
    assert "Punch (0.90 -> 0.30)" in line
