import h5py
import numpy as np
import pytest

from actionrec.catalog import DEMO_CLASSES as CLASSES
from actionrec.catalog import ORDER_PAIRS
from actionrec.extract import extract_shard
from actionrec.manifest import build_manifest
from actionrec.split import make_split
from actionrec.synthetic import RENDERERS, make_scene, render_dataset, render_frames
from actionrec.video import decode_clip

W, H = 160, 120


def frames_of(cls: str, n: int = 12) -> np.ndarray:
    scene = make_scene(np.random.default_rng(5), W, H, seed=0)
    scene = scene.__class__(**{**scene.__dict__, "noise": 0.0})
    return np.stack(list(render_frames(cls, scene, np.random.default_rng(9), n, W, H)))


@pytest.mark.parametrize(("forward", "backward"), ORDER_PAIRS)
def test_order_pairs_are_the_same_frames_in_reverse(forward, backward):
    a, b = frames_of(forward), frames_of(backward)
    differing = np.abs(a[::-1].astype(int) - b.astype(int)).max(axis=-1) > 2
    assert differing.mean() < 0.002  # equal but for a few edge pixels
    # ...and each frame really changes along the clip (size, angle or brightness).
    assert np.abs(a[0].astype(int) - a[len(a) // 2].astype(int)).max(axis=-1).mean() > 0.01


def test_classes_differ_frame_by_frame_outside_the_pairs():
    # One frame of every class in one scene: no two classes draw the same picture.
    mids = {c: frames_of(c)[6].astype(int) for c in CLASSES}
    for i, a in enumerate(CLASSES):
        for b in CLASSES[i + 1 :]:
            assert np.abs(mids[a] - mids[b]).max(axis=-1).mean() > 0.005, (a, b)


def test_dataset_layout_is_ucf101_and_deterministic(tmp_path):
    kwargs = dict(
        classes=["Grow", "Checker"],
        groups=2,
        clips_per_group=2,
        min_frames=5,
        max_frames=9,
        width=W,
        height=H,
        seed=7,
    )
    paths = render_dataset(tmp_path / "a", **kwargs)
    again = render_dataset(tmp_path / "b", **kwargs)
    other = render_dataset(tmp_path / "c", **{**kwargs, "seed": 8})
    names = sorted(p.relative_to(tmp_path / "a").as_posix() for p in paths)
    assert names == [
        "Checker/v_Checker_g01_c01.avi",
        "Checker/v_Checker_g01_c02.avi",
        "Checker/v_Checker_g02_c01.avi",
        "Checker/v_Checker_g02_c02.avi",
        "Grow/v_Grow_g01_c01.avi",
        "Grow/v_Grow_g01_c02.avi",
        "Grow/v_Grow_g02_c01.avi",
        "Grow/v_Grow_g02_c02.avi",
    ]
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]
    assert [p.read_bytes() for p in paths] != [p.read_bytes() for p in other]
    head = paths[0].read_bytes()[:12]
    assert head[:4] == b"RIFF" and head[8:12] == b"AVI "
    clip = decode_clip(paths[0], 4, 32)
    assert 5 <= clip.source_frames <= 9 and clip.fps == 25.0


def test_a_leaky_split_scores_higher_on_the_demo(tmp_path):
    """A 1-nearest-neighbour classifier on colour alone: scenes shared across
    the split make it look good; unseen scenes show it does not recognise."""
    render_dataset(
        tmp_path / "v",
        classes=list(CLASSES[:6]),
        groups=5,
        clips_per_group=3,
        min_frames=8,
        max_frames=12,
        width=W,
        height=H,
        seed=1,
        workers=2,
    )
    manifest = build_manifest(tmp_path / "v")
    report = extract_shard(manifest, tmp_path / "s.h5", tmp_path / "s.tsv", frames=2, size=8)
    with h5py.File(tmp_path / "s.h5") as f:
        features = f["frames"][:].reshape(len(report), -1).astype(float)
    accuracy = {}
    for method in ("random", "group"):
        split, _ = make_split(report, method, seed=0)
        train, test = (split[split["split"] == s] for s in ("train", "test"))
        dist = ((features[test["index"]][:, None] - features[train["index"]][None]) ** 2).sum(-1)
        guess = train["label"].to_numpy()[dist.argmin(axis=1)]
        accuracy[method] = float((guess == test["label"].to_numpy()).mean())
    assert accuracy["random"] > 0.8, accuracy
    assert accuracy["random"] - accuracy["group"] > 0.3, accuracy


def test_every_demo_class_has_a_renderer():
    assert tuple(RENDERERS) == CLASSES
    assert {c for pair in ORDER_PAIRS for c in pair} <= set(CLASSES)
