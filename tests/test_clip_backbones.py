"""Clip backbones: video networks (as I3D) that see a whole clip and return
T' feature steps, given as Keras model files. With a tiny clip backbone the
test builds: the feature cache of every view, heads on its steps, both
training stages, a saved model that needs Keras alone, Grad-CAM over the
steps' maps and every bad file's error; with the real Kinetics-400 I3D on
real UCF101 clips where ../shared has them."""

from pathlib import Path

import h5py
import keras
import numpy as np
import pandas as pd
import pytest
from test_transfer import config, save

from actionrec.features import cache_features
from actionrec.model import (
    backbone_of,
    build_backbone,
    build_model,
    head_of,
    is_clip_backbone,
    set_backbone_trainable,
)
from actionrec.pipeline import Data, clip_table, load_features
from actionrec.train import train
from conftest import (
    REPO,
    assert_loads_with_keras_alone,
    make_backbone_file,
    make_clip_backbone_file,
    real_clip_data,
    shared_file,
)

I3D = REPO.parent / "shared/models/i3d-kinetics400/backbone.keras"
T, K, S = 4, 2, 32  # frames, stored frames a segment, side


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory) -> Path:
    return make_clip_backbone_file(tmp_path_factory.mktemp("clipnet") / "clipnet.keras")


@pytest.fixture(scope="module")
def two_views(tiny_data, tmp_path_factory) -> Data:
    """tiny_data's clips stored with two frames a segment, in one shard."""
    from actionrec.extract import extract_shard
    from actionrec.split import make_split
    from actionrec.tables import read_tsv, write_tsv

    root = tmp_path_factory.mktemp("two_views")
    manifest = read_tsv(tiny_data["manifest"]).assign(shard="shard-0000")
    report = extract_shard(
        manifest,
        root / "shards/shard-0000.h5",
        root / "report.tsv",
        frames=T,
        size=S,
        frames_per_segment=K,
    )
    split, _ = make_split(report, "group", seed=0)
    write_tsv(split, root / "split.tsv")
    return Data.of(root / "split.tsv", root / "shards", 3)


@pytest.fixture(scope="module")
def cached(two_views, clip_file, tmp_path_factory) -> Data:
    folder = tmp_path_factory.mktemp("clip_features")
    for name, shard in two_views.shards.items():
        cache_features(shard, folder / name, str(clip_file), "none")
    return two_views.with_features(sorted(folder.glob("shard-*.h5")))


