"""Bad settings and data stop before any job, with the key, folder or shard named,
instead of failing hours later in training or evaluation."""

import copy
import functools
import os
import shutil
import subprocess
import sys

import h5py
import pytest
import yaml
from snakemake.utils import validate
from snakemake_interface_common.exceptions import WorkflowError

from actionrec.configcheck import check_config
from actionrec.extract import extract_shard, shard_rows
from actionrec.manifest import (
    DatasetError,
    build_manifest,
    class_names,
    read_classes,
    write_classes,
)
from actionrec.shardcheck import check_shards
from actionrec.tables import read_tsv
from conftest import REPO, copy_workflow, snakemake

SCHEMA = str(REPO / "config/schema.yaml")

# --- Values the schema refuses -----------------------------------------------------


@functools.cache
def _parsed(path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def read_config(path) -> dict:
    """A fresh copy each time: validation fills in defaults where it goes."""
    return copy.deepcopy(_parsed(path))


def demo_config() -> dict:
    return read_config(REPO / "config/config.yaml")


def with_value(key: str, value) -> dict:
    """The demo config with one key set."""
    config = demo_config()
    *sections, last = key.split(".")
    node = config
    for section in sections:
        node = node.setdefault(section, {})
    node[last] = value
    return config


# (key, value, where the error points): values that would fail only in a job.
REFUSED = [
    ("seed", 2**32, "['seed']"),
    ("split.fractions", {"train": 0.8, "val": 0, "test": 0.2}, "['split']['fractions']['val']"),
    ("train.lr", 1, "['train']['lr']"),
    ("train.lr", 3.0, "['train']['lr']"),
    ("train.finetune.lr", 1.0, "['train']['finetune']['lr']"),
    ("pretrain.lr", 1.0, "['pretrain']['lr']"),
    ("search.low", 1.0, "['search']['low']"),
    ("search.high", 2.0, "['search']['high']"),
    ("search.grid", [0.001, 1.0], "['search']['grid'][1]"),
    ("extract.size", 1025, "['extract']['size']"),
    ("extract.frames", 513, "['extract']['frames']"),
    ("extract.frames", 0, "['extract']['frames']"),
    ("train.batch_size", 4097, "['train']['batch_size']"),
    ("train.feature_batch_size", 4097, "['train']['feature_batch_size']"),
    ("evaluate.batch_size", 4097, "['evaluate']['batch_size']"),
    ("pretrain.batch_size", 4097, "['pretrain']['batch_size']"),
]


@pytest.mark.parametrize(
    ("key", "value", "where"), REFUSED, ids=[f"{k}={v}" for k, v, _ in REFUSED]
)
def test_out_of_range_values_are_refused_with_the_key_named(key, value, where):
    with pytest.raises(WorkflowError, match="Error validating config file") as err:
        validate(with_value(key, value), SCHEMA)
    assert f"On instance{where}" in str(err.value)


ACCEPTED = [
    ("seed", 2**32 - 1),
    ("seed", 0),
    ("split.fractions", {"train": 0.9, "val": 0.05, "test": 0.05}),
    ("train.lr", 0.5),
    ("train.lr", "auto"),
    ("extract.size", 1024),
    ("extract.frames", 512),
    ("train.batch_size", 4096),
    ("train.feature_batch_size", None),
    ("search.grid", [0.3, 0.9]),
]


@pytest.mark.parametrize(("key", "value"), ACCEPTED, ids=[f"{k}={v}" for k, v in ACCEPTED])
def test_the_ends_of_each_range_pass(key, value):
    validate(with_value(key, value), SCHEMA)


def options(node: dict, prefix: str = ""):
    """(key, schema node) of every option, nested sections walked."""
    for name, sub in node.get("properties", {}).items():
        yield f"{prefix}{name}", sub
        yield from options(sub, f"{prefix}{name}.")


def number_branches(node: dict) -> list[dict]:
    """The branches of an option that take numbers (train.lr also takes auto)."""
    branches = node.get("oneOf", [node])
    branches = [b.get("items", b) for b in branches]
    return [b for b in branches if "const" not in b]


def test_every_learning_rate_and_batch_size_is_bounded():
    """A rate or batch option added later gets the same bounds."""
    schema = yaml.safe_load((REPO / "config/schema.yaml").read_text())
    rates = batches = 0
    for key, node in options(schema):
        name = key.rsplit(".", 1)[-1]
        if name == "lr" or key in ("search.low", "search.high", "search.grid"):
            rates += 1
            for branch in number_branches(node):
                assert branch.get("exclusiveMinimum") == 0, key
                assert branch.get("exclusiveMaximum") == 1, key
        elif name.endswith("batch_size"):
            batches += 1
            assert node["minimum"] >= 1 and node["maximum"] == 4096, key
    assert rates >= 6 and batches >= 4


def overlay(base: dict, top: dict) -> dict:
    """``top`` over ``base``, section by section, as snakemake --configfile does."""
    out = dict(base)
    for key, value in top.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = overlay(base[key], value) if both else value
    return out


SHIPPED = sorted(
    [p for p in (REPO / "config").glob("*.yaml") if p.name != "schema.yaml"]
    + list((REPO / "bench").glob("*.yaml"))
    + [REPO / "tests/tiny.yaml"]
)


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(REPO)) for p in SHIPPED])
def test_every_shipped_config_passes_the_schema(path):
    # The Snakefile's config/config.yaml is read first; --configfile files go over it.
    validate(overlay(demo_config(), read_config(path)), SCHEMA)
    if path.parent.name == "config" and path.name != "ucf101.yaml":
        # i3d.yaml and original.yaml are written to go over ucf101.yaml too.
        ucf101 = overlay(demo_config(), read_config(REPO / "config/ucf101.yaml"))
        validate(overlay(ucf101, read_config(path)), SCHEMA)


