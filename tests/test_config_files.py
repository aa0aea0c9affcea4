"""The shipped configs mean what they say. Snakemake reads config/config.yaml (the
demo, sized for 2 CPU cores) under every --configfile, so a run on real videos
would take any key its own files leave out from the demo. And config/README.md
is what the schema and the configs say."""

import copy
import functools
import re

import pytest
import yaml
from snakemake.utils import update_config, validate

from actionrec import configdoc
from conftest import REPO, copy_workflow, snakemake

DEMO = "config/config.yaml"

# The runs on real videos: the --configfile files of each, in the order their
# headers give them.
REAL = {
    "ucf101": ("config/ucf101.yaml",),
    "i3d": ("config/ucf101.yaml", "config/i3d.yaml"),
    "original": ("config/ucf101.yaml", "config/original.yaml"),
}

# The demo's sections a real run may leave to it, and why it never reads them.
SHARED = {
    "demo": "the synthetic dataset: read by rule render_demo, which runs when data.root is null",
    "pretrain": "the demo's own ImageNet: read by rule pretrain, which runs when train.weights "
    "names its output (results/pretrain/{backbone}/backbone.weights.h5)",
}


@functools.cache
def _parsed(path: str) -> dict:
    return yaml.safe_load((REPO / path).read_text()) or {}


def read(path: str) -> dict:
    return copy.deepcopy(_parsed(path))


def effective(files: tuple[str, ...]) -> dict:
    """The config of ``snakemake --configfile FILES``: config/config.yaml, each
    file over it with Snakemake's own merge, then checked and filled in by the
    schema as the Snakefile's validate() does."""
    config = read(DEMO)
    for path in files:
        update_config(config, read(path))
    validate(config, str(REPO / "config/schema.yaml"), set_default=True)
    return config


def keys_of(tree: dict, prefix: tuple = ()):
    """Every key path a config file sets, down to its values (a list is one value)."""
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from keys_of(value, (*prefix, key))
        else:
            yield (*prefix, key)


def sets(tree: dict, path: tuple) -> bool:
    """Whether a file over the demo replaces the demo's value at ``path``."""
    for key in path:
        if not isinstance(tree, dict):
            return True  # a value where the demo has a section replaces all of it
        if key not in tree:
            return False
        tree = tree[key]
    return True


def test_every_shipped_config_is_checked_here_and_documented():
    shipped = {p.relative_to(REPO).as_posix() for p in (REPO / "config").glob("*.yaml")}
    shipped -= {DEMO, "config/schema.yaml"}
    assert shipped == {files[-1] for files in REAL.values()}
    assert {files for files, _ in configdoc.SHIPPED.values() if files} == set(REAL.values())
    for files in REAL.values():
        header = (REPO / files[-1]).read_text()
        assert f"--configfile {' '.join(files)}\n" in header, f"{files[-1]} names another command"


@pytest.mark.parametrize("name", REAL)
def test_no_demo_value_reaches_a_run_on_real_videos(name):
    files = REAL[name]
    demo = read(DEMO)
    leaks = [
        ".".join(path)
        for path in keys_of(demo)
        if path[0] not in SHARED and not any(sets(read(f), path) for f in files)
    ]
    assert not leaks, (
        f"--configfile {' '.join(files)} takes {leaks} from {DEMO} (the demo); "
        f"set them in {files[0]}"
    )


@pytest.mark.parametrize("name", REAL)
def test_the_sections_left_to_the_demo_are_never_read(name):
    config = effective(REAL[name])
    assert config["data"]["root"] is not None, "the demo's videos would be rendered"
    assert "results/pretrain/" not in config["train"]["weights"], "rule pretrain would run"
    # The reference says the same of the same sections.
    assert set(SHARED) == set(configdoc.DEMO_ONLY)


