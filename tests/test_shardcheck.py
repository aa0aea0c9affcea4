"""The shard check: good shards pass, damaged ones are named and moved aside on request."""

import os
import shutil
import subprocess
import sys

import h5py
import numpy as np

from actionrec.shardcheck import check_shards
from actionrec.tables import read_tsv
from conftest import REPO


def copy_of(tiny_data, tmp_path):
    shards = tmp_path / "shards"
    shutil.copytree(tiny_data["shards"], shards)
    return shards, read_tsv(tiny_data["manifest"])


def test_good_shards_pass(tiny_data, tmp_path):
    shards, manifest = copy_of(tiny_data, tmp_path)
    table = check_shards(shards, manifest, clips_per_shard=12, frames=4, size=32)
    assert table["status"].tolist() == ["ok"] * 3 and table["clips"].sum() == len(manifest)


def test_damaged_shards_are_named(tiny_data, tmp_path):
    shards, manifest = copy_of(tiny_data, tmp_path)
    # Bytes overwritten in the middle of one shard's frames, another cut short, a third
    # with its clips in another order than the manifest's.
    first = shards / "shard-0000.h5"
    with h5py.File(first) as f:
        offset = f["frames"].id.get_chunk_info(2).byte_offset
    with open(first, "r+b") as fh:
        fh.seek(0)
        fh.write(b"\0" * 64)  # the superblock: the file no longer opens as HDF5
    second = shards / "shard-0001.h5"
    second.write_bytes(second.read_bytes()[: offset + 100])
    with h5py.File(shards / "shard-0002.h5", "r+") as f:
        ids = f["clip_id"][:]
        f["clip_id"][:] = ids[::-1]
    table = check_shards(shards, manifest, clips_per_shard=12, frames=4, size=32).set_index("shard")
    assert (table["status"] == "corrupt").all()
    assert "unreadable" in table.loc[str(first), "problem"]
    assert "unreadable" in table.loc[str(second), "problem"]
    assert "differ from the manifest" in table.loc[str(shards / "shard-0002.h5"), "problem"]
    # Settings that do not match the shards are named too.
    good = tmp_path / "good"
    shutil.copytree(tiny_data["shards"], good)
    wrong = check_shards(good, manifest, clips_per_shard=12, frames=8, size=32)
    assert wrong["problem"].str.contains("extract.frames").all()


def check_shards_cli(tiny_data, shards, config_text: str, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(config_text)
    cmd = [
        sys.executable,
        "-m",
        "actionrec",
        "check-shards",
        "--configfile",
        str(config),
        "--shards",
        str(shards),
        "--manifest",
        str(tiny_data["manifest"]),
        "--remove-bad",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO / "scripts")}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def test_command_moves_bad_shards_aside(tiny_data, tmp_path):
    shards, manifest = copy_of(tiny_data, tmp_path)
    bad = shards / "shard-0001.h5"
    bad.write_bytes(bad.read_bytes()[:4000])
    out = check_shards_cli(
        tiny_data, shards, "extract: {frames: 4, size: 32, clips_per_shard: 12}\n", tmp_path
    )
    assert out.returncode == 1
    assert f"corrupt  {bad} (0 clips): unreadable" in out.stdout
    assert "2 of 3 shards ok" in out.stdout
    assert not bad.exists() and (shards / "shard-0001.h5.corrupt").exists()
    with h5py.File(shards / "shard-0000.h5") as f:
        assert np.asarray(f["frames"]).shape[1:] == (4, 32, 32, 3)


def test_command_with_another_config_names_the_mismatch_and_moves_nothing(tiny_data, tmp_path):
    shards, _ = copy_of(tiny_data, tmp_path)
    before = sorted(p.name for p in shards.iterdir())
    out = check_shards_cli(
        tiny_data, shards, "extract: {frames: 8, size: 32, clips_per_shard: 12}\n", tmp_path
    )
    assert out.returncode == 1
    assert (
        out.stdout.count("config mismatch: extract.frames is 8 in the config, 4 in the shard") == 3
    )
    assert "0 of 3 shards ok" in out.stdout and "--configfile" in out.stderr
    assert sorted(p.name for p in shards.iterdir()) == before
