"""Temporal sampling as TSN does it, multi-view testing, and the fine-tuning
stage's optimizer and collapse guard. On shards written here whose stored
values say which stored frame they are, so that every draw can be read back."""

import h5py
import keras
import numpy as np
import pandas as pd
import pytest

from actionrec.catalog import check_disk
from actionrec.evaluate import predict_split
from actionrec.model import build_head
from actionrec.pipeline import Data, make_dataset, read_clip, view_offsets
from actionrec.predict import view_scores
from actionrec.resume import fit_resumable
from actionrec.tables import write_tsv
from actionrec.train import Stage, TrainConfig, make_optimizer

T, K, S, N = 4, 3, 8, 12


def collect(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


@pytest.fixture(scope="module")
def numbered(tmp_path_factory) -> Data:
    """One shard of N clips, T segments x K stored frames, whose frame j of
    clip c holds the value j everywhere, and whose cached feature j of clip c
    is [j, c, random...]: what a stream returns tells which frames it took."""
    root = tmp_path_factory.mktemp("numbered")
    rng = np.random.default_rng(0)
    positions = np.arange(T * K)
    frames = np.broadcast_to(positions[None, :, None, None, None], (N, T * K, S, S, 3))
    features = rng.normal(size=(N, T * K, 6)).astype(np.float16)
    features[:, :, 0] = positions[None, :]
    features[:, :, 1] = np.arange(N)[:, None]
    attrs = {"frames": T, "frames_per_segment": K, "stored_frames": T * K, "size": S}
    for folder, name, values in (("shards", "frames", frames), ("features", "features", features)):
        (root / folder).mkdir()
        with h5py.File(root / folder / "shard-0000.h5", "w") as f:
            f[name] = values.astype(np.uint8 if name == "frames" else np.float16)
            f["label"] = np.arange(N) % 3
            f.attrs.update(attrs)
    split = pd.DataFrame(
        {
            "clip_id": [f"c{i}" for i in range(N)],
            "shard": "shard-0000.h5",
            "index": range(N),
            "label": np.arange(N) % 3,
            "group": [f"g{i}" for i in range(N)],
            "split": ["train"] * 6 + ["val"] * 3 + ["test"] * 3,
        }
    )
    write_tsv(split, root / "split.tsv")
    return Data.of(root / "split.tsv", root / "shards", 3, root / "features")


def drawn(data, *, features, first=0, stop=3, seed=0):
    """Per epoch, the stored frame each train clip got in each segment, by clip."""
    ds = make_dataset(
        data, "train", 4, features=features, shuffle=True, seed=seed, epochs=(first, stop)
    )
    x = collect(ds)[0]
    if features:
        frame, clip = x[..., 0], x[:, 0, 1]
    else:
        frame, clip = x[:, :, 0, 0, 0].astype(float), None
    per_epoch = []
    for e in range(stop - first):
        part = slice(6 * e, 6 * (e + 1))
        order = np.argsort(clip[part]) if clip is not None else slice(None)
        per_epoch.append(frame[part][order])
    return per_epoch


@pytest.mark.parametrize("features", [True, False], ids=["features", "frames"])
def test_training_draws_one_frame_per_segment_anew_every_epoch(numbered, features):
    epochs = drawn(numbered, features=features)
    segment = np.arange(T) * K
    for frames in epochs:
        offsets = frames - segment
        # One stored frame of each segment, in order.
        assert frames.shape == (6, T) and ((offsets >= 0) & (offsets < K)).all()
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    # Over a few epochs every stored position of a segment comes up.
    assert len(np.unique(np.concatenate(epochs) - segment)) == K
    # Resumed at epoch 2, the stream draws what an uninterrupted one did.
    np.testing.assert_array_equal(drawn(numbered, features=features, first=2)[0], epochs[2])
    assert not np.array_equal(drawn(numbered, features=features, seed=1)[0], epochs[0])


def test_validation_reads_one_fixed_view(numbered):
    middle = collect(make_dataset(numbered, "val", 2, features=True))[0][..., 0]
    np.testing.assert_array_equal(middle, np.tile(np.arange(T) * K + K // 2, (3, 1)))
    first = collect(make_dataset(numbered, "val", 2, offset=0))[0][:, :, 0, 0, 0]
    np.testing.assert_array_equal(first, np.tile(np.arange(T) * K, (3, 1)))
    np.testing.assert_array_equal(
        read_clip(numbered, "shard-0000.h5", 0, 2)[:, 0, 0, 0], first[0] + 2
    )
    with pytest.raises(ValueError, match="offset 3"):
        make_dataset(numbered, "val", 2, offset=K)


def test_views_spread_over_the_stored_frames_and_are_checked():
    assert view_offsets(1, 4) == [2] and view_offsets(4, 4) == [0, 1, 2, 3]
    assert view_offsets(2, 4) == [1, 3] and view_offsets(1, 1) == [0]
    with pytest.raises(ValueError, match="evaluate.views to at most 2"):
        view_offsets(3, 2)


def test_a_multi_view_prediction_is_the_mean_of_its_single_views(numbered):
    keras.utils.set_random_seed(0)
    head = build_head(3, T, (6,), "gru")
    clips, probs = predict_split(head, numbered, "test", 2, views=K, features=True)
    singles = []
    for offset in range(K):
        x = collect(make_dataset(numbered, "test", 2, features=True, offset=offset))[0]
        singles.append(np.asarray(head.predict(x, verbose=0), np.float64))
    assert len(clips) == 3 and not np.allclose(singles[0], singles[1])
    np.testing.assert_allclose(probs, np.mean(singles, axis=0), rtol=1e-6)
    # The same rule for windows of new videos: T x V frames, view v from frame v on.
    window = np.random.default_rng(1).integers(0, 255, (2, T * 2, S, S, 3), dtype=np.uint8)
    model = keras.Sequential(
        [
            keras.Input((T, S, S, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    expected = (
        model.predict(window[:, 0::2], verbose=0) + model.predict(window[:, 1::2], verbose=0)
    ) / 2
    np.testing.assert_allclose(view_scores(model, window, 2), expected, rtol=1e-5)
    # Sampled to T x 4, two views take what evaluation takes of a K = 4 clip: frames 1 and 3.
    wide = np.random.default_rng(2).integers(0, 255, (2, T * 4, S, S, 3), dtype=np.uint8)
    expected = (
        model.predict(wide[:, 1::4], verbose=0) + model.predict(wide[:, 3::4], verbose=0)
    ) / 2
    np.testing.assert_allclose(view_scores(model, wide, 2, per_segment=4), expected, rtol=1e-5)


def test_three_crops_differ_and_average(numbered, tmp_path):
    model = keras.Sequential(
        [
            keras.Input((T, S, S, 3), dtype="uint8"),
            keras.layers.Rescaling(1.0),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    crops = [collect(make_dataset(numbered, "test", 3, crop=c))[0] for c in range(3)]
    assert all(c.shape == (3, T, S, S, 3) for c in crops)
    _, probs = predict_split(model, numbered, "test", 3, crops=3)
    expected = np.mean([model.predict(c, verbose=0) for c in crops], axis=0)
    np.testing.assert_allclose(probs, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="crops"):
        make_dataset(numbered, "test", 3, crop=0, features=True)


def test_the_evaluation_transform_is_identity_clean_and_reaches_every_view_and_crop(numbered):
    """The robustness stage's hook: an identity transform gives exactly the
    clean evaluation; a transform's change reaches each view and crop."""
    import tensorflow as tf

    model = keras.Sequential(
        [
            keras.Input((T, S, S, 3), dtype="uint8"),
            keras.layers.Rescaling(1.0 / 255),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    seen = []

    def identity(frames, position):
        seen.append(frames.shape)
        return tf.identity(frames)

    clean = predict_split(model, numbered, "test", 3, views=2, crops=3)[1]
    same = predict_split(model, numbered, "test", 3, views=2, crops=3, transform=identity)[1]
    np.testing.assert_array_equal(same, clean)
    assert seen and seen[0][0] == T * K  # every stored frame, before views are taken

    def darken(frames, position):
        return frames // 4

    dark = collect(make_dataset(numbered, "test", 3, offset=[0, 1], transform=darken))[0]
    bright = collect(make_dataset(numbered, "test", 3, offset=[0, 1]))[0]
    assert dark.shape == bright.shape == (3, 2, T, S, S, 3)
    np.testing.assert_array_equal(dark, bright // 4)
    cropped = collect(
        make_dataset(numbered, "test", 3, offset=[0, 1], crop=[0, 2], transform=darken)
    )
    clean_crops = collect(make_dataset(numbered, "test", 3, offset=[0, 1], crop=[0, 2]))
    # Each of the 2 views x 2 crops is darkened (a crop is resized, so not exactly a quarter).
    per_view = cropped[0].reshape(3, 4, -1).mean(axis=2) / clean_crops[0].reshape(3, 4, -1).mean(
        axis=2
    )
    assert np.all(per_view < 0.3), per_view
    with pytest.raises(ValueError, match="transforms"):
        make_dataset(numbered, "test", 3, features=True, transform=darken)
    with pytest.raises(ValueError, match="evaluation streams"):
        make_dataset(numbered, "train", 3, shuffle=True, transform=darken)


def test_finetuning_warms_up_decays_clips_and_accumulates():
    cfg = TrainConfig.from_config(
        {
            "backbone": "smallcnn",
            "weights": "none",
            "finetune": {"warmup_epochs": 1, "accumulate": 4, "clipnorm": 0.5, "lr": 1e-4},
        }
    )
    optimizer = make_optimizer(Stage("finetune", False, 1e-4, 3, "all"), cfg, steps=10)
    rate = optimizer.learning_rate if callable(optimizer.learning_rate) else None
    schedule = optimizer._learning_rate
    assert rate is None and optimizer.gradient_accumulation_steps == 4
    assert optimizer.global_clipnorm == 0.5
    at = [float(schedule(step)) for step in (0, 5, 10, 20, 30)]
    assert at[0] == 0 and at[1] == pytest.approx(5e-5) and at[2] == pytest.approx(1e-4)
    assert at[2] > at[3] > at[4] and at[4] == pytest.approx(0, abs=1e-9)
    frozen = make_optimizer(Stage("frozen", True, 3e-3, 3, 0), cfg, steps=10)
    assert float(frozen.learning_rate) == pytest.approx(3e-3)
    old_rule = TrainConfig.from_config({"lr": 0.01, "finetune": {"lr_factor": 0.1}})
    from actionrec.train import finetune_lr

    assert finetune_lr(old_rule) == pytest.approx(1e-3) and finetune_lr(cfg) == 1e-4


def test_a_collapsing_stage_stops_and_says_so(numbered, tmp_path):
    keras.utils.set_random_seed(0)
    head = build_head(3, T, (6,), "average")
    head.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy", metrics=["accuracy"])

    def stream(first):
        return make_dataset(numbered, "train", 2, features=True, shuffle=True, epochs=(first, 5))

    val = make_dataset(numbered, "val", 2, features=True)
    options = {"steps": 3, "epochs": 5, "patience": 5, "monitor": "val_loss", "seed": 0}
    # No train accuracy reaches 1.01: the first epoch counts as a collapse, and its weights,
    # though its val loss is the best so far, are not kept.
    before = [w.copy() for w in head.get_weights()]
    history, summary = fit_resumable(
        head, stream, val, tmp_path / "stage", collapse_floor=1.01, **options
    )
    assert len(history) == 1 and history["collapsed"].tolist() == [True] and summary["collapsed"]
    assert summary["best_epoch"] is None
    for kept, start in zip(head.get_weights(), before, strict=True):
        np.testing.assert_array_equal(kept, start)
    # Run again (as after a kill): the stage stays ended.
    (tmp_path / "stage/finished.json").unlink()
    again, _ = fit_resumable(head, stream, val, tmp_path / "stage", collapse_floor=1.01, **options)
    assert len(again) == 1
    calm, summary = fit_resumable(
        head, stream, val, tmp_path / "calm", collapse_floor=None, **options
    )
    assert len(calm) == 5 and not calm["collapsed"].any() and not summary["collapsed"]


def test_the_disk_budget_names_the_keys():
    check_disk(13320, frames=8, frames_per_segment=4, size=224, max_gb=200)
    with pytest.raises(ValueError, match=r"64\.2 GB.*extract\.max_disk_gb \(50\)"):
        check_disk(13320, frames=8, frames_per_segment=4, size=224, max_gb=50)


def test_one_loop_classifies_windows_in_order_and_at_once_when_asked():
    from actionrec.predict import classify_windows

    class Mean:
        """A model whose 'probabilities' are each clip's mean frame value."""

        def predict_on_batch(self, x):
            m = x.reshape(len(x), -1).mean(axis=1)
            return np.stack([m, 1 - m], axis=1)

    taken = []

    def sampled(n):
        for k in range(n):
            taken.append(k)
            yield np.full((T, S, S, 3), k / 10, np.float32), f"window {k}"

    out = list(classify_windows(Mean(), sampled(5), batch_size=3))
    assert [w.info for w in out] == [f"window {k}" for k in range(5)]
    np.testing.assert_allclose([w.probs[0] for w in out], [k / 10 for k in range(5)], rtol=1e-6)
    # Without a rejection: the score is the top probability and nothing is unknown.
    assert [w.score for w in out] == pytest.approx([max(k / 10, 1 - k / 10) for k in range(5)])
    assert not any(w.unknown for w in out)
    # batch 1, as a live stream: each window's scores come before the next window is read.
    taken.clear()
    first = next(classify_windows(Mean(), sampled(5), batch_size=1))
    assert first[1] == "window 0" and taken == [0]