def test_a_dry_run_stops_before_any_job(tmp_path):
    workdir = copy_workflow(tmp_path)
    (workdir / "bad.yaml").write_text("split: {fractions: {train: 0.8, val: 0, test: 0.2}}\n")
    out = snakemake(workdir, "-n", "--configfile", "bad.yaml", timeout=120)
    assert out.returncode != 0
    assert "On instance['split']['fractions']['val']" in out.stdout + out.stderr
    assert not (workdir / "results").exists()


# (a config given over config/config.yaml, what its error says): the schema's
# errors, then configcheck's, which name the key and the fix.
BAD_CONFIGS = [
    ("extract: {size: -4}", "-4 is less than the minimum of 8"),
    ("extract: {frames: many}", "'many' is not of type 'integer'"),
    ("split: {method: leaky}", "'leaky' is not one of"),
    ("split: {fractions: {train: 0.7, val: 0.2, test: 0.2}}", "sum to 1"),
    ("data: {root: /no/such/folder}", "/no/such/folder"),
    ("colour: 1", "Additional properties are not allowed ('colour' was unexpected)"),
    ("extract: {size: 0}", "0 is less than the minimum of 8"),
    ("train: {backbone: vgg16}", "'vgg16' is not one of ['efficientnetb0'"),
    ("train: {head: lstm}", "'lstm' is not one of ['average', 'temporal_conv'"),
    ("train: {lr: fast}", "'fast' is not valid under any of the given schemas"),
    ("train: {augment: {blur: 1}}", "('blur' was unexpected)"),
    ("search: {bayes: {n_calls: 2, n_initial_points: 3}}", "n_initial_points (3) exceeds"),
    ("search: {low: 0.1, high: 0.01}", "search.low (0.1) must be below search.high"),
    ("evaluate: {views: 3}", "evaluate.views (3) exceeds extract.frames_per_segment (1)"),
    ("evaluate: {crops: 2}", "2 is not one of [1, 3]"),
    ("train: {finetune: {schedule: step}}", "'step' is not one of ['cosine', 'constant']"),
    ("train: {finetune: {accumulate: 0}}", "0 is less than the minimum of 1"),
    ("split: {groups: guess}", "'guess' is not one of ['names', 'discover', 'auto']"),
    ("split: {discover: {threshold: 2.5}}", "2.5 is greater than or equal to the maximum of 2"),
    ("split: {audit: {similarity: 1.5}}", "1.5 is greater than the maximum of 1"),
    ("extract: {size: 16}", "efficientnetb0 takes frames of at least 32 x 32"),
    ("seed: 4294967296", "4294967296 is greater than the maximum of 4294967295"),
    ("split: {fractions: {train: 0.8, val: 0.2, test: 0}}", "split.fractions.test is 0"),
    ("robustness: {corruptions: [fog]}", "'fog' is not one of ['low_light'"),
    ("robustness: {severities: [6]}", "6 is greater than the maximum of 5"),
    (
        "train: {weights: none}\nsplit: {groups: discover}",
        "split.groups: discover compares clips by the frozen features of a pretrained backbone",
    ),
]


def checked(text: str) -> dict:
    """config/config.yaml with ``text`` over it, checked as the Snakefile checks
    a run's config: the schema, then actionrec.configcheck."""
    config = overlay(demo_config(), yaml.safe_load(text))
    validate(config, SCHEMA)
    check_config(config)
    return config


@pytest.mark.parametrize(("text", "message"), BAD_CONFIGS, ids=[t for t, _ in BAD_CONFIGS])
def test_a_bad_config_is_refused_with_its_key_named(text, message):
    with pytest.raises((WorkflowError, ValueError)) as err:
        checked(text)
    assert message in str(err.value)


