# Helpers the rules share: paths, config checks and input functions. No rules.
import math
from pathlib import Path

DEMO_ROOT = "results/demo/UCF-101"
# The backbones the schema allows (train.backbone, compare.backbones).
BACKBONES = ["efficientnetb0", "resnet50", "mobilenetv3small", "efficientnetv2b0", "smallcnn"]
HEADS = ["average", "temporal_conv", "gru", "attention", "conv3d"]
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
    if config["train"]["lr"] == "auto" and not config["search"]["methods"]:
        raise ValueError("train.lr auto takes the rate from the search: list search.methods")
    if "grid" in config["search"]["methods"] and not config["search"]["grid"]:
        raise ValueError("search.methods names grid but search.grid lists no learning rates")
    if config["search"]["low"] >= config["search"]["high"]:
        raise ValueError(
            f"search.low ({config['search']['low']}) must be below search.high "
            f"({config['search']['high']})"
        )
    bayes = config["search"]["bayes"]
    if bayes["n_initial_points"] > bayes["n_calls"]:
        raise ValueError(
            f"search.bayes.n_initial_points ({bayes['n_initial_points']}) exceeds "
            f"search.bayes.n_calls ({bayes['n_calls']})"
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


def predict_folder(wildcards):
    """The folder of new videos that results/predict/<name>.tsv classifies."""
    folder = Path(config["predict"]["root"]) / wildcards.name
    if not folder.is_dir():
        raise ValueError(
            f"results/predict/{wildcards.name}.tsv classifies the videos in {folder}/, "
            "which does not exist; put the videos there or set predict.root"
        )
    return str(folder)


def grid_points(wildcards):
    """One file per grid point, named by the rate as %g prints it (0.0003, 1e-05)."""
    return [f"results/search/grid/lr-{float(lr):g}.json" for lr in config["search"]["grid"]]


def search_tables(wildcards):
    """The tables of the searches in search.methods, in that order."""
    return [f"results/search/{method}.tsv" for method in config["search"]["methods"]]


def lr_choice(wildcards):
    """best_lr.json when train.lr is auto: the search runs before training."""
    return ["results/search/best_lr.json"] if config["train"]["lr"] == "auto" else []


def compared_models():
    """One name per (backbone, head) compared: the backbone alone for the
    original head (average), else <backbone>-<head>."""
    heads = config["compare"]["heads"]
    return [
        b if h == "average" else f"{b}-{h}" for b in config["compare"]["backbones"] for h in heads
    ]


def compared_model_pattern():
    heads = "|".join(h for h in HEADS if h != "average")
    return f"({'|'.join(BACKBONES)})(-({heads}))?"


def final_targets():
    return [
        "results/data/extract_report.tsv",
        "results/data/split.tsv",
        "results/data/leakage.json",
        "results/final/model.keras",
        "results/final/history.tsv",
        "results/final/metrics.json",
        "results/final/figures/per_class_f1.png",
        "results/final/model_card.md",
        *(["results/search/best_lr.json"] if config["search"]["methods"] else []),
        *(["results/compare/summary.md"] if config["compare"]["backbones"] else []),
    ]
