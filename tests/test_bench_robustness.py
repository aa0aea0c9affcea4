"""Seconds-long runs of bench/robustness.py: on the tiny demo's clips with small
backbone files, and on a few real clips with the real backbones where ../shared
has them. Its numbers belong to docs/results.md, not here."""

import json

import pytest
from test_bench import bench

from conftest import REPO, make_backbone_file, make_clip_backbone_file, shared_file

FAMILIES = {"light", "noise", "blur", "digital", "temporal", "camera", "occlusion"}
TRAININGS = ["none", "augment", "all corruptions", "matched"]


ONE_PER_FAMILY = [
    *("low_light", "gaussian_noise", "defocus_blur", "contrast"),
    *("dropped_frames", "camera_shake", "occlusion"),
]


def numbers(row: dict, keys) -> list[float]:
    """Table cells "0.912 (0.031)" (mean and std over folds) or 0.912, as means."""
    return [float(str(row[k]).split()[0]) for k in keys]


def test_both_backbones_every_training_and_family_then_the_cost(tiny_data, tmp_path):
    videos = tiny_data["split"].parent / "videos"
    frame = make_backbone_file(tmp_path / "frame.keras")
    tiny = ("--clips", str(videos), "--size", "32", "--frames", "4", "--backbone", str(frame))
    work = ("--work", str(tmp_path / "work"))
    out = bench(
        "robustness.py",
        *tiny,
        *("--i3d", str(make_clip_backbone_file(tmp_path / "clip.keras")), "--i3d-frames", "6"),
        *("--corruptions", *ONE_PER_FAMILY, "--severities", "3", "--folds", "3", "--seeds", "2"),
        *work,
        *("--out", str(tmp_path / "out.json")),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "out.json").read_text())
    table = result["table"]
    assert [(r["backbone"], r["training"]) for r in table] == [
        (b, t) for b in ("Lite0", "I3D") for t in TRAININGS
    ]
    for row in table:
        assert all(0 <= v <= 1 for v in numbers(row, ["clean", "mPC", "low light s3"]))
        assert all(0 < v < float("inf") for v in numbers(row, ["rPC", *FAMILIES]))
    # Each seed tests every clip once: 3 folds x 2 seeds, a head per training and family.
    assert len(result["folds"]["I3D"]) == 3 * 2 * (3 + len(FAMILIES))
    compared = {
        (d["backbone"], d["training against none"], d["accuracy"]) for d in result["differences"]
    }
    assert ("I3D", "augment", "low light s3") in compared and len(compared) == 18

    # The cost: the clip model through the stage's code, reusing the cached features.
    cost = bench(
        "robustness.py",
        *tiny,
        *("--cost", "--corruptions", "low_light", "contrast", "--severities", "3"),
        *work,
        *("--out", str(tmp_path / "cost.json")),
    )
    assert cost.returncode == 0, cost.stderr[-3000:]
    assert "clips in" not in cost.stdout and "corrupted pass / clean pass" in cost.stdout
    rows = json.loads((tmp_path / "cost.json").read_text())
    assert [(r["corruption"], r["severity"]) for r in rows] == [
        ("clean", 0),
        ("low_light", 3),
        ("contrast", 3),
    ]
    assert rows[0]["x clean"] is None and all(r["x clean"] > 0 for r in rows[1:])
    assert all(0 <= r["accuracy"] <= 1 and r["test_clips"] == rows[0]["test_clips"] for r in rows)


def test_real_clips_with_the_real_backbones(tmp_path):
    clips = REPO.parent / "shared/data/ucf101-real3-train/UCF-101"
    if not clips.is_dir():
        pytest.skip(f"the real clips are absent ({clips})")
    lite0 = shared_file(
        REPO.parent / "shared/models/efficientnet-lite0-imagenet/backbone.keras", "Lite0"
    )
    out = bench(
        "robustness.py",
        *("--clips", str(clips), "--backbone", str(lite0), "--backbones", "Lite0"),
        *("--limit", "4", "--per-group", "1", "--size", "64", "--frames", "2"),
        *("--corruptions", "low_light", "occlusion", "--severities", "3"),
        *("--folds", "2", "--seeds", "1", "--work", str(tmp_path / "work")),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "12 clips of 12 source videos" in out.stdout
    table = out.stdout.split("(std); ")[1].split("\n\n")[0]
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| Lite0 ")]
    assert [cells[1].strip() for cells in rows] == TRAININGS
    for cells in rows:
        clean, rpc = (float(cells[k].split()[0]) for k in (3, 5))
        assert 0.5 <= clean <= 1 and 0 < rpc <= 1.5
