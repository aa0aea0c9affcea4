import subprocess
import sys

import keras
import numpy as np
import pytest

from actionrec.model import (
    all_layers,
    backbone_of,
    build_backbone,
    build_model,
    caffe_preprocessing,
    head_of,
)

T, S, C = 4, 32, 5


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return build_model(C, T, S, "efficientnetb0")


def clips(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, T, S, S, 3), dtype=np.uint8)


def test_uint8_clips_in_probabilities_out(model):
    assert model.input.dtype == "uint8" and tuple(model.input.shape) == (None, T, S, S, 3)
    p = model.predict(clips(3), verbose=0)
    assert p.shape == (3, C)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)


def test_average_head_is_blind_to_temporal_order(model):
    # Large classifier weights, so that frame logits differ visibly from frame to frame.
    head = head_of(model)
    dense = head.get_layer("frame_logits")
    kernel, bias = dense.get_weights()
    dense.set_weights([np.random.default_rng(5).normal(0, 1e4, kernel.shape), bias])
    per_frame = keras.Model(head.input, dense.output)
    x = clips(2, seed=1)
    features = backbone_of(model).predict(x.reshape(-1, S, S, 3).astype("float32"), verbose=0)
    features = features.reshape(2, T, -1)
    logits = per_frame.predict(features, verbose=0)
    assert logits.std(axis=1).mean() > 1e-3
    np.testing.assert_allclose(
        per_frame.predict(features[:, ::-1], verbose=0), logits[:, ::-1], rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(
        model.predict(x[:, ::-1], verbose=0), model.predict(x, verbose=0), atol=1e-5
    )
    dense.set_weights([kernel, bias])


def test_resnet_preprocessing_matches_keras():
    frames = np.random.default_rng(3).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    expected = keras.applications.resnet50.preprocess_input(frames.copy())
    np.testing.assert_allclose(np.asarray(caffe_preprocessing()(frames)), expected, atol=1e-4)


def test_backbone_parameter_counts_match_keras_figures():
    # Published sizes without top: EfficientNetB0 4.05 M, ResNet50 23.59 M.
    head = 1280 * C + C
    assert build_model(C, T, S, "efficientnetb0").count_params() - head == 4_049_571
    resnet = build_model(C, T, S, "resnet50")
    assert resnet.count_params() - (2048 * C + C) - 12 == 23_587_712  # 12: the frozen BGR layer


def test_unknown_choices_are_refused():
    with pytest.raises(ValueError, match="backbone must be one of"):
        build_model(C, T, S, "vgg")
    with pytest.raises(ValueError, match="head must be one of"):
        build_model(C, T, S, head="lstm")
    with pytest.raises(FileNotFoundError, match="weights file"):
        build_model(C, T, S, weights="/no/such/weights.h5")


def test_saved_model_needs_nothing_but_keras(model, tmp_path):
    x = clips(3, seed=4)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "p.npy", model.predict(x, verbose=0))
    model.save(tmp_path / "model.keras")
    code = (
        "import sys, numpy as np, keras\n"
        "assert not any(m.startswith('actionrec') for m in sys.modules)\n"
        f"m = keras.models.load_model({str(tmp_path / 'model.keras')!r})\n"
        f"p = m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0)\n"
        f"print(float(np.abs(p - np.load({str(tmp_path / 'p.npy')!r})).max()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.strip().splitlines()[-1]) < 1e-6


def test_flops_per_frame_match_the_published_figures():
    from actionrec.compare import flops_per_frame

    # Published multiply-adds at 224 x 224: EfficientNetB0 0.39 G, ResNet50 3.9 G,
    # MobileNetV3Small 0.056 G; FLOPs count 2 per multiply-add.
    for name, macs in (
        ("efficientnetb0", 0.39e9),
        ("resnet50", 3.9e9),
        ("mobilenetv3small", 0.056e9),
    ):
        got = flops_per_frame(build_backbone(name, 224, None)) / 2
        assert got == pytest.approx(macs, rel=0.05), name


def test_group_norm_replaces_every_batch_norm_and_saves(tmp_path):
    model = build_model(C, T, S, "efficientnetb0", norm="group")
    inner = list(all_layers(backbone_of(model)))
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in inner)
    assert sum(isinstance(layer, keras.layers.GroupNormalization) for layer in inner) == 49
    model.save(tmp_path / "gn.keras")
    clip = np.random.default_rng(0).integers(0, 256, (2, T, S, S, 3), dtype=np.uint8)
    again = keras.saving.load_model(tmp_path / "gn.keras")
    np.testing.assert_array_equal(model.predict(clip, verbose=0), again.predict(clip, verbose=0))
    with pytest.raises(ValueError, match="norm: group"):
        build_model(C, T, S, "efficientnetb0", weights="imagenet", norm="group")