def test_the_shipped_demo_config_passes_every_check():
    assert checked("{}")["train"]["backbone"] == "efficientnetb0"


def test_two_backbone_files_of_one_name_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "net.keras").write_bytes(b"not read by the checks")
    files = "train: {backbone: a/net.keras, weights: none}\ncompare: {backbones: [b/net.keras]}"
    with pytest.raises(ValueError, match="'b/net.keras' and 'a/net.keras' would share the name"):
        checked(files)


def test_the_snakefile_runs_the_checks_before_any_job(tmp_path):
    """Through snakemake itself, each in its own copy at once: a value the
    checks refuse, and a backbone that cannot serve the split's discovery."""
    from concurrent.futures import ThreadPoolExecutor

    cases = [BAD_CONFIGS[3], BAD_CONFIGS[-1]]

    def run(k):
        (tmp_path / f"bad{k}").mkdir()
        workdir = copy_workflow(tmp_path / f"bad{k}")
        (workdir / "bad.yaml").write_text(cases[k][0] + "\n")
        return workdir, snakemake(workdir, "-n", "--configfile", "bad.yaml", timeout=120)

    with ThreadPoolExecutor(2) as pool:
        for (workdir, out), (_, message) in zip(pool.map(run, range(2)), cases, strict=True):
            assert out.returncode != 0
            assert message in out.stdout + out.stderr
            assert not (workdir / "results").exists()


# --- Datasets the manifest refuses -------------------------------------------------


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def test_one_class_is_refused_naming_the_data_root(tmp_path):
    touch(tmp_path / "videos/Run/v_Run_g01_c01.avi")
    touch(tmp_path / "videos/Run/v_Run_g02_c01.avi")
    (tmp_path / "videos/Empty").mkdir()
    with pytest.raises(DatasetError, match="data.root.*videos.*one class only.*at least two"):
        build_manifest(tmp_path / "videos")


def test_one_class_with_videos_of_a_class_index_is_refused(tmp_path):
    (tmp_path / "classInd.txt").write_text("1 Jump\n2 Run\n3 Swim\n")
    touch(tmp_path / "videos/Run/v_Run_g01_c01.avi")
    with pytest.raises(DatasetError, match="one class only \\('Run'\\).*at least two"):
        build_manifest(tmp_path / "videos", tmp_path / "classInd.txt")


@pytest.mark.parametrize("name", ["   ", " Run", "Run ", "Run\u00a0", "\u3000"])
def test_class_folders_blank_or_edged_with_whitespace_are_refused(tmp_path, name):
    touch(tmp_path / name / "v_x_g01_c01.avi")
    touch(tmp_path / "Jump/v_Jump_g01_c01.avi")
    touch(tmp_path / "Swim/v_Swim_g01_c01.avi")
    with pytest.raises(DatasetError, match="whitespace.*rename it") as err:
        build_manifest(tmp_path)
    assert repr(str(tmp_path / name)) in str(err.value)


def test_every_accepted_class_name_comes_back_from_classes_txt(tmp_path):
    """classes.txt gives each model output its class: a name lost or split on the
    way back shifts every label after it."""
    for name in ("A", "Über Sprung", "a  b", "x\u2028y", "c\x85d", "0", "#"):
        touch(tmp_path / "videos" / name / f"v_{len(name)}{ord(name[-1])}_g01_c01.avi")
    manifest = build_manifest(tmp_path / "videos")
    write_classes(class_names(manifest), tmp_path / "classes.txt")
    back = read_classes(tmp_path / "classes.txt")
    assert back == class_names(manifest) and len(back) == 7
    assert [back[label] for label in manifest["label"]] == manifest["class"].tolist()


# --- Shards checked with another clips_per_shard than they were cut with ---------


@pytest.fixture(scope="module")
def cut_by_six(tiny_data, tmp_path_factory):
    """The first two shards of tiny_data's clips cut six clips a shard (tiny_data
    cuts twelve), with the same frames and size."""
    manifest = read_tsv(tiny_data["manifest"])
    folder = tmp_path_factory.mktemp("six")
    for k in (0, 1):
        name = f"shard-{k:04d}"
        rows = shard_rows(manifest, k, 6)
        extract_shard(rows, folder / f"{name}.h5", folder / f"{name}.tsv", frames=4, size=32)
    return folder


def shards_of(tmp_path, *sources):
    """A shard folder of each (folder, shard number) in turn, as shard 0, 1, ..."""
    shards = tmp_path / "shards"
    shards.mkdir()
    for k, (folder, number) in enumerate(sources):
        for suffix in (".h5", ".tsv"):
            source = folder / f"shard-{number:04d}{suffix}"
            shutil.copy(source, shards / f"shard-{k:04d}{suffix}")
    return shards