@pytest.mark.parametrize("head", ["average", "temporal_conv", "gru", "attention"])
@pytest.mark.parametrize("maps", [False, True])
def test_a_clip_backbone_gives_the_head_its_steps(clip_file, tmp_path, head, maps):
    path = make_clip_backbone_file(tmp_path / "net.keras", maps=maps) if maps else clip_file
    model = build_model(3, 8, S, str(path), head)
    assert is_clip_backbone(backbone_of(model))
    assert tuple(backbone_of(model).output.shape) == (None, 4, 16)  # T' = ceil(8 / 2)
    assert tuple(head_of(model).input.shape) == (None, 4, 16)
    clips = np.random.default_rng(0).integers(0, 256, (2, 8, S, S, 3), dtype=np.uint8)
    probs = model.predict(clips, verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    # The backbone's steps are the file's network on the clip, as floats.
    net = keras.saving.load_model(path)
    expected = np.asarray(net.predict(clips.astype("float32"), verbose=0))
    if maps:
        expected = expected.mean(axis=(2, 3))
    got = backbone_of(model).predict(clips.astype("float32"), verbose=0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    if maps:  # the mean over space is saved with the model
        model.save(tmp_path / "model.keras")
        again = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
        np.testing.assert_allclose(again.predict(clips, verbose=0), probs, atol=1e-6)


def test_conv3d_reads_a_clip_backbones_maps_over_steps(tmp_path):
    path = make_clip_backbone_file(tmp_path / "maps.keras", maps=True)
    model = build_model(3, 8, S, str(path), "conv3d")
    assert tuple(head_of(model).input.shape) == (None, 4, 8, 8, 16)


def test_fine_tuning_a_clip_backbone_unfreezes_its_top_units(clip_file):
    model = build_model(3, T, S, str(clip_file))
    assert set_backbone_trainable(model, 1) == 1  # Mixed_2b's kernel; batch norm stays frozen
    trainable = {w.path.split("/")[-2] for w in backbone_of(model).trainable_weights}
    assert trainable == {"Mixed_2b_conv"}
    set_backbone_trainable(model, "all", train_batch_norm=True)
    assert len(backbone_of(model).trainable_weights) == 4


def test_the_cache_holds_every_views_steps_in_the_frames_order(cached, clip_file):
    name = sorted(cached.features)[0]
    with h5py.File(cached.features[name]) as f, h5py.File(cached.shards[name]) as s:
        features, stored = f["features"][()], s["frames"][()]
        attrs = dict(f.attrs)
    assert features.shape == (len(stored), 2 * K, 16)  # T' = 2 steps x K views
    assert (attrs["frames"], attrs["clip_frames"], attrs["frames_per_segment"]) == (2, T, K)
    assert attrs["backbone_input"] == "clip" and attrs["seconds"] > 0
    net = build_backbone(str(clip_file), S, None, frames=T)
    for k in range(K):
        view = net.predict(stored[:, k::K].astype("float32"), verbose=0)  # [n, T', F]
        np.testing.assert_allclose(features[:, k::K], view, rtol=3e-3, atol=3e-3)


def test_a_head_on_cached_steps_predicts_on_frames_what_it_did_on_features(
    cached, clip_file, tmp_path
):
    from actionrec.evaluate import predict_split

    model, history = train(cached, config(clip_file), tmp_path / "work")
    assert (history["stage"] == "frozen").all()
    test = clip_table(cached.split, "test")
    steps = load_features(cached, test)[:, K // 2 :: K].astype("float32")  # the middle view
    on_features = head_of(model).predict(steps, verbose=0)
    _, on_frames = predict_split(model, cached, "test", 4)
    np.testing.assert_allclose(on_frames, on_features, atol=3e-3)
    # Two views averaged, from the cache and from the frames alike.
    _, both = predict_split(model, cached, "test", 4, views=2)
    _, both_cached = predict_split(head_of(model), cached, "test", 4, views=2, features=True)
    np.testing.assert_allclose(both, both_cached, atol=3e-3)


def test_a_search_trial_trains_a_head_on_the_cached_steps(cached, clip_file, tmp_path):
    from actionrec.search import SearchSettings
    from actionrec.train import run_trial

    settings = SearchSettings.from_config({"epochs": 2})
    section = {"backbone": str(clip_file), "weights": "none", "batch_size": 4, "head": "gru"}
    result = run_trial(0.003, cached, section, settings, tmp_path / "trial", seed=0)
    assert np.isfinite(result["val_loss"]) and result["epoch"] >= 1


def test_both_stages_train_and_the_model_needs_keras_alone(cached, clip_file, tmp_path):
    cfg = config(clip_file, head="gru", finetune={"blocks": 1, "max_epochs": 1})
    model, history = train(cached, cfg, tmp_path / "work", model_path=tmp_path / "model.keras")
    assert history["stage"].tolist() == ["frozen", "frozen", "finetune"]
    assert_loads_with_keras_alone(model, tmp_path / "model.keras", clip_file, tmp_path)


def test_a_killed_clip_training_resumes_to_the_same_weights(tiny_data, clip_file, tmp_path):
    """Killed in its frozen stage (on frames), the rerun resumes that stage
    and fine-tunes as an uninterrupted run does: the fit after a resumed one
    starts at its own first epoch (for frame backbones alike)."""
    from test_train import assert_same_weights, finish, kill_after_a_backup, start

    options = {"backbone": str(clip_file), "finetune": {"blocks": 1, "max_epochs": 1}}
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    whole.mkdir(), parts.mkdir()
    finish(start(tiny_data, whole, **options), whole)
    proc = start(tiny_data, parts, **options)
    assert kill_after_a_backup(proc, parts / "work/frozen/backup/training_metadata.json") >= 1
    log = finish(start(tiny_data, parts, **options), parts)
    assert "resuming after epoch" in log
    a, b = (
        pd.read_csv(out / "history.tsv", sep="\t").drop(columns="seconds") for out in (whole, parts)
    )
    assert a["stage"].tolist() == ["frozen"] * 3 + ["finetune"]
    pd.testing.assert_frame_equal(a, b)
    assert_same_weights(parts / "model.keras", whole / "model.keras")


@pytest.mark.parametrize("maps", [False, True])
def test_grad_cam_maps_every_frame_through_its_step(clip_file, tmp_path, maps):
    from actionrec.explain import explain_figure, grad_cam, scores_over_time, step_of_frames

    path = make_clip_backbone_file(tmp_path / "maps.keras", maps=True) if maps else clip_file
    model = build_model(3, 8, S, str(path))
    clip = np.random.default_rng(2).integers(0, 256, (8, S, S, 3), dtype=np.uint8)
    cams = grad_cam(model, clip, [0, 1])
    assert cams.shape == (2, 8, S, S) and cams.max() <= 1 and cams.min() >= 0
    assert step_of_frames(8, 4).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    for a, b in ((0, 1), (2, 3), (4, 5), (6, 7)):  # the frames of one step share its map
        np.testing.assert_array_equal(cams[:, a], cams[:, b])
    over_time, meaning = scores_over_time(model, clip)
    assert over_time.shape == (8, 3) and "per-step" in meaning
    info = explain_figure(model, clip, ["a", "b", "c"], tmp_path / "x.png", true=2)
    assert (tmp_path / "x.png").stat().st_size > 10_000 and info["true"] == "c"
    gru = build_model(3, 8, S, str(clip_file), "gru")
    assert scores_over_time(gru, clip)[0].shape == (8, 3)  # occlusion, frame by frame


def test_flops_of_a_clip_backbone_count_its_3d_convolutions(clip_file, tmp_path):
    from actionrec.compare import flops_per_clip

    net = backbone_of(build_model(3, 8, S, str(clip_file)))
    # Conv3d_1a: 3x3x3x3 -> 8 at 4x16x16; Mixed_2b: 3x3x3x8 -> 16 at 4x8x8.
    assert flops_per_clip(net, 8) == 2 * (27 * 3 * 8 * 4 * 16 * 16 + 27 * 8 * 16 * 4 * 8 * 8)
    frame = backbone_of(build_model(3, 8, S, str(make_backbone_file(tmp_path / "f.keras"))))
    # A frame backbone's clip is T of its frames: block1 3x3x3 -> 16 at 16x16, block2 at 8x8.
    assert flops_per_clip(frame, 8) == 8 * 2 * (9 * 3 * 16 * 16 * 16 + 9 * 16 * 32 * 8 * 8)


def bad_clip_backbone_files(folder: Path) -> list[tuple[str, int, str, str]]:
    """(file, frames, head, what the error must say) for each kind of bad clip file."""
    free = keras.Input((None, None, None, 3))
    gray = keras.Input((None, None, None, 1))
    fixed_t = keras.Input((16, None, None, 3))
    fixed_s = keras.Input((None, 64, 64, 3))
    pooled = keras.layers.GlobalAveragePooling3D()
    conv = keras.layers.Conv3D(4, 3, strides=2, padding="same")
    steps = keras.layers.Reshape((-1, 4))(
        keras.layers.AveragePooling3D((1, 256, 256), padding="same")(conv(free))
    )
    return [
        (save(keras.Model(gray, pooled(gray)), folder / "gray.keras"), 4, "average", "RGB"),
        (
            save(keras.Model(free, pooled(conv(free))), folder / "one.keras"),
            4,
            "average",
            "returns feature steps over time",
        ),
        (
            save(keras.Model(fixed_t, keras.layers.Reshape((-1, 3))(fixed_t)), folder / "t.keras"),
            4,
            "average",
            "set extract.frames to 16",
        ),
        (
            save(keras.Model(fixed_s, keras.layers.Reshape((-1, 3))(fixed_s)), folder / "s.keras"),
            4,
            "average",
            "set extract.size to 64",
        ),
        (save(keras.Model(free, steps), folder / "steps.keras"), 4, "conv3d", "head conv3d"),
        (
            str(make_clip_backbone_file(folder / "short.keras", shortest=5)),
            4,
            "average",
            "needs at least 5 frames",
        ),
    ]


def test_each_bad_clip_backbone_file_gets_a_clear_error(tmp_path):
    for path, frames, head, message in bad_clip_backbone_files(tmp_path):
        with pytest.raises(ValueError) as err:
            build_model(3, frames, S, path, head)
        assert path in str(err.value) and message in str(err.value), (path, str(err.value))


@pytest.fixture(scope="module")
def i3d() -> Path:
    return shared_file(I3D, "the Kinetics-400 I3D file")


def test_real_i3d_on_real_clips(i3d, sample, tmp_path):
    """The real Kinetics-400 I3D through the cache, a head and a saved model
    on real UCF101 clips (video-pretrained: Kinetics holds these actions)."""
    from actionrec.evaluate import predict_split

    classes = ["BenchPress", "Bowling", "PushUps"]
    data = real_clip_data(sample, classes, tmp_path, i3d, frames=9, size=96)
    with h5py.File(data.features["shard-0000.h5"]) as f:
        assert f["features"].shape[1:] == (2, 1024)  # T' = ceil(9 / 8)
    model, _ = train(data, config(i3d, lr=0.003, batch_size=2), tmp_path / "work")
    test = clip_table(data.split, "test")
    on_features = head_of(model).predict(load_features(data, test).astype("float32"), verbose=0)
    _, on_frames = predict_split(model, data, "test", 2)
    np.testing.assert_allclose(on_frames, on_features, atol=5e-3)
    assert model.count_params() > 12_000_000


CLIP_YAML = """train: {backbone: clip.keras, lr: 0.003, finetune: {blocks: 1, max_epochs: 1}}
search: {methods: []}
compare: {backbones: [clip.keras, frame.keras], heads: [average]}
explain: {clips: 1}
extract: {clips_per_shard: 20} # one shard: one feature job a backbone
"""


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory) -> Path:
    """The workflow with a clip backbone file as train.backbone, compared
    with a frame backbone file, run to the end and to its exports."""
    import shutil

    from conftest import copy_workflow, snakemake

    work = copy_workflow(tmp_path_factory.mktemp("clip_wf"))
    shutil.copy(REPO / "tests/tiny.yaml", work / "tiny.yaml")
    (work / "clip.yaml").write_text(CLIP_YAML)
    make_clip_backbone_file(work / "clip.keras")
    make_backbone_file(work / "frame.keras")
    args = ("--configfile", "tiny.yaml", "clip.yaml")
    out = snakemake(work, "all", "results/export/summary.tsv", *args, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    return work


@pytest.mark.workflow
def test_the_workflow_runs_a_clip_backbone_end_to_end(clip_run):
    import json

    from actionrec.tables import read_tsv

    history = read_tsv(clip_run / "results/final/history.tsv")
    assert set(history["stage"]) == {"frozen", "finetune"}
    metrics = json.loads((clip_run / "results/final/metrics.json").read_text())
    assert 0 <= metrics["accuracy"] <= 1
    with h5py.File(clip_run / "results/features/file-clip/shard-0000.h5") as f:
        assert f["features"].shape[1:] == (2 * 2, 16)  # T' = 2 steps x 2 views
    assert list((clip_run / "results/final/explain").glob("*.png"))
    card = (clip_run / "results/final/model_card.md").read_text()
    assert "a video network, applied to the whole clip" in card
    assert "Weights at the start: the backbone file's own" in card
    # Frame and clip backbones side by side, on the same split.
    summary = read_tsv(clip_run / "results/compare/summary.tsv").set_index("backbone")
    assert summary.loc["file-clip", "backbone_input"] == "clip"
    assert summary.loc["file-frame", "backbone_input"] == "frame"
    assert (summary["flops_per_clip"] > 0).all() and (summary["feature_seconds_per_clip"] > 0).all()
    exports = read_tsv(clip_run / "results/export/summary.tsv").set_index("format")
    assert set(exports.index) == {"keras", "saved_model", "litert", "onnx", "openvino"}
    # LiteRT has Conv3D but no 3D pooling of its own: the table says so.
    assert "AvgPool3D" in exports.loc["litert", "error"]
    assert exports.drop(index="litert")["within_tolerance"].all(), exports.to_string()


@pytest.mark.workflow
def test_a_clip_model_classifies_videos_a_stream_and_explains_one(
    clip_run, tmp_path, actionrec_here
):
    from actionrec.tables import read_tsv

    videos = read_tsv(clip_run / "results/data/manifest.tsv")["path"][:2].tolist()
    model = ["--model", str(clip_run / "results/final/model.keras")]

    def run(*args):
        out = actionrec_here(*args, *model, cwd=clip_run)
        assert out.returncode == 0, out.stderr[-2000:]
        return out

    run("predict", *videos, "--output", str(tmp_path / "p.tsv"))
    table = read_tsv(tmp_path / "p.tsv")
    assert (table["status"] == "ok").all() and len(table) == 2
    stream = ("--stream", videos[0], "--window-seconds", "0.2", "--step-seconds", "0.1")
    run("predict", *stream, "--output", str(tmp_path / "s.tsv"))
    assert len(read_tsv(tmp_path / "s.tsv")) >= 1
    run("explain", videos[0], "--out", str(tmp_path / "why.png"))
    assert (tmp_path / "why.png").read_bytes()[:4] == b"\x89PNG"


def test_backbone_files_follow_mixed_precision(clip_file, tmp_path):
    """A model file saves each layer's dtype; under mixed precision its
    layers compute in float16 all the same (3D pooling excepted), and the
    probabilities stay float32."""
    from actionrec.model import all_layers

    frame_file = make_backbone_file(tmp_path / "frame.keras")
    clips = np.random.default_rng(0).integers(0, 256, (2, T, S, S, 3), dtype=np.uint8)
    expected = [
        build_model(3, T, S, str(p)).predict(clips, verbose=0) for p in (clip_file, frame_file)
    ]
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        for path, reference in zip((clip_file, frame_file), expected, strict=True):
            model = build_model(3, T, S, str(path))
            weighted = [layer for layer in all_layers(backbone_of(model)) if layer.weights]
            assert {layer.compute_dtype for layer in weighted} == {"float16"}, path
            probs = model.predict(clips, verbose=0)
            assert probs.dtype == np.float32
            np.testing.assert_allclose(probs, reference, atol=2e-2)
    finally:
        keras.mixed_precision.set_global_policy("float32")