def test_ucf101_keeps_its_recipe_over_the_demo():
    """The values a UCF101 run gets where the demo sets another."""
    demo, ucf101 = effective(()), effective(REAL["ucf101"])
    assert demo["compare"]["finetune"] is False and ucf101["compare"]["finetune"] is True
    assert (demo["extract"]["size"], ucf101["extract"]["size"]) == (32, 224)
    assert ucf101["train"]["weights"] == "imagenet" and ucf101["train"]["head"] == "average"
    assert ucf101["resources"]["gpus"] == 1


def stand_in_data(workdir):
    """Two classes of empty clips and, for config/i3d.yaml, an empty file where
    its converted model goes: a dry run checks the settings and plans the jobs
    up to the manifest, reading neither."""
    for name in ("Run", "Jump"):
        (workdir / "videos" / name).mkdir(parents=True)
        (workdir / "videos" / name / f"v_{name}_g01_c01.avi").touch()
    i3d = read("config/i3d.yaml")["train"]["backbone"]
    (workdir / i3d).parent.mkdir(parents=True)
    (workdir / i3d).touch()
    (workdir / "here.yaml").write_text("data: {root: videos, splits_dir: null}\n")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = copy_workflow(tmp_path_factory.mktemp("configs"))
    stand_in_data(folder)
    return folder


@pytest.mark.parametrize("name", REAL)
def test_each_run_on_real_videos_plans_without_a_demo_rule(workdir, name):
    """The checks the schema cannot make (rules/common.smk) pass, and neither
    demo rule is planned."""
    out = snakemake(workdir, "-n", "--configfile", *REAL[name], "here.yaml", timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    planned = set(re.findall(r"^(\w+)\s+\d+$", out.stdout, re.M))
    assert {"fetch_weights", "manifest", "train"} <= planned
    assert not planned & {"render_demo", "pretrain"}, planned


# --- config/README.md ---------------------------------------------------------------


def test_the_configuration_reference_is_current():
    stale = configdoc.render() != (REPO / "config/README.md").read_text()
    assert not stale, (
        "config/README.md is stale: regenerate it with "
        "`.venv/bin/python -m actionrec.configdoc --write`"
    )


def row(text: str, key: str) -> list[str]:
    (line,) = [line for line in text.splitlines() if line.startswith(f"| `{key}` |")]
    return [cell.strip() for cell in line.strip("|").split(" | ")]


def test_the_reference_gives_each_key_its_range_default_and_both_values():
    text = (REPO / "config/README.md").read_text()
    schema = yaml.safe_load((REPO / "config/schema.yaml").read_text())
    for key, _ in configdoc.leaves(schema):
        assert f"| `{key}` |" in text, f"{key} is missing from config/README.md"
    assert row(text, "extract.size")[1:5] == ["integer in [8, 1024]", "`64`", "`32`", "`224`"]
    assert row(text, "train.lr")[1] == "number in (0, 1), or `auto`"
    assert row(text, "compare.finetune")[3:5] == ["`false`", "`true`"]
    # Why a value is what it is, from the comment beside it in the config.
    assert "Demo: a mirrored RotateClockwise clip" in row(text, "train.augment.flip")[5]
    for command in ("--configfile config/ucf101.yaml config/i3d.yaml", "snakemake --cores all"):
        assert command in text


def test_comments_belong_to_the_key_beside_or_below_them_or_to_their_section():
    text = """# header: no key's
top: 1 # on top
# above a
a:
  # inside a
  b: 2
  # above c
  c: 3
  # trails a's keys
d: [x, y] # on d
"""
    assert configdoc.key_comments(text) == {
        "top": "on top",
        "a": "above a inside a trails a's keys",
        "a.c": "above c",
        "d": "on d",
    }


def test_the_catalog_usage_names_files_that_exist():
    usage = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    flags = usage["mandatory-flags"]["flags"].split()
    assert flags[0] == "--configfile" and all((REPO / f).is_file() for f in flags[1:])
    assert usage["software-stack-deployment"]["conda"] is True and usage["report"] is True
    assert (REPO / "config/README.md").is_file()