def test_shards_cut_with_another_clips_per_shard_are_all_a_mismatch(
    tiny_data, cut_by_six, tmp_path
):
    """Six a shard, checked at twelve. The first shard's report lists its six clips
    as extracted: read against the config's slice of twelve, that is a sound shard
    with six clips skipped, and beside it the sound second shard would be moved
    aside."""
    manifest = read_tsv(tiny_data["manifest"])
    shards = shards_of(tmp_path, (cut_by_six, 0), (cut_by_six, 1))
    before = sorted(p.name for p in shards.iterdir())
    table = check_shards(shards, manifest, clips_per_shard=12, frames=4, size=32, remove_bad=True)
    assert table["status"].tolist() == ["mismatch", "mismatch", "missing"]
    assert (
        table["problem"][:2]
        == "config mismatch: extract.clips_per_shard is 12 in the config, 6 in the shard"
    ).all()
    assert sorted(p.name for p in shards.iterdir()) == before


def test_the_command_names_the_clips_per_shard_and_moves_nothing(tiny_data, cut_by_six, tmp_path):
    shards = shards_of(tmp_path, (cut_by_six, 0), (cut_by_six, 1))
    before = sorted(p.name for p in shards.iterdir())
    config = tmp_path / "c.yaml"
    config.write_text("extract: {frames: 4, size: 32, clips_per_shard: 12}\n")
    command = [sys.executable, "-m", "actionrec", "check-shards", "--configfile", str(config)]
    command += ["--shards", str(shards), "--manifest", str(tiny_data["manifest"]), "--remove-bad"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "scripts")}
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 1
    assert out.stdout.count("extract.clips_per_shard is 12 in the config, 6 in the shard") == 2
    assert "0 of 3 shards ok" in out.stdout and "--configfile" in out.stderr
    assert sorted(p.name for p in shards.iterdir()) == before


def test_shards_are_judged_by_the_slice_they_were_cut_with(tiny_data, cut_by_six, tmp_path):
    manifest = read_tsv(tiny_data["manifest"])
    shards = shards_of(tmp_path, (cut_by_six, 0), (cut_by_six, 1))
    # Six a shard is how they were cut: sound.
    assert check_shards(shards, manifest, clips_per_shard=6, frames=4, size=32)[:2][
        "status"
    ].tolist() == ["ok", "ok"]
    # A clip of the second shard's slice relabelled: damaged, whatever the config says.
    with h5py.File(shards / "shard-0001.h5", "r+") as f:
        f["label"][0] = (f["label"][0] + 1) % 3
    for clips_per_shard in (6, 12):
        table = check_shards(shards, manifest, clips_per_shard=clips_per_shard, frames=4, size=32)
        assert table["status"][1] == "corrupt", table["problem"][1]
        assert "labels differ" in table["problem"][1]


def test_a_wrongly_cut_shard_among_sound_ones_is_moved_aside(tiny_data, cut_by_six, tmp_path):
    manifest = read_tsv(tiny_data["manifest"])
    cut_by_twelve = tiny_data["shards"]
    shards = shards_of(tmp_path, (cut_by_twelve, 0), (cut_by_six, 1), (cut_by_twelve, 2))
    table = check_shards(shards, manifest, clips_per_shard=12, frames=4, size=32, remove_bad=True)
    assert table["status"].tolist() == ["ok", "mismatch", "ok"]
    assert "is 12 in the config, 6 in the shard" in table["problem"][1]
    assert (shards / "shard-0001.h5.corrupt").exists() and not (shards / "shard-0001.h5").exists()


def test_a_shard_without_a_record_of_its_slice_is_a_mismatch_left_in_place(
    tiny_data, cut_by_six, tmp_path
):
    """Without its source_paths and report, nothing tells whether the shard or the
    config is wrong: it is named, and kept."""
    manifest = read_tsv(tiny_data["manifest"])
    cut_by_twelve = tiny_data["shards"]
    shards = shards_of(tmp_path, (cut_by_twelve, 0), (cut_by_six, 1), (cut_by_twelve, 2))
    with h5py.File(shards / "shard-0001.h5", "r+") as f:
        del f.attrs["source_paths"]
    (shards / "shard-0001.tsv").unlink()
    table = check_shards(shards, manifest, clips_per_shard=12, frames=4, size=32, remove_bad=True)
    assert table["status"].tolist() == ["ok", "mismatch", "ok"]
    assert "config mismatch: extract.clips_per_shard is 12 in the config" in table["problem"][1]
    assert "no record of the slice it was cut from" in table["problem"][1]
    assert (shards / "shard-0001.h5").exists()
