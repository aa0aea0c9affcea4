import numpy as np
import pandas as pd
import pytest

from actionrec.manifest import DatasetError, build_manifest
from actionrec.split import check_fractions, leakage, make_split, read_official_split


def ucf_like(classes=101, seed=0) -> pd.DataFrame:
    """An extract report shaped like UCF101: 25 groups of 4-7 clips per class."""
    rng = np.random.default_rng(seed)
    rows = []
    for label in range(classes):
        for g in range(1, 26):
            for c in range(1, rng.integers(4, 8) + 1):
                rows.append(
                    {
                        "clip_id": f"v_C{label}_g{g:02d}_c{c:02d}",
                        "label": label,
                        "group": f"C{label}_g{g:02d}",
                        "shard": f"shard-{len(rows) // 100:04d}.h5",
                        "index": len(rows) % 100,
                        "status": "ok",
                    }
                )
    return pd.DataFrame(rows)


def test_group_split_keeps_groups_whole_and_hits_the_fractions():
    report = ucf_like()
    split, summary = make_split(report, "group", seed=1)
    assert summary["leakage"] == {"val": 0.0, "test": 0.0}
    assert split.groupby("group")["split"].nunique().max() == 1
    shares = split["split"].value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.6, abs=0.01)
    assert shares["val"] == pytest.approx(0.2, abs=0.01)
    # Stratified: every class is on every side, in about the right share.
    per_class = pd.crosstab(split["label"], split["split"], normalize="index")
    assert (per_class["test"] > 0.1).all() and (per_class["test"] < 0.3).all()
    assert list(split.columns) == ["clip_id", "shard", "index", "label", "group", "split"]


def test_split_is_deterministic_from_the_seed():
    report = ucf_like(classes=10)
    a, _ = make_split(report, "group", seed=3)
    b, _ = make_split(report, "group", seed=3)
    c, _ = make_split(report, "group", seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert (a["split"] != c["split"]).any()


def test_random_split_is_stratified_by_clip_and_leaks():
    report = ucf_like(classes=20)
    split, summary = make_split(report, "random", {"train": 0.7, "val": 0.1, "test": 0.2}, seed=0)
    counts = pd.crosstab(split["label"], split["split"])
    sizes = split["label"].value_counts().sort_index()
    assert ((counts["test"] - 0.2 * sizes).abs() <= 1).all()
    assert summary["leakage"]["test"] > 0.5


def test_bad_clips_are_not_split():
    report = ucf_like(classes=3)
    report.loc[[0, 5], "status"] = "skipped"
    split, _ = make_split(report, "group")
    assert len(split) == len(report) - 2
    assert not split["clip_id"].isin(report.loc[[0, 5], "clip_id"]).any()


@pytest.mark.parametrize(
    "fractions",
    [
        {"train": 0.6, "val": 0.2, "test": 0.3},
        {"train": 0.6, "val": 0.4},
        {"train": 0, "val": 0.5, "test": 0.5},
        {"train": 0.8, "val": 0, "test": 0.2},
    ],
)
def test_bad_fractions_are_refused(fractions):
    with pytest.raises(ValueError, match="fractions"):
        check_fractions(fractions)


def test_official_lists_have_the_published_sizes(sample):
    sizes = {1: (9537, 3783), 2: (9586, 3734), 3: (9624, 3696)}
    for number, (n_train, n_test) in sizes.items():
        train, test = read_official_split(sample / "ucfTrainTestlist", number)
        assert (len(train), len(test)) == (n_train, n_test)
        assert not set(train) & set(test)
        assert all(not c.endswith("\r") and c.startswith("v_") for c in train + test)
    assert "v_HandStandPushups_g08_c01" in train


def test_official_split_on_the_real_clips(sample):
    manifest = build_manifest(sample / "UCF-101", sample / "ucfTrainTestlist/classInd.txt")
    report = manifest.assign(shard="shard-0000.h5", index=range(len(manifest)), status="ok")
    split, summary = make_split(
        report, "official", seed=0, splits_dir=sample / "ucfTrainTestlist", official_number=1
    )
    sides = split.set_index("clip_id")["split"]
    # 49 of the 52 clips are in testlist01; three are in trainlist01.
    assert (sides == "test").sum() == 49
    train_side = {"v_Rowing_g16_c03", "v_WalkingWithDog_g17_c03", "v_WalkingWithDog_g19_c01"}
    assert set(sides[sides != "test"].index) == train_side
    assert summary["leakage"] == {"val": 0.0, "test": 0.0}
    assert summary["official_split"] == 1


def test_official_split_needs_the_lists():
    report = ucf_like(classes=2)
    with pytest.raises(DatasetError, match="splits_dir"):
        make_split(report, "official")


def test_leakage_counts_groups_seen_in_train():
    table = pd.DataFrame(
        {
            "group": ["a", "a", "b", "c", "c", "d"],
            "split": ["train", "val", "val", "train", "test", "test"],
        }
    )
    assert leakage(table) == {"val": 0.5, "test": 0.5}
