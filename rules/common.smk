# Helpers the rules share: paths, config checks and input functions. No rules.
import math
from pathlib import Path

DEMO_ROOT = "results/demo/UCF-101"
SHARD_DIR = "results/data/shards"


def check_config():
    """Checks the JSON schema cannot express; each names the key and the fix."""
    fractions = config["split"]["fractions"]
    total = sum(fractions.values())
    if abs(total - 1) > 1e-6:
        raise ValueError(f"split.fractions must sum to 1; {fractions} sums to {total:g}")
    demo = config["demo"]
    if demo["min_frames"] > demo["max_frames"]:
        raise ValueError(
            f"demo.min_frames ({demo['min_frames']}) is larger than "
            f"demo.max_frames ({demo['max_frames']})"
        )
    root = config["data"]["root"]
    if root is not None and not Path(root).is_dir():
        raise ValueError(
            f"data.root: folder {root!r} does not exist; point it at a folder laid "
            "out as <root>/<Class>/<clip>.avi, or set it to null for the demo"
        )
    splits_dir = config["data"]["splits_dir"]
    if splits_dir is not None and not (Path(splits_dir) / "classInd.txt").is_file():
        raise ValueError(
            f"data.splits_dir: {splits_dir!r} has no classInd.txt; point it at "
            "UCF101's ucfTrainTestlist folder, or set it to null"
        )
    if config["split"]["method"] == "official" and splits_dir is None:
        raise ValueError("split.method official needs data.splits_dir (UCF101's ucfTrainTestlist)")


check_config()


def data_root():
    return config["data"]["root"] or DEMO_ROOT


def demo_videos(wildcards):
    """The rendered demo folder when the demo is the dataset, else nothing."""
    return [DEMO_ROOT] if config["data"]["root"] is None else []


def class_index():
    splits_dir = config["data"]["splits_dir"]
    return str(Path(splits_dir) / "classInd.txt") if splits_dir else None


def shard_ids(wildcards):
    """Shard numbers, known once the manifest (a checkpoint) exists."""
    manifest = checkpoints.manifest.get().output[0]
    with open(manifest) as fh:
        n_clips = sum(1 for _ in fh) - 1
    per_shard = config["extract"]["clips_per_shard"]
    return [f"{i:04d}" for i in range(max(1, math.ceil(n_clips / per_shard)))]


def shard_files(wildcards):
    return expand(f"{SHARD_DIR}/shard-{{shard}}.h5", shard=shard_ids(wildcards))


def shard_reports(wildcards):
    return expand(f"{SHARD_DIR}/shard-{{shard}}.tsv", shard=shard_ids(wildcards))


def train_options():
    """The train section without the keys that only size the job."""
    job_keys = ("gpus", "mem_mb", "runtime")
    return {k: v for k, v in config["train"].items() if k not in job_keys}


def final_targets():
    return [
        "results/data/extract_report.tsv",
        "results/data/split.tsv",
        "results/data/leakage.json",
        "results/final/model.keras",
        "results/final/history.tsv",
    ]
