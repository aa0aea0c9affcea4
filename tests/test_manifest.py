import logging

import pytest

from actionrec.manifest import DatasetError, build_manifest, read_class_index


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_real_sample_manifest_follows_class_index(sample):
    m = build_manifest(sample / "UCF-101", sample / "ucfTrainTestlist/classInd.txt")
    assert len(m) == 52 and m["class"].nunique() == 21
    assert list(m.columns) == ["clip_id", "path", "class", "label", "group", "clip"]
    first = m.iloc[0]
    assert (first["clip_id"], first["class"], first["label"]) == (
        "v_ApplyEyeMakeup_g01_c01",
        "ApplyEyeMakeup",
        0,
    )
    assert first["group"] == "ApplyEyeMakeup_g01" and first["clip"] == "c01"
    classes = read_class_index(sample / "ucfTrainTestlist/classInd.txt")
    assert len(classes) == 101 and not any("\r" in c for c in classes)
    assert (m["label"] == m["class"].map(classes.index)).all()
    # Groups of several classes: PushUps has clips from groups g01-g05.
    assert m.loc[m["class"] == "PushUps", "group"].nunique() == 5


def test_handstand_pushups_folder_with_differently_cased_files(sample, tmp_path):
    root = tmp_path / "UCF-101"
    touch(root / "HandstandPushups/v_HandStandPushups_g01_c01.avi")
    touch(root / "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi")
    classes = read_class_index(sample / "ucfTrainTestlist/classInd.txt")
    m = build_manifest(root, sample / "ucfTrainTestlist/classInd.txt").set_index("clip_id")
    row = m.loc["v_HandStandPushups_g01_c01"]
    assert row["class"] == "HandstandPushups"
    assert row["label"] == classes.index("HandstandPushups")
    assert row["group"] == "HandstandPushups_g01"


def test_folder_names_give_labels_and_other_containers_count(tmp_path, caplog):
    touch(tmp_path / "Zebra/v_Zebra_g02_c01.mp4")
    touch(tmp_path / "Apple/v_Apple_g01_c01.MKV")
    touch(tmp_path / "Apple/notes.txt")
    touch(tmp_path / "Apple/.v_Apple_g01_c02.avi.part")
    touch(tmp_path / "Apple/holiday clip é.avi")
    (tmp_path / "Empty").mkdir()
    with caplog.at_level(logging.WARNING):
        m = build_manifest(tmp_path)
    assert m["clip_id"].tolist() == ["holiday clip é", "v_Apple_g01_c01", "v_Zebra_g02_c01"]
    assert m["label"].tolist() == [0, 0, 1]
    # No gNN in the name: a group of its own, and a warning.
    assert m["group"].tolist() == ["Apple_holiday clip é", "Apple_g01", "Zebra_g02"]
    assert "holiday clip é.avi has no _gNN_cNN" in caplog.text
    assert "Empty holds no videos" in caplog.text


def test_missing_folder_names_it(tmp_path):
    with pytest.raises(DatasetError, match="nowhere.*does not exist.*data.root"):
        build_manifest(tmp_path / "nowhere")


def test_folder_without_videos(tmp_path):
    touch(tmp_path / "A/readme.txt")
    with pytest.raises(DatasetError, match="no videos"):
        build_manifest(tmp_path)


def test_same_clip_name_in_two_classes(tmp_path):
    touch(tmp_path / "A/v_X_g01_c01.avi")
    touch(tmp_path / "B/v_X_g01_c01.avi")
    with pytest.raises(DatasetError, match="v_X_g01_c01.*appears twice"):
        build_manifest(tmp_path)


def test_class_folder_missing_from_class_index(tmp_path):
    (tmp_path / "classInd.txt").write_bytes(b"1 A\r\n2 B\r\n")
    touch(tmp_path / "root/A/v_A_g01_c01.avi")
    touch(tmp_path / "root/C/v_C_g01_c01.avi")
    with pytest.raises(DatasetError, match=r"\['C'\].*not in .*classInd.txt"):
        build_manifest(tmp_path / "root", tmp_path / "classInd.txt")