def test_imagenet_weights_are_saved_whole_under_a_lock(tmp_path, monkeypatch):
    import fcntl

    import keras

    from actionrec.model import fetch_imagenet_weights

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    held = []

    def fake(include_top, weights):
        # The download runs while the lock in Keras's cache folder is held.
        with open(tmp_path / "keras/models/.imagenet-download.lock") as other:
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held.append(True)
        assert (include_top, weights) == (False, "imagenet")
        x = keras.Input((8, 8, 3))
        return keras.Model(x, keras.layers.Conv2D(2, 3)(x))

    monkeypatch.setattr(keras.applications, "MobileNetV3Small", fake)
    out = tmp_path / "w/mobilenetv3small-imagenet.weights.h5"
    fetch_imagenet_weights("mobilenetv3small", out)
    assert held == [True] and out.stat().st_size > 0
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no part file left


def test_fetched_efficientnet_weights_give_the_imagenet_networks_input_scaling(tmp_path):
    """keras.applications' EfficientNet built with weights="imagenet" holds one
    more Rescaling after its Normalization than one built to load a weights
    file; folded into the variance, the saved weights give the same stem."""
    import math

    import keras

    from actionrec.model import fold_rescaling_into_normalization

    def plain():
        return keras.applications.EfficientNetB0(
            include_top=False, weights=None, input_shape=(32, 32, 3)
        )

    config = plain().get_config()
    kinds = [layer["class_name"] for layer in config["layers"]]
    i = kinds.index("Normalization")  # its name depends on the layers built before
    name = config["layers"][i]["config"]["name"]
    history = {"shape": [None, 32, 32, 3], "dtype": "float32", "keras_history": [name, 0, 0]}
    scale = [1 / math.sqrt(s) for s in (0.229, 0.224, 0.225)]  # as Keras adds it for ImageNet
    config["layers"].insert(
        i + 1,
        {
            "module": "keras.layers",
            "class_name": "Rescaling",
            "registered_name": None,
            "name": "imagenet_rescaling",
            "config": {"name": "imagenet_rescaling", "scale": scale, "offset": 0.0},
            "inbound_nodes": [
                {"args": [{"class_name": "__keras_tensor__", "config": history}], "kwargs": {}}
            ],
        },
    )
    config["layers"][i + 2]["inbound_nodes"][0]["args"][0]["config"]["keras_history"][0] = (
        "imagenet_rescaling"
    )
    imagenet = keras.Model.from_config(config)
    norm = imagenet.get_layer(name)
    count = norm.get_weights()[2]
    norm.set_weights([np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]) ** 2, count])
    norm.finalize_state()
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")

    def stem(model):
        return keras.Model(model.input, model.get_layer("stem_conv").output).predict(x, verbose=0)

    expected = stem(imagenet)
    imagenet.save_weights(tmp_path / "raw.weights.h5")
    unfolded = plain()
    unfolded.load_weights(tmp_path / "raw.weights.h5")
    assert np.abs(stem(unfolded) - expected).max() > 0.1  # the scaling Keras leaves out
    assert fold_rescaling_into_normalization(imagenet) == 1
    imagenet.save_weights(tmp_path / "folded.weights.h5")
    folded = plain()
    folded.load_weights(tmp_path / "folded.weights.h5")
    np.testing.assert_allclose(stem(folded), expected, atol=1e-5)
