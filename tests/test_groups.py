"""Groups discovered from frozen features, and the near-duplicate audit."""

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest

from actionrec.groups import audit, choose_groups, discover_groups, warnings_of
from actionrec.manifest import build_manifest
from actionrec.tables import read_tsv
from conftest import REPO, copy_workflow, make_backbone_file, snakemake


def scenes(n_per_scene=(3, 2, 4), dim=16, spread=0.02, seed=0):
    """Unit vectors in tight bundles, one bundle a scene."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(n_per_scene), dim))
    rows = [
        c + spread * rng.normal(size=(n, dim)) for c, n in zip(centres, n_per_scene, strict=True)
    ]
    vectors = np.concatenate(rows)
    truth = np.repeat(np.arange(len(n_per_scene)), n_per_scene)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), truth


def test_discovery_finds_each_scene_of_a_class_and_never_mixes_classes():
    vectors, truth = scenes()
    order = np.random.default_rng(1).permutation(len(truth))
    vectors, truth = vectors[order], truth[order]
    # Two classes that share the scenes: clusters never cross a class.
    clips = pd.DataFrame({"class": np.where(np.arange(len(truth)) % 2, "Run", "Jump")})
    found = discover_groups(clips, vectors, threshold=0.15)
    for cls in ("Run", "Jump"):
        mine = (clips["class"] == cls).to_numpy()
        pairs = pd.crosstab(found[mine], truth[mine])
        assert ((pairs > 0).sum(axis=1) == 1).all() and ((pairs > 0).sum(axis=0) == 1).all()
        assert all(name.startswith(f"{cls}_d") for name in found[mine])
    # Numbered by first appearance: stable whatever the clustering's own labels.
    assert found.iloc[0].endswith("_d01")


def test_the_threshold_decides_how_far_clusters_merge():
    vectors, _ = scenes(spread=0.02)
    clips = pd.DataFrame({"class": ["A"] * len(vectors)})
    assert discover_groups(clips, vectors, threshold=1.99).nunique() == 1
    assert discover_groups(clips, vectors, threshold=1e-6).nunique() == len(vectors)
    with pytest.raises(ValueError, match="split.discover.threshold"):
        discover_groups(clips, vectors, threshold=0)


def clip_table(names, classes):
    return pd.DataFrame(
        {
            "clip_id": names,
            "class": classes,
            "group": [f"{c}_{n}" for c, n in zip(classes, names, strict=True)],
        }
    )


def test_auto_uses_names_when_every_clip_has_one_and_discovers_otherwise(caplog):
    named = clip_table(["v_A_g01_c01", "v_A_g01_c02", "v_A_g02_c01"], ["A"] * 3)
    named["group"] = ["A_g01", "A_g01", "A_g02"]
    out, info = choose_groups(named, "auto", None, 0.15)
    assert info["source"] == "names" and list(out["group"]) == ["A_g01", "A_g01", "A_g02"]

    vectors, _ = scenes((2, 1))
    unnamed = clip_table(["a", "b", "c"], ["A"] * 3)
    with caplog.at_level(logging.WARNING):
        out, info = choose_groups(unnamed, "auto", vectors, 0.15)
    assert info["source"] == "discovered" and info["unnamed_clips"] == 3
    assert list(out["group"]) == ["A_d01", "A_d01", "A_d02"] and set(out["name_group"]) == {""}
    assert "3 of 3 clips have no _gNN_ in their names" in caplog.text

    with caplog.at_level(logging.WARNING):
        out, info = choose_groups(unnamed, "names", None, 0.15)
    assert info["source"] == "names" and "group split is a random split" in caplog.text
    with pytest.raises(ValueError, match="frozen features"):
        choose_groups(unnamed, "discover", None, 0.15)
    with pytest.raises(ValueError, match="split.groups must be one of"):
        choose_groups(named, "guess", None, 0.15)


def test_the_audit_finds_planted_duplicates_of_the_same_class_only():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(8, 32))
    labels = [0, 0, 1, 1, 0, 1, 0, 1]
    sides = ["train"] * 4 + ["test"] * 2 + ["val"] * 2
    vectors[4] = vectors[0] + 0.01 * rng.normal(size=32)  # test copy of a train clip, class 0
    vectors[7] = vectors[1] + 0.01 * rng.normal(size=32)  # val copy of a class-0 clip, class 1
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    split = pd.DataFrame(
        {
            "clip_id": [f"c{i}" for i in range(8)],
            "label": labels,
            "group": [f"g{i}" for i in range(8)],
            "split": sides,
        }
    )
    summary, pairs = audit(split, vectors, similarity=0.95, pairs=3)
    assert summary["test"]["near_duplicates"] == 0.5 and summary["test"]["clips"] == 2
    assert summary["val"]["near_duplicates"] == 0.0  # its twin is of another class
    assert pairs.iloc[0][["clip_id", "train_clip"]].tolist() == ["c4", "c0"]
    assert len(pairs) == 3 and pairs["similarity"].is_monotonic_decreasing
    assert warnings_of("group", summary, max_share=0.1)[0].startswith("50% of test clips")
    assert warnings_of("group", summary, max_share=0.5) == []
    assert "random" in warnings_of("random", None, max_share=0.1)[0]


@pytest.fixture(scope="module")
def unnamed_run(tiny_data, tmp_path_factory):
    """The tiny demo's clips renamed without groups, through the split and
    its audit with a pretrained-looking backbone file."""
    root = tmp_path_factory.mktemp("unnamed")
    truth = {}
    manifest = build_manifest(tiny_data["split"].parent / "videos")
    for k, row in enumerate(manifest.sample(frac=1.0, random_state=0).to_dict("records")):
        name = f"{row['class']}_{k:03d}"
        (root / "videos" / row["class"]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(row["path"], root / "videos" / row["class"] / f"{name}.avi")
        truth[name] = row["group"]
    (root / "wf").mkdir()
    workdir = copy_workflow(root / "wf")
    shutil.copy(REPO / "tests/tiny.yaml", workdir / "tiny.yaml")
    make_backbone_file(workdir / "net.keras")
    (workdir / "unnamed.yaml").write_text(
        f"data: {{root: {root / 'videos'}}}\ntrain: {{backbone: net.keras, lr: 0.001}}\n"
        "compare: {backbones: []}\nsearch: {methods: []}\nextract: {clips_per_shard: 40}\n"
    )
    targets = ("results/data/leakage.json", "results/data/figures/near_duplicates.png")
    out = snakemake(workdir, *targets, "--configfile", "tiny.yaml", "unnamed.yaml")
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir, truth, out


def test_discovered_groups_keep_the_clips_of_one_scene_on_one_side(unnamed_run):
    workdir, truth, out = unnamed_run
    groups = read_tsv(workdir / "results/data/groups.tsv")
    assert set(groups["source"]) == {"discovered"} and set(groups["name_group"]) == {""}
    groups["true"] = groups["clip_id"].map(truth)
    # Every scene (true group) falls in one discovered group ...
    assert (groups.groupby("true")["group"].nunique() == 1).all()
    # ... and fewer groups than clips were found: clips were put together.
    assert groups["group"].nunique() < len(groups)
    split = read_tsv(workdir / "results/data/split.tsv")
    split["true"] = split["clip_id"].map(truth)
    assert (split.groupby("true")["split"].nunique() == 1).all()
    assert "have no _gNN_ in their names" in (workdir / "logs/split/split.log").read_text()


def test_the_audit_is_in_leakage_json_for_every_split(unnamed_run):
    workdir, _, _ = unnamed_run
    leakage = json.loads((workdir / "results/data/leakage.json").read_text())
    assert leakage["groups"]["source"] == "discovered" and leakage["groups"]["threshold"] == 0.15
    audit_part = leakage["audit"]
    assert audit_part["features"] == "net.keras" and audit_part["similarity"] == 0.92
    for side in ("val", "test"):
        assert 0 <= audit_part[side]["near_duplicates"] <= 1 and audit_part[side]["clips"] > 0
    assert 0 < len(audit_part["pairs"]) <= 6
    assert leakage["clips"] and leakage["leakage"] == {"val": 0.0, "test": 0.0}
    # A leakage of 0 on discovered groups comes with its estimate of the true share.
    for side in ("val", "test"):
        assert audit_part[side]["discovered_clips"] == audit_part[side]["clips"]
        assert 0 <= audit_part[side]["estimated_leakage"] <= 1
    figure = workdir / "results/data/figures/near_duplicates.png"
    assert figure.stat().st_size > 10_000


def named_and_one_unnamed(videos=10, clips=3, seed=0):
    """``videos`` named source videos of ``clips`` clips each over two classes,
    plus one clip whose name carries no group, as the split sees them."""
    rows = []
    for v in range(videos):
        cls = "AB"[v % 2]
        for c in range(clips):
            rows.append((f"v_{cls}_g{v + 1:02d}_c{c + 1:02d}", cls, f"{cls}_g{v + 1:02d}"))
    rows.append(("A_extra", "A", "A_A_extra"))
    table = pd.DataFrame(rows, columns=["clip_id", "class", "group"])
    table["label"] = (table["class"] == "B").astype(int)
    table["shard"], table["index"], table["status"] = "shard-0000.h5", range(len(table)), "ok"
    # One tight scene per clip: discovery on every clip would cut each video into pieces.
    vectors, _ = scenes((1,) * len(table), spread=0.0, seed=seed)
    return table, vectors


def test_one_unnamed_clip_leaves_every_named_video_its_group_and_one_side(caplog):
    from actionrec.split import make_split

    table, vectors = named_and_one_unnamed()
    with caplog.at_level(logging.WARNING):
        grouped, info = choose_groups(table, "auto", vectors, 0.15)
    assert info["source"] == "names and discovered" and info["unnamed_clips"] == 1
    named = grouped["clip_id"] != "A_extra"
    assert (grouped.loc[named, "group"] == table.loc[named, "group"]).all()
    assert (grouped.loc[named, "source"] == "names").all()
    assert grouped.loc[~named, "source"].item() == "discovered"
    assert grouped.loc[~named, "group"].item().startswith("A_d")
    assert "the other clips keep the groups their names give" in caplog.text
    for seed in range(5):
        split, summary = make_split(grouped, "group", seed=seed)
        sides = split.assign(video=table["group"]).groupby("video")["split"].nunique()
        assert (sides == 1).all(), f"seed {seed}: a source video on two sides"
        # The leakage reported is the true one, by the groups used and by the names.
        assert summary["leakage"] == {"val": 0.0, "test": 0.0}
        assert summary["name_leakage"]["test"] == 0.0 and summary["name_leakage"]["val"] == 0.0


def test_discovered_groups_that_split_named_videos_are_a_loud_leak(caplog):
    from actionrec.split import make_split

    table, vectors = named_and_one_unnamed()
    grouped, info = choose_groups(table, "discover", vectors, 0.15)
    assert info["source"] == "discovered"
    leaks = []
    for seed in range(3):
        with caplog.at_level(logging.WARNING):
            _, summary = make_split(grouped, "group", seed=seed)
        assert summary["leakage"] == {"val": 0.0, "test": 0.0}  # by the discovered groups
        leaks.append(summary["name_leakage"]["test"])
    assert max(leaks) > 0 and "LEAK: clips of one named source video" in caplog.text
    message = warnings_of("group", None, 0.1, {"val": 0.0, "test": max(leaks)})[0]
    assert "named source video (_gNN_) sit on two sides" in message


def test_discovered_clips_get_an_estimate_of_their_true_leakage_not_a_bare_zero():
    from actionrec.groups import sibling_in_train

    rng = np.random.default_rng(0)
    base = rng.normal(size=(4, 32))
    # Train holds clips 0-3; each test clip is near one of them, at rising distance.
    noise = [0.01, 0.3, 1.0, 3.0]
    held = np.stack([b + s * rng.normal(size=32) for b, s in zip(base, noise, strict=True)])
    vectors = np.concatenate([base, held])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    split = pd.DataFrame(
        {
            "clip_id": [f"c{i}" for i in range(8)],
            "label": 0,
            "group": [f"A_d{i:02d}" for i in range(8)],
            "split": ["train"] * 4 + ["test"] * 4,
        }
    )
    plain, _ = audit(split, vectors)
    assert "estimated_leakage" not in plain["test"]
    summary, _ = audit(split, vectors, discovered=np.ones(8, dtype=bool))
    top = (vectors[4:] @ vectors[:4].T).max(axis=1)
    assert summary["test"]["discovered_clips"] == 4
    assert summary["test"]["estimated_leakage"] == round(float(sibling_in_train(top).mean()), 4)
    # The curve rises with the similarity: a near-twin in train is a likely sibling.
    chances = sibling_in_train(np.array([0.5, 0.77, 0.9, 0.99]))
    assert np.all(np.diff(chances) > 0) and chances[0] < 0.05 and chances[-1] > 0.9
    warning = warnings_of("group", summary, max_share=0.0)
    assert any("an estimated" in w and "measured on discovered groups" in w for w in warning)


def test_the_leak_check_never_passes_discovered_groups_on_a_bare_zero():
    from actionrec.report_intro import leak_check

    zero = {"leakage": {"val": 0.0, "test": 0.0}, "groups": {"source": "discovered"}}
    check = leak_check({"leakage_share": 0.0, "estimated_leakage_share": 0.45}, zero)
    assert check.startswith("uncertain (0.0% of test, 0.0% of val clips share a group (discovered)")
    assert "an estimated 45.0% of test clips have their source video in train" in check
    named = {**zero, "groups": {"source": "names"}, "name_leakage": {"val": 0.0, "test": 0.2}}
    assert leak_check({"leakage_share": 0.0}, named).startswith("leaks (")
