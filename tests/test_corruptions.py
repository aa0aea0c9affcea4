import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from actionrec import corruptions, video
from actionrec.corruptions import CORRUPTIONS, corrupt, transform_for

SEVERITIES = (1, 2, 3, 4, 5)
# Corruptions that draw something per clip; the others are fixed functions of the frames.
RANDOM = {
    "low_light",
    "gaussian_noise",
    "shot_noise",
    "motion_blur",
    "dropped_frames",
    "camera_shake",
    "occlusion",
}


def scene(frames: int = 8, side: int = 32, moving: bool = True, seed: int = 0) -> np.ndarray:
    """A textured clip: smooth coloured waves drifting over the frames, plus fine grain."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    out = []
    for t in range(frames):
        shift = 0.05 * t if moving else 0.0
        channels = [
            np.sin(2 * np.pi * (3 * x + shift) + c) * np.cos(2 * np.pi * (2 * y - shift) + 2 * c)
            for c in range(3)
        ]
        out.append(128 + 90 * np.stack(channels, axis=-1))
    grain = rng.normal(0, 8, (frames, side, side, 3))
    return np.clip(np.stack(out) + grain, 0, 255).astype(np.uint8)


def flat(value: int, frames: int = 8, side: int = 32) -> np.ndarray:
    return np.full((frames, side, side, 3), value, dtype=np.uint8)


def under(frames: np.ndarray, name: str, position: int = 0, seed: int = 0) -> list[np.ndarray]:
    return [corrupt(frames, name, s, seed, position) for s in SEVERITIES]


def strictly_increasing(values: list[float]) -> bool:
    return all(a < b for a, b in zip(values, values[1:], strict=False))


def high_frequency(frames: np.ndarray) -> float:
    x = frames.astype(np.float64)
    return float((np.diff(x, axis=1) ** 2).mean() + (np.diff(x, axis=2) ** 2).mean())


def test_the_registry_names_the_documented_corruptions_and_families():
    families = {name: c.family for name, c in CORRUPTIONS.items()}
    assert families == {
        "low_light": "light",
        "brightness": "light",
        "gaussian_noise": "noise",
        "shot_noise": "noise",
        "motion_blur": "blur",
        "defocus_blur": "blur",
        "contrast": "digital",
        "compression": "digital",
        "dropped_frames": "temporal",
        "camera_shake": "camera",
        "occlusion": "occlusion",
    }
    for name, (family, function, parameters) in CORRUPTIONS.items():
        assert callable(function) and family
        # One value per severity in every description.
        assert parameters.count("/") >= 4, name


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_every_severity_gives_uint8_frames_of_the_same_shape_and_changes_them(name):
    clip = scene(frames=6, side=24)
    for severity in SEVERITIES:
        out = corrupt(clip, name, severity, seed=3, position=5)
        assert out.dtype == np.uint8 and out.shape == clip.shape, (name, severity)
        assert not np.array_equal(out, clip), (name, severity)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_severity_zero_is_the_identity(name):
    clip = scene()
    out = corrupt(clip, name, 0, seed=1, position=2)
    assert out is clip or np.array_equal(out, clip)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_a_clip_is_corrupted_the_same_way_every_time_and_other_clips_otherwise(name):
    clip = scene()
    first = corrupt(clip, name, 3, seed=7, position=4)
    np.testing.assert_array_equal(first, corrupt(clip.copy(), name, 3, seed=7, position=4))
    other_clip = corrupt(clip, name, 3, seed=7, position=5)
    other_seed = corrupt(clip, name, 3, seed=8, position=4)
    if name in RANDOM:
        assert not np.array_equal(first, other_clip)
        assert not np.array_equal(first, other_seed)
    else:
        np.testing.assert_array_equal(first, other_clip)


def test_unknown_corruptions_and_severities_raise_naming_the_allowed_ones():
    clip = scene()
    with pytest.raises(ValueError, match="low_light.*occlusion"):
        corrupt(clip, "fog", 1, 0, 0)
    for bad in (-1, 6, 2.5, "3", True):
        with pytest.raises(ValueError, match=r"\[0, 1, 2, 3, 4, 5\]"):
            corrupt(clip, "contrast", bad, 0, 0)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(clip.astype(np.float32), "contrast", 1, 0, 0)
    with pytest.raises(ValueError, match="low_light"):
        transform_for("snow", 2, 0)


def test_low_light_darkens_like_dark_footage_and_its_noise_grows_relative_to_the_signal():
    grey = flat(110)
    outs = under(grey, "low_light")
    means = [float(o.mean()) for o in outs]
    relative_noise = [float(o.std(axis=0).mean() / o.mean()) for o in outs]
    assert means[0] < 110 and strictly_increasing(means[::-1])
    assert strictly_increasing(relative_noise)
    # ARID's very dark clips: a mean of about 10-20 out of 255.
    assert 10 <= means[-1] <= 20
    # The cool cast of night footage: blue above red.
    assert outs[-1][..., 2].mean() > outs[-1][..., 0].mean()
    textured = [float(o.mean()) for o in under(scene(), "low_light")]
    assert strictly_increasing(textured[::-1])


def test_brightness_raises_the_mean_and_contrast_lowers_the_spread():
    clip = scene()
    brighter = [float(o.mean()) for o in under(clip, "brightness")]
    assert clip.mean() < brighter[0] and strictly_increasing(brighter)
    spread = [float(o.std()) for o in under(clip, "contrast")]
    assert spread[0] < clip.std() and strictly_increasing(spread[::-1])
    # Contrast keeps each frame's mean.
    assert abs(float(under(clip, "contrast")[-1].mean()) - float(clip.mean())) < 1


def test_a_grey_pixel_stays_grey_under_brightness():
    out = corrupt(flat(100), "brightness", 2, 0, 0)
    assert (out == out[..., :1]).all() and out.mean() > 100


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise"])
def test_noise_spreads_a_flat_frame_more_at_every_severity(name):
    grey = flat(128)
    outs = under(grey, name)
    assert strictly_increasing([0.0] + [float(o.astype(float).std()) for o in outs])
    assert abs(float(outs[0].mean()) - 128) < 3


@pytest.mark.parametrize("name", ["motion_blur", "defocus_blur"])
@pytest.mark.parametrize("side", [32, 64])
def test_blur_removes_more_fine_detail_at_every_severity(name, side):
    noise = np.random.default_rng(0).integers(0, 256, (4, side, side, 3), dtype=np.uint8)
    energy = [high_frequency(noise)] + [high_frequency(o) for o in under(noise, name)]
    assert strictly_increasing(energy[::-1])


def test_motion_blur_smears_along_one_direction():
    # A single bright dot becomes a line: most of its light leaves the dot's pixel.
    dot = flat(0, frames=1, side=64)
    dot[0, 32, 32] = 255
    out = corrupt(dot, "motion_blur", 5, 0, 0)[0, ..., 0].astype(float)
    lit = np.argwhere(out > 0)
    extent = lit.max(axis=0) - lit.min(axis=0)
    assert extent.max() >= 5 and out[32, 32] < 128


def test_compression_loses_more_at_every_crf_and_keeps_odd_sizes():
    clip = scene(frames=8, side=64)
    error = [float(np.abs(o.astype(int) - clip).mean()) for o in under(clip, "compression")]
    assert strictly_increasing(error) and error[0] < 12
    odd = scene(frames=3, side=33)[:, :, :31]
    assert corrupt(odd, "compression", 2, 0, 0).shape == odd.shape


def test_compression_names_the_failure_of_ffmpeg(monkeypatch, tmp_path):
    monkeypatch.setattr(video, "find_ffmpeg", lambda: sys.executable)
    with pytest.raises(RuntimeError, match="compression: ffmpeg failed to encode"):
        corrupt(scene(), "compression", 1, 0, 0)
    slow = tmp_path / "slow-ffmpeg"
    slow.write_text("#!/bin/sh\nsleep 5\n")
    slow.chmod(slow.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(video, "find_ffmpeg", lambda: str(slow))
    monkeypatch.setattr(corruptions, "COMPRESSION_TIMEOUT_SECONDS", 0.2)
    with pytest.raises(RuntimeError, match="took over 0.2 s"):
        corrupt(scene(), "compression", 1, 0, 0)


def test_dropped_frames_repeat_the_last_kept_frame_more_often_at_every_severity():
    clip = scene(frames=8, side=16, moving=False, seed=1)  # every frame differs (grain)
    lost_before = set()
    for severity, out in zip(SEVERITIES, under(clip, "dropped_frames"), strict=True):
        source = [next(j for j in range(8) if np.array_equal(f, clip[j])) for f in out]
        assert source[0] == 0 and all(j <= i for i, j in enumerate(source))
        # A lost frame shows the last kept one before it.
        assert source == list(np.maximum.accumulate(source))
        lost = {i for i, j in enumerate(source) if j != i}
        assert len(lost) == [2, 3, 4, 5, 6][severity - 1]
        assert lost_before <= lost
        lost_before = lost


def test_camera_shake_moves_a_still_scene_more_at_every_severity():
    still = np.repeat(scene(frames=1, side=64), 8, axis=0)
    motion = [0.0] + [
        float(np.abs(np.diff(o.astype(int), axis=0)).mean()) for o in under(still, "camera_shake")
    ]
    assert strictly_increasing(motion)


def test_occlusion_covers_the_documented_share_and_drifts():
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 127, (8, 64, 64, 3), dtype=np.uint8)  # never the occluder's grey
    for severity, out in zip(SEVERITIES, under(clip, "occlusion"), strict=True):
        covered = (out == corruptions.OCCLUDER_GREY).all(axis=-1)
        share = covered.mean(axis=(1, 2))
        assert np.allclose(share, [0.1, 0.2, 0.3, 0.4, 0.5][severity - 1], atol=0.02)
        assert not np.array_equal(covered[0], covered[-1])
        np.testing.assert_array_equal(out[~covered], clip[~covered])


def test_importing_the_corruptions_does_not_import_tensorflow():
    # Tables and figures import them in environments without TensorFlow.
    code = "import sys, actionrec.corruptions; print('tensorflow' in sys.modules)"
    scripts = str(Path(corruptions.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([scripts, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "False"


def tiny_shard(root: Path, clips: int = 3, segments: int = 2, per_segment: int = 3) -> Path:
    """A shard of ``clips`` clips of T x K stored frames, all in the test split."""
    import h5py
    import pandas as pd

    stored = np.stack([scene(segments * per_segment, 16, seed=i) for i in range(clips)])
    (root / "shards").mkdir()
    with h5py.File(root / "shards/shard-0000.h5", "w") as f:
        f["frames"] = stored
        f["label"] = np.arange(clips)
        f.attrs.update(frames=segments, frames_per_segment=per_segment, size=16)
    pd.DataFrame(
        {
            "clip_id": [f"c{i}" for i in range(clips)],
            "shard": "shard-0000.h5",
            "index": range(clips),
            "label": range(clips),
            "group": "g",
            "split": "test",
        }
    ).to_csv(root / "split.tsv", sep="\t", index=False)
    return root


def test_transform_for_corrupts_the_frames_the_evaluation_reads_and_is_the_identity_at_zero(
    tmp_path,
):
    import h5py
    import tensorflow as tf

    from actionrec.pipeline import Data, make_dataset

    clip = scene()
    frames, position = tf.constant(clip), tf.constant(3, tf.int64)
    out = transform_for("gaussian_noise", 2, 11)(frames, position)
    assert out.dtype == tf.uint8 and out.shape == clip.shape
    np.testing.assert_array_equal(out.numpy(), corrupt(clip, "gaussian_noise", 2, 11, 3))
    np.testing.assert_array_equal(transform_for("occlusion", 0, 11)(frames, position), clip)

    # Through the evaluation's frame hook, on T = 2 segments of K = 3 stored
    # frames: each clip corrupted by its position, before a view is taken.
    root = tiny_shard(tmp_path)
    data = Data.of(root / "split.tsv", root / "shards", 3)
    with h5py.File(root / "shards/shard-0000.h5") as f:
        stored = f["frames"][()]

    def evaluated(transform: Callable | None) -> np.ndarray:
        ds = make_dataset(data, "test", 2, offset=[0, 1, 2], transform=transform)
        return np.concatenate([x.numpy() for x, _ in ds])  # [clips, views, T, S, S, 3]

    def as_views(clips: np.ndarray) -> np.ndarray:
        """Stored [clips, T x K, ...] as the views [clips, K, T, ...]."""
        return clips.reshape(len(clips), 2, 3, 16, 16, 3).swapaxes(1, 2)

    np.testing.assert_array_equal(evaluated(None), as_views(stored))
    for name in ("dropped_frames", "camera_shake"):
        expected = np.stack([corrupt(c, name, 4, 5, i) for i, c in enumerate(stored)])
        np.testing.assert_array_equal(evaluated(transform_for(name, 4, 5)), as_views(expected))
    np.testing.assert_array_equal(evaluated(transform_for("camera_shake", 0, 5)), as_views(stored))
