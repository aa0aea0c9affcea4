"""Stale results and interrupted state: a dataset or predict folder changed
under finished results reruns what it affects; a state file cut short by a
kill is never what a rerun trips over; a backup of older code is not resumed."""

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from actionrec.provenance import video_listing
from conftest import copy_workflow, snakemake
from test_data_edges import dataset


def test_the_listing_changes_with_every_added_removed_or_replaced_video(tmp_path):
    root = dataset(tmp_path)
    exts = (".avi",)
    first = video_listing(root, exts)
    assert video_listing(root, exts) == first  # nothing changed: nothing reruns
    clip = sorted((root / "Grow").glob("*.avi"))[0]
    (root / "Grow" / ".half-written.avi.part").write_bytes(b"x")  # hidden: not a video
    (root / "Grow" / "notes.txt").write_text("not a video")
    assert video_listing(root, exts) == first

    added = root / "Grow" / "v_Grow_g09_c01.avi"
    added.write_bytes(clip.read_bytes())
    assert video_listing(root, exts) != first
    added.unlink()
    assert video_listing(root, exts) == first

    replaced = clip.read_bytes()[:-10]  # other content, and the time moves on
    clip.write_bytes(replaced)
    os.utime(clip, ns=(1, 1))
    assert video_listing(root, exts) != first
    (root / "Checker" / "v_Checker_g07_c01.AVI").symlink_to(tmp_path / "missing.avi")
    assert video_listing(root, exts) != first  # a broken link is listed, not a crash
    assert video_listing(tmp_path / "nowhere", exts) == "absent"


@pytest.mark.workflow
def test_a_clip_added_under_data_root_reruns_the_manifest(tmp_path):
    root = dataset(tmp_path)
    (tmp_path / "wf").mkdir()
    workdir = copy_workflow(tmp_path / "wf")
    (workdir / "own.yaml").write_text(f"data: {{root: {root}}}\n")
    target = ("results/data/manifest.tsv", "--configfile", "own.yaml")
    out = snakemake(workdir, *target)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Nothing to be done" in snakemake(workdir, "-n", *target).stdout
    clip = sorted((root / "Grow").glob("*.avi"))[0]
    (root / "Grow" / "v_Grow_g09_c01.avi").write_bytes(clip.read_bytes())
    dry = snakemake(workdir, "-n", *target)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "manifest" in dry.stdout and "Nothing to be done" not in dry.stdout, dry.stdout
    out = snakemake(workdir, *target)
    assert out.returncode == 0, out.stderr[-3000:]
    manifest = (workdir / "results/data/manifest.tsv").read_text()
    assert "v_Grow_g09_c01" in manifest


def test_a_kill_while_the_best_weights_are_written_leaves_the_last_good_ones(tmp_path):
    import keras

    from actionrec.resume import GuardedCheckpoint

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    best = tmp_path / "best.weights.h5"
    checkpoint = GuardedCheckpoint(
        best, monitor="val_loss", mode="min", save_best_only=True, save_weights_only=True
    )
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"val_loss": 1.0})
    good = [w.copy() for w in model.get_weights()]
    model.set_weights([w + 1 for w in good])

    def killed(path, overwrite=True):
        Path(path).write_bytes(b"\x89HDF cut short")  # what a kill mid-write leaves
        raise KeyboardInterrupt

    model.save_weights = killed
    with pytest.raises(KeyboardInterrupt):
        checkpoint.on_epoch_end(1, {"val_loss": 0.5})
    del model.save_weights
    model.load_weights(best)  # the file in place is whole: the epoch-0 weights
    for a, b in zip(model.get_weights(), good, strict=True):
        np.testing.assert_array_equal(a, b)
    checkpoint.on_epoch_end(2, {"val_loss": 0.4})  # the next save replaces it whole
    assert not (tmp_path / "partial-best.weights.h5").exists()


def test_a_backup_of_older_code_is_not_resumed(tmp_path, caplog):
    from actionrec import train
    from actionrec.provenance import code_digest
    from actionrec.resume import prepare_work_dir

    cfg = train.TrainConfig.from_config({"backbone": "smallcnn", "weights": "none"})
    env = train.environment(cfg)
    assert env["code"] == code_digest(train.__file__)
    work = tmp_path / "work"
    prepare_work_dir(work, {"config": 1, **env})
    (work / "state").write_text("an epoch of the old code")
    prepare_work_dir(work, {"config": 1, **env})  # same code: the state is kept
    assert (work / "state").exists()
    with caplog.at_level(logging.WARNING):
        prepare_work_dir(work, {"config": 1, **env, "code": "0123456789abcdef"})
    assert "interrupted run of other code: starting afresh" in caplog.text
    assert not (work / "state").exists()
    assert json.loads((work / "fingerprint.json").read_text())["code"] == "0123456789abcdef"
