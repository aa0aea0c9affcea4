"""Transfer learning: backbone files, the frozen-feature cache, the frozen and
fine-tuning stages, and batch norm kept in inference mode; with a backbone
file the test makes, and with the real ImageNet-pretrained EfficientNet-Lite0
on real UCF101 clips where ../shared has them."""

import logging
import os
import shutil
from pathlib import Path

import h5py
import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from actionrec.features import cache_features
from actionrec.model import backbone_of, build_backbone, build_model, head_of
from actionrec.pipeline import Data, clip_table, load_features
from actionrec.train import TrainConfig, plan_stages, train
from conftest import (
    REPO,
    assert_loads_with_keras_alone,
    make_backbone_file,
    real_clip_data,
    shared_file,
)

LITE0 = REPO.parent / "shared/models/efficientnet-lite0-imagenet/backbone.keras"


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory) -> Path:
    return make_backbone_file(tmp_path_factory.mktemp("backbone") / "small.keras")


@pytest.fixture(scope="module")
def cached(tiny_data, backbone_file, tmp_path_factory) -> Data:
    """tiny_data with the backbone file's features cached, one file per shard."""
    folder = tmp_path_factory.mktemp("features")
    data = tiny_data["data"]
    for name, shard in data.shards.items():
        cache_features(shard, folder / name, str(backbone_file), "none")
    return data.with_features(sorted(folder.glob("shard-*.h5")))


