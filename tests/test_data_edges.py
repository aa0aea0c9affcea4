"""Datasets as users lay them out: empty class folders, odd file names,
symbolic links, split lists that name missing files."""

import logging
import os

import pandas as pd

from actionrec.extract import extract_shard
from actionrec.manifest import build_manifest
from actionrec.split import official_split
from actionrec.synthetic import render_dataset


def dataset(tmp_path):
    root = tmp_path / "UCF-101"
    render_dataset(
        root,
        classes=["Grow", "Checker"],
        groups=2,
        clips_per_group=1,
        min_frames=6,
        max_frames=8,
        width=64,
        height=48,
        seed=1,
    )
    return root


def test_empty_class_folder_is_named_and_left_out(tmp_path, caplog):
    root = dataset(tmp_path)
    (root / "Empty").mkdir()
    with caplog.at_level(logging.WARNING):
        manifest = build_manifest(root)
    assert "Empty holds no videos" in caplog.text
    assert sorted(manifest["class"].unique()) == ["Checker", "Grow"]


def test_spaces_and_non_ascii_names_extract(tmp_path):
    root = dataset(tmp_path)
    odd = root / "Über Sprung"
    odd.mkdir()
    source = next((root / "Grow").iterdir())
    (odd / "v_Über Sprung_g03_c01.avi").write_bytes(source.read_bytes())
    manifest = build_manifest(root)
    row = manifest[manifest["class"] == "Über Sprung"].iloc[0]
    assert row["group"] == "Über Sprung_g03" and row["clip"] == "c01"
    report = extract_shard(manifest, tmp_path / "s.h5", tmp_path / "s.tsv", frames=4, size=16)
    assert (report["status"] == "ok").all()


def test_symbolic_links_are_followed_and_broken_ones_named(tmp_path, caplog):
    root = dataset(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "Swing").mkdir(parents=True)
    source = next((root / "Grow").iterdir())
    (elsewhere / "Swing" / "v_Swing_g01_c01.avi").write_bytes(source.read_bytes())
    os.symlink(elsewhere / "Swing", root / "Swing")  # a linked class folder
    os.symlink(source, root / "Checker" / "v_Checker_g09_c01.avi")  # a linked clip
    os.symlink(tmp_path / "gone.avi", root / "Checker" / "v_Checker_g10_c01.avi")  # broken
    with caplog.at_level(logging.WARNING):
        manifest = build_manifest(root)
    assert "v_Checker_g10_c01.avi is a broken symbolic link: left out" in caplog.text
    assert {"v_Swing_g01_c01", "v_Checker_g09_c01"} <= set(manifest["clip_id"])
    assert "v_Checker_g10_c01" not in set(manifest["clip_id"])


def test_split_list_naming_missing_files_is_reported(tmp_path, caplog):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "trainlist01.txt").write_text(
        "A/v_A_g01_c01.avi 1\nA/v_A_g02_c01.avi 1\nA/v_A_g09_c01.avi 1\n"
    )
    (lists / "testlist01.txt").write_text("A/v_A_g03_c01.avi\nA/v_A_g08_c01.avi\n")
    clips = pd.DataFrame(
        {
            "clip_id": ["v_A_g01_c01", "v_A_g02_c01", "v_A_g03_c01", "v_A_g04_c01"],
            "label": 0,
            "group": ["A_g01", "A_g02", "A_g03", "A_g04"],
        }
    )
    with caplog.at_level(logging.WARNING):
        side = official_split(clips, lists, 1, {"train": 0.6, "val": 0.2, "test": 0.2}, 0)
    assert "official split 1 lists 5 clips; 3 of them are among the extracted clips" in caplog.text
    assert "1 clips are in neither list" in caplog.text and side.isna().sum() == 1