def batch_norm_statistics(model: keras.Model) -> list[np.ndarray]:
    from actionrec.model import all_layers

    norms = [
        layer for layer in all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert norms
    return [np.array(v) for layer in norms for v in (layer.moving_mean, layer.moving_variance)]


def config(backbone, **options) -> TrainConfig:
    base = {
        "backbone": str(backbone),
        "weights": "none",
        "batch_size": 4,
        "lr": 0.003,
        "max_epochs": 2,
        "patience": 5,
        "seed": 1,
    }
    return TrainConfig.from_config({**base, **options})


def test_cached_features_equal_the_backbone_on_the_shard_frames(cached, backbone_file):
    name = sorted(cached.features)[0]
    with h5py.File(cached.features[name]) as f, h5py.File(cached.shards[name]) as s:
        features, frames = f["features"][()], s["frames"][()]
        assert f["features"].dtype == np.float16
        assert f.attrs["backbone"] == str(backbone_file) and len(f.attrs["backbone_sha256"]) == 64
        assert (f.attrs["frames"], f.attrs["size"]) == (4, 32)
        np.testing.assert_array_equal(f["label"][()], s["label"][()])
    net = build_backbone(str(backbone_file), 32, None)
    n, t = frames.shape[:2]
    expected = net.predict(frames.reshape(n * t, 32, 32, 3).astype("float32"), verbose=0)
    np.testing.assert_allclose(features.reshape(n * t, -1), expected, rtol=2e-3, atol=2e-3)


def test_a_pretrained_backbone_trains_in_stages():
    from actionrec.pipeline import Data

    data = Data(Path("split.tsv"), {}, 3, {"shard-0000.h5": Path("f.h5")})
    scratch = plan_stages(config("efficientnetb0"), data)
    assert [(s.name, s.features) for s in scratch] == [("full", False)]
    frozen = plan_stages(config("model.keras"), data)
    assert [(s.name, s.features) for s in frozen] == [("frozen", True)]
    both = plan_stages(config("model.keras", finetune={"blocks": 1, "lr_factor": 0.1}), data)
    assert [(s.name, s.features, s.blocks) for s in both] == [
        ("frozen", True, 0),
        ("finetune", False, 1),
    ]
    assert both[1].lr == pytest.approx(0.0003)
    # conv3d reads feature maps: its frozen stage runs on frames.
    assert not plan_stages(config("model.keras", head="conv3d"), data)[0].features


def test_head_on_cached_features_predicts_on_frames_what_it_did_on_features(
    cached, backbone_file, tmp_path
):
    model, history = train(cached, config(backbone_file), tmp_path / "work")
    assert (history["stage"] == "frozen").all()
    test = clip_table(cached.split, "test")
    on_features = head_of(model).predict(load_features(cached, test).astype("float32"), verbose=0)
    from actionrec.evaluate import predict_split

    _, on_frames = predict_split(model, cached, "test", 4)
    np.testing.assert_array_equal(on_frames.argmax(axis=1), on_features.argmax(axis=1))
    np.testing.assert_allclose(on_frames, on_features, atol=2e-3)
    # The frozen stage left the backbone as the file has it, batch norm included.
    original = keras.saving.load_model(backbone_file)
    for a, b in zip(batch_norm_statistics(model), batch_norm_statistics(original), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("train_batch_norm", [False, True])
def test_fine_tuning_keeps_batch_norm_statistics_unless_told(backbone_file, train_batch_norm):
    from actionrec.model import set_backbone_trainable

    model = build_model(3, 4, 32, str(backbone_file))
    net = backbone_of(model).get_layer("test_backbone")
    before = batch_norm_statistics(model)
    conv = net.get_layer("block1_conv").get_weights()[0]
    trained = set_backbone_trainable(model, "all", train_batch_norm)
    # Two convolutions (kernel, bias), and with train_batch_norm two gamma/beta pairs.
    assert trained == (8 if train_batch_norm else 4)
    model.compile(keras.optimizers.Adam(0.01), "categorical_crossentropy")
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (8, 4, 32, 32, 3), dtype=np.uint8)
    model.fit(clips, np.eye(3)[rng.integers(0, 3, 8)], batch_size=4, epochs=1, verbose=0)
    same = [np.array_equal(a, b) for a, b in zip(batch_norm_statistics(model), before, strict=True)]
    assert all(same) != train_batch_norm
    assert not np.array_equal(net.get_layer("block1_conv").get_weights()[0], conv)


def test_only_the_top_blocks_fine_tune(backbone_file):
    from actionrec.model import set_backbone_trainable

    model = build_model(3, 4, 32, str(backbone_file))
    set_backbone_trainable(model, 1)
    trainable = {w.path.split("/")[-2] for w in backbone_of(model).trainable_weights}
    assert trainable == {"block2_conv"}
    assert set_backbone_trainable(model, 0) == 0 and not backbone_of(model).trainable_weights


def test_both_stages_run_and_the_frozen_weights_stay_unless_beaten(cached, backbone_file, tmp_path):
    cfg = config(backbone_file, finetune={"blocks": "all", "lr_factor": 0.5, "max_epochs": 2})
    model, history = train(cached, cfg, tmp_path / "work")
    assert history["stage"].tolist() == ["frozen"] * 2 + ["finetune"] * 2
    assert history["kept"].sum() == 1
    kept = history.loc[history["kept"]].iloc[0]
    frozen_best = history.loc[history["stage"] == "frozen", "val_loss"].min()
    if kept["stage"] == "finetune":
        assert kept["val_loss"] < frozen_best
    else:
        assert history.loc[history["stage"] == "finetune", "val_loss"].min() >= frozen_best
    # Batch norm of the pretrained backbone ran in inference mode in both stages.
    original = keras.saving.load_model(backbone_file)
    for a, b in zip(batch_norm_statistics(model), batch_norm_statistics(original), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_backbone_file_model_saves_and_loads_with_keras_alone(cached, backbone_file, tmp_path):
    model, _ = train(
        cached,
        config(backbone_file, head="gru", finetune={"blocks": 1, "max_epochs": 1}),
        tmp_path / "work",
        model_path=tmp_path / "model.keras",
    )
    assert_loads_with_keras_alone(model, tmp_path / "model.keras", backbone_file, tmp_path)


def save(model: keras.Model, path: Path) -> str:
    model.save(path)
    return str(path)


def bad_backbone_files(folder: Path) -> list[tuple[str, str, str]]:
    """(file, head, what the error must say) for each kind of bad file."""
    frame = keras.Input((None, None, 3))
    lam = keras.layers.GlobalAveragePooling2D()(keras.layers.Lambda(lambda t: t * 2)(frame))
    vector = keras.Input((12,))
    fixed = keras.Input((64, 64, 3))
    sequence = keras.layers.Conv2D(4, 3)(frame)
    sequence = keras.layers.Reshape((-1, 4))(sequence)
    gray = keras.Input((None, None, 1))
    junk = folder / "junk.keras"
    junk.write_text("not a model")
    pooled = make_backbone_file(folder / "pooled.keras")
    return [
        (str(folder / "absent.keras"), "average", "not found"),
        (str(junk), "average", "does not load as a Keras model"),
        (save(keras.Model(frame, lam), folder / "lambda.keras"), "average", "safe mode"),
        (
            save(keras.Model(vector, keras.layers.Dense(4)(vector)), folder / "v.keras"),
            "average",
            "takes input of shape (None, 12)",
        ),
        (
            save(
                keras.Model(gray, keras.layers.GlobalAveragePooling2D()(gray)), folder / "g.keras"
            ),
            "average",
            "RGB frames",
        ),
        (
            save(
                keras.Model(fixed, keras.layers.GlobalAveragePooling2D()(fixed)), folder / "f.keras"
            ),
            "average",
            "set extract.size to 64",
        ),
        (save(keras.Model(frame, sequence), folder / "seq.keras"), "average", "returns shape"),
        (str(pooled), "conv3d", "head conv3d needs a feature map"),
    ]


def test_each_bad_backbone_file_gets_a_clear_error(tmp_path):
    for path, head, message in bad_backbone_files(tmp_path):
        with pytest.raises((ValueError, FileNotFoundError)) as err:
            build_model(3, 4, 32, path, head)
        assert path in str(err.value) and message in str(err.value), (path, str(err.value))


def test_a_weights_file_loads_and_one_that_does_not_fit_is_named(tmp_path):
    keras.utils.set_random_seed(3)
    source = build_backbone("mobilenetv3small", 32, None, pooled=False)
    net = source.layers[-1]
    net.save_weights(tmp_path / "mobilenet.weights.h5")
    again = build_backbone("mobilenetv3small", 32, str(tmp_path / "mobilenet.weights.h5"))
    for a, b in zip(again.get_weights(), source.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="does not fit backbone efficientnetb0"):
        build_backbone("efficientnetb0", 32, str(tmp_path / "mobilenet.weights.h5"))


@pytest.fixture(scope="module")
def lite0() -> Path:
    return shared_file(LITE0, "the ImageNet-pretrained EfficientNet-Lite0 file")


def test_real_pretrained_backbone_on_real_clips(lite0, sample, tmp_path):
    """The real ImageNet backbone through the cache and both stages on real
    UCF101 clips: frames and features agree, batch norm stays as published."""
    from actionrec.evaluate import predict_split

    classes = ["BabyCrawling", "Punch", "PushUps"]
    data = real_clip_data(sample, classes, tmp_path, lite0, frames=4, size=64)
    frozen, _ = train(data, config(lite0, lr=0.001, batch_size=2), tmp_path / "work")
    test = clip_table(data.split, "test")
    on_features = head_of(frozen).predict(load_features(data, test).astype("float32"), verbose=0)
    _, on_frames = predict_split(frozen, data, "test", 2)
    np.testing.assert_array_equal(on_frames.argmax(axis=1), on_features.argmax(axis=1))
    np.testing.assert_allclose(on_frames, on_features, atol=5e-3)
    # Fine-tuning the top two blocks: batch norm keeps ImageNet's statistics.
    cfg = config(lite0, lr=0.001, batch_size=2, finetune={"blocks": 2, "max_epochs": 1})
    tuned, history = train(data, cfg, tmp_path / "work")
    assert history["stage"].tolist() == ["frozen", "frozen", "finetune"]
    original = keras.saving.load_model(lite0)
    for model in (frozen, tuned):
        for a, b in zip(batch_norm_statistics(model), batch_norm_statistics(original), strict=True):
            np.testing.assert_array_equal(a, b)


def test_the_search_on_cached_features_chooses_a_rate(cached, backbone_file, tmp_path):
    from actionrec.search import SearchSettings, bayes_search, choose
    from actionrec.train import run_trial

    settings = SearchSettings.from_config(
        {"low": 1e-4, "high": 1e-1, "epochs": 3, "bayes": {"n_calls": 3, "n_initial_points": 3}}
    )
    section = {"backbone": str(backbone_file), "weights": "none", "batch_size": 4}

    def trial(lr):
        return run_trial(lr, cached, section, settings, tmp_path / "trial", seed=0)

    table = bayes_search(trial, settings, 0, tmp_path / "bayes")
    assert len(table) == 3 and table["val_loss"].nunique() == 3
    best = choose({"bayes": table})
    assert best["lr"] == table.loc[table["val_loss"].idxmin(), "lr"]


def test_features_of_another_backbone_or_other_frames_are_refused(
    cached, backbone_file, tiny_data, tmp_path
):
    from actionrec.features import check_cache
    from actionrec.train import environment, resolved_devices

    check_cache(cached.features, cached.shards, str(backbone_file), "none")
    # Another file at the same path, written with an older modification time.
    other = tmp_path / backbone_file.name
    shutil.copy2(backbone_file, other)
    before = environment(config(other))
    stat = other.stat()
    make_backbone_file(other, seed=1)
    os.utime(other, ns=(stat.st_atime_ns, stat.st_mtime_ns - 10**9))
    with pytest.raises(ValueError, match=r"features of another backbone or code.*backbone_sha256"):
        check_cache(cached.features, cached.shards, str(other), "none")
    # The resume state of a training on it changes with the file's content; it
    # also records the devices the training resolves to and the libraries.
    assert environment(config(other))["backbone"] != before["backbone"]
    assert before["devices"] == resolved_devices(config(other))
    assert set(before["devices"]) == {"gpus", "replicas", "mixed_precision", "xla"}
    assert before["libraries"]["tensorflow"] == tf.__version__
    # Frames re-extracted with other clips under the same shard name.
    name = min(cached.shards)
    shard = shutil.copy2(cached.shards[name], tmp_path / name)
    with h5py.File(shard, "r+") as f:
        ids = f["clip_id"].asstr()[()]
        f["clip_id"][0], f["clip_id"][1] = ids[1], ids[0]
    with pytest.raises(ValueError, match=f"computed from other frames than {shard}"):
        check_cache(cached.features, {**cached.shards, name: shard}, str(backbone_file), "none")


def test_a_rewritten_shard_is_other_data_for_resume(tiny_data, tmp_path):
    from actionrec.pipeline import data_fingerprint

    data = tiny_data["data"]
    shards = {n: shutil.copy2(p, tmp_path / n) for n, p in data.shards.items()}
    copy = Data(data.split, {n: Path(p) for n, p in shards.items()}, data.num_classes)
    before = data_fingerprint(copy)
    name = min(shards)
    stat = os.stat(shards[name])
    os.utime(shards[name], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert data_fingerprint(copy) != before


@pytest.mark.parametrize("per_segment", [1, 3])
def test_features_streamed_from_the_cache_are_those_held_in_memory(tmp_path, per_segment):
    """The in-memory path takes a batch at a time, the streamed one a clip at
    a time: the same clips, drawn frames and views either way."""
    from actionrec.pipeline import Data, make_dataset
    from actionrec.tables import write_tsv

    n, frames, dim = 22, 4, 5
    rng = np.random.default_rng(0)
    with h5py.File(tmp_path / "shard-0000.h5", "w") as f:
        f["features"] = rng.normal(size=(n, frames * per_segment, dim)).astype(np.float16)
        f["clip_id"] = [f"c{i}" for i in range(n)]
        f.attrs.update(frames=frames, frames_per_segment=per_segment, size=32)
    split = pd.DataFrame(
        {
            "clip_id": [f"c{i}" for i in range(n)],
            "shard": "shard-0000.h5",
            "index": range(n),
            "label": [i % 3 for i in range(n)],
            "group": [f"g{i}" for i in range(n)],
            "split": ["train"] * 16 + ["val"] * 6,
        }
    )
    write_tsv(split, tmp_path / "split.tsv")
    data = Data.of(tmp_path / "split.tsv", [], 3, [tmp_path / "shard-0000.h5"])

    def batches(split, **options):
        ds = make_dataset(data, split, 4, features=True, seed=3, **options)
        return [(x.numpy(), y.numpy()) for x, y in ds]

    for split, options in (
        ("train", {"shuffle": True, "epochs": (0, 2)}),
        ("val", {"offset": list(range(per_segment))}),
        ("val", {}),
    ):
        held, streamed = batches(split, **options), batches(split, memory_mb=1e-9, **options)
        assert len(held) == len(streamed) >= 2
        for (x, y), (xs, ys) in zip(held, streamed, strict=True):
            np.testing.assert_array_equal(x, xs)
            np.testing.assert_array_equal(y, ys)


def test_heads_on_cached_features_train_at_their_own_batch(
    cached, backbone_file, tmp_path, caplog, capsys
):
    from actionrec.pipeline import steps_per_epoch

    cfg = config(
        backbone_file,
        feature_batch_size=8,
        max_epochs=1,
        finetune={"blocks": "all", "lr": 1e-5, "max_epochs": 1},
    )
    with caplog.at_level(logging.INFO):
        _, history = train(cached, cfg, tmp_path / "work")
    assert "batch 4 (8 on cached features)" in caplog.text
    assert history["stage"].tolist() == ["frozen", "finetune"]
    # Each stage ran its own batch's steps: the frozen stage 8 clips a step.
    steps = {b: steps_per_epoch(cached.split, "train", b, 1.0, 1) for b in (4, 8)}
    assert steps[8] < steps[4]
    progress = capsys.readouterr().out  # Keras's epoch lines: steps/steps
    assert progress.index(f"{steps[8]}/{steps[8]} ") < progress.index(f"{steps[4]}/{steps[4]} ")
