# Helpers the rules share: paths, the config checks (scripts/actionrec/configcheck.py)
# run before any job, input functions and the params that tie each job to exactly
# what it reads. No rules.
import json
import re
import sys
from pathlib import Path

from snakemake.exceptions import IncompleteCheckpointException

SCRIPTS = Path(workflow.basedir) / "scripts"
sys.path.insert(0, str(SCRIPTS))
from actionrec import catalog, configcheck, provenance, report_intro, settings

DEMO_ROOT = "results/demo/UCF-101"
SHARD_DIR = "results/data/shards"
FEATURE_DIR = "results/features"
FETCHED_WEIGHTS = configcheck.FETCHED_WEIGHTS
PRETRAINED_WEIGHTS = configcheck.PRETRAINED_WEIGHTS
WRITTEN_WEIGHTS = configcheck.WRITTEN_WEIGHTS


def split_backbone():
    """The backbone whose frozen features discovery and the audit compare clips by."""
    return configcheck.split_backbone(config)


def split_features_pretrained():
    return configcheck.split_features_pretrained(config)


def split_features_missing(what, otherwise=""):
    return configcheck.split_features_missing(config, what, otherwise)


def backbone_weights(backbone):
    """train.weights as it applies to one backbone."""
    return configcheck.backbone_weights(config, backbone)


def fetch_imagenet_once():
    """train.weights imagenet: every job reads the file that rule
    fetch_weights downloads once, where Snakemake runs, instead of each job
    downloading the weights itself (jobs on compute nodes without internet,
    parallel first jobs writing one Keras cache); the features and resume
    state then know the weights by content."""
    if config["train"]["weights"] == "imagenet":
        config["train"]["weights"] = FETCHED_WEIGHTS


configcheck.check_config(config)
fetch_imagenet_once()


def warn_missing_manifest():
    """A failed manifest job deletes the manifest, and Snakemake then reruns
    nothing below a checkpoint whose output is missing while their outputs
    remain: say so, with the fix."""
    if not Path("results/data/manifest.tsv").exists() and Path(SHARD_DIR).exists():
        print(
            "Warning: results/data/manifest.tsv is missing while results/data/shards/ built "
            "from it remains (a failed manifest job deletes it); Snakemake does not rebuild "
            "what follows a missing checkpoint output. Run with --forcerun manifest.",
            file=sys.stderr,
        )


warn_missing_manifest()


def data_root():
    return config["data"]["root"] or DEMO_ROOT


def dataset_listing():
    """The user's videos by path, size and time, so that an added, removed or
    replaced clip reruns the manifest and what follows (the demo's videos are
    render_demo's output, tracked as the manifest's input)."""
    root = config["data"]["root"]
    return provenance.video_listing(root, config["data"]["extensions"]) if root else None


def demo_videos(wildcards):
    """The rendered demo folder when the demo is the dataset, else nothing."""
    return [DEMO_ROOT] if config["data"]["root"] is None else []


def class_index():
    splits_dir = config["data"]["splits_dir"]
    return str(Path(splits_dir) / "classInd.txt") if splits_dir else None


def shard_ids(wildcards):
    """Shard numbers, known once the manifest (a checkpoint) exists."""
    manifest = checkpoints.manifest.get().output.manifest
    with open(manifest) as fh:
        n_clips = sum(1 for _ in fh) - 1
    check_disk(n_clips)
    count = catalog.shard_count(n_clips, config["extract"]["clips_per_shard"])
    return [f"{i:04d}" for i in range(count)]


def check_disk(n_clips):
    """Stop before extraction when the shards would outgrow extract.max_disk_gb."""
    extract = config["extract"]
    catalog.check_disk(
        n_clips,
        frames=extract["frames"],
        frames_per_segment=extract["frames_per_segment"],
        size=extract["size"],
        max_gb=extract["max_disk_gb"],
    )


def shard_files(wildcards):
    return expand(f"{SHARD_DIR}/shard-{{shard}}.h5", shard=shard_ids(wildcards))


def shard_reports(wildcards):
    return expand(f"{SHARD_DIR}/shard-{{shard}}.tsv", shard=shard_ids(wildcards))


# Every backbone of the run by the name its outputs go under.
BACKBONE_BY_KEY = {
    catalog.backbone_key(b): b
    for b in [config["train"]["backbone"], *config["compare"]["backbones"], split_backbone()]
}


def backbone_files(backbone):
    """The files a backbone is built from: its model file, its weights file."""
    weights = backbone_weights(backbone)
    files = [backbone] if catalog.is_backbone_file(backbone) else []
    return files + ([weights] if weights not in ("none", "imagenet") else [])


def backbone_digests(backbone):
    """SHA-256 of the backbone's files that the user provides, so that a file
    replaced by another reruns what it made whatever its modification time.
    (The weights files the workflow writes are tracked by their own rules.)"""
    return {
        path: provenance.file_sha256(path)
        for path in backbone_files(backbone)
        if path not in WRITTEN_WEIGHTS
    }


def code_of(script):
    """A digest of the code a rule's script runs (the script and every package
    module it imports): an edit to any of them reruns the rule."""
    return provenance.code_digest(SCRIPTS / script)


def features_of(backbone, head, wildcards):
    """The cached features the frozen stage trains on, when it uses them."""
    if not catalog.uses_feature_cache(backbone, backbone_weights(backbone), head):
        return []
    key = catalog.backbone_key(backbone)
    return expand(f"{FEATURE_DIR}/{key}/shard-{{shard}}.h5", shard=shard_ids(wildcards))


def split_feature_files(wildcards):
    key = catalog.backbone_key(split_backbone())
    return expand(f"{FEATURE_DIR}/{key}/shard-{{shard}}.h5", shard=shard_ids(wildcards))


def unnamed_clips():
    """Clips of the manifest (a checkpoint) whose names carry no group."""
    manifest = checkpoints.manifest.get().output.manifest
    with open(manifest, encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        column = header.index("clip")
        return sum(1 for line in fh if not line.rstrip("\n").split("\t")[column])


def discovery_features(wildcards):
    """The split's input: the features discovery clusters, when it does
    (split.groups discover, or auto with clips whose names carry no group)."""
    mode = config["split"]["groups"]
    unnamed = 0 if mode == "names" else unnamed_clips()
    if not catalog.discovers(mode, unnamed):
        return []
    if not split_features_pretrained():
        raise ValueError(
            split_features_missing(
                f"split.groups: auto, with {unnamed} clips whose names carry no group,",
                ", or split.groups to names (each such clip then is a group of its own)",
            )
        )
    return split_feature_files(wildcards)


def audit_features(wildcards):
    """The audit's input: the split backbone's features, if it is pretrained."""
    return split_feature_files(wildcards) if split_features_pretrained() else []


def train_features(wildcards):
    return features_of(config["train"]["backbone"], config["train"]["head"], wildcards)


def train_backbone_files(wildcards):
    return backbone_files(config["train"]["backbone"])


def train_backbone_digests(wildcards):
    return backbone_digests(config["train"]["backbone"])


def cached_backbone(wildcards):
    """features rule: the backbone behind results/features/<key>/."""
    return BACKBONE_BY_KEY[wildcards.backbone]


def cached_backbone_files(wildcards):
    return backbone_files(cached_backbone(wildcards))


def cached_backbone_weights(wildcards):
    return backbone_weights(cached_backbone(wildcards))


def cached_backbone_digests(wildcards):
    return backbone_digests(cached_backbone(wildcards))


def compared_backbone(wildcards):
    return BACKBONE_BY_KEY[wildcards.backbone]


def compared_features(wildcards):
    return features_of(compared_backbone(wildcards), wildcards.head, wildcards)


def compared_backbone_files(wildcards):
    return backbone_files(compared_backbone(wildcards))


def compared_backbone_digests(wildcards):
    return backbone_digests(compared_backbone(wildcards))


def compared_pretrain_history(wildcards):
    """The pretraining history of a backbone this run pretrains (rule pretrain)."""
    backbone = compared_backbone(wildcards)
    if backbone_weights(backbone) != PRETRAINED_WEIGHTS.format(backbone=backbone):
        return []
    return [str(Path(backbone_weights(backbone)).with_name("history.tsv"))]


def predict_per_segment():
    """K of a new video's sampling: the shards' K, so that a window gets the views
    a test clip gets, unless predict.views asks for more."""
    return max(config["predict"]["views"], config["extract"]["frames_per_segment"])


def predict_folder(wildcards):
    """The folder of new videos that results/predict/<name>.tsv classifies."""
    folder = Path(config["predict"]["root"]) / wildcards.name
    if not folder.is_dir():
        raise ValueError(
            f"results/predict/{wildcards.name}.tsv classifies the videos in {folder}/, "
            "which does not exist; put the videos there or set predict.root"
        )
    return str(folder)


def predict_listing(wildcards):
    """The videos of a predict folder by path, size and time: one added, removed
    or replaced reruns its table."""
    return provenance.video_listing(predict_folder(wildcards), config["data"]["extensions"])


def predict_timelines():
    """results/predict/<name>/, a timeline per video, when predict.timeline is
    enabled; else nothing."""
    if config["predict"]["timeline"]["enabled"]:
        return directory("results/predict/{name}")
    return []


def predict_timeline():
    """The timeline settings the predict job reads: none when disabled, so that
    they rerun nothing then."""
    section = config["predict"]["timeline"]
    return section if section["enabled"] else {"enabled": False}


def predict_training_clips(wildcards):
    """The extraction report, whose clips' median length is a timeline's window
    when predict.timeline.window_seconds is null."""
    section = config["predict"]["timeline"]
    if section["enabled"] and section["window_seconds"] is None:
        return "results/data/extract_report.tsv"
    return []


def grid_points(wildcards):
    """One file per grid point, named by the rate as %g prints it (0.0003, 1e-05)."""
    return [f"results/search/grid/lr-{float(lr):g}.json" for lr in config["search"]["grid"]]


def search_tables(wildcards):
    """The tables of the searches in search.methods, in that order."""
    return [f"results/search/{method}.tsv" for method in config["search"]["methods"]]


CHOSEN_RATE = "results/search/chosen/lr-{lr}.txt"


def lr_choice(wildcards):
    """When train.lr is auto: best_lr.json (a checkpoint) and a file named by
    the rate it chose. best_lr.json is rewritten whenever a search reruns;
    marked ancient, that alone reruns nothing: what uses the rate reruns when
    the choice moves to another rate, whose file is then new to it. (A dry run
    cannot know that before best_lr has run, and does not list those jobs.)"""
    if config["train"]["lr"] != "auto":
        return []
    try:
        best = checkpoints.best_lr.get().output[0]
    except IncompleteCheckpointException as pending:
        # best_lr runs first; this job is decided again once it has.
        raise IncompleteCheckpointException(pending.rule, ancient(pending.targetfile))
    with open(best, encoding="utf-8") as f:
        rate = float(json.load(f)["lr"])
    return [ancient(best), CHOSEN_RATE.format(lr=repr(rate))]


def lr_report(wildcards):
    """best_lr.json when train.lr is auto, for what reports the whole choice."""
    return ["results/search/best_lr.json"] if config["train"]["lr"] == "auto" else []


def search_params(keys):
    """The search section's keys that a search job reads."""
    return {k: config["search"][k] for k in keys}


def trial_train():
    """The train keys a search trial reads: not those it sets itself."""
    return settings.without(config["train"], settings.TRIAL_SETS)


def compared_train():
    """The train keys a comparison reads: not those it sets itself, and
    fine-tuning's only when the comparison fine-tunes."""
    sets = settings.COMPARE_SETS + (() if config["compare"]["finetune"] else ("finetune",))
    return settings.without(config["train"], sets)


def model_card_config():
    """What the model card reads of the config."""
    backbone = config["train"]["backbone"]
    train = {
        **config["train"],
        # Whether the backbone sees frames or whole clips, read from its file here,
        # and the weights as they apply to it.
        "backbone_input": catalog.backbone_input(backbone),
        "weights": backbone_weights(backbone),
    }
    return {
        "train": train,
        "extract": config["extract"],
        "data": {"root": config["data"]["root"]},
        "search": {"epochs": config["search"]["epochs"]},
    }


def compared_models():
    """results/compare/<backbone>/<head>/ for every (backbone, head) compared."""
    return [
        f"{catalog.backbone_key(b)}/{h}"
        for b in config["compare"]["backbones"]
        for h in config["compare"]["heads"]
    ]


def one_of(names):
    """A wildcard constraint matching exactly one of ``names``."""
    return "|".join(re.escape(n) for n in names)


def robustness_report(wildcards):
    """robustness.json for the model card when the stage is part of the run."""
    return ["results/final/robustness.json"] if config["robustness"]["enabled"] else []


def unknown_folder(wildcards):
    """The folder of videos of other actions that results/final/openset.json reads."""
    folder = Path(config["evaluate"]["unknown_root"])
    if not folder.is_dir():
        raise ValueError(
            f"evaluate.unknown_root is {folder}, which is no folder; point it at a folder of "
            "videos of actions the model was not trained on, or set it to null"
        )
    return str(folder)


def unknown_listing(wildcards):
    """The unknown videos by path, size and time: one added, removed or replaced
    reruns the open-set figures."""
    return provenance.video_listing(unknown_folder(wildcards), config["data"]["extensions"])


def openset_report(wildcards):
    """openset.json for the model card when evaluate.unknown_root is set."""
    return ["results/final/openset.json"] if config["evaluate"]["unknown_root"] else []


def final_targets():
    return [
        "results/data/extract_report.tsv",
        "results/data/split.tsv",
        "results/data/leakage.json",
        "results/data/groups.tsv",
        "results/data/figures/near_duplicates.png",
        "results/final/model.keras",
        "results/final/history.tsv",
        "results/final/metrics.json",
        "results/final/figures/per_class_f1.png",
        "results/final/figures/reliability.png",
        *openset_report(None),
        "results/final/model_card.md",
        "results/final/explain",
        *(["results/search/best_lr.json"] if config["search"]["methods"] else []),
        *(["results/compare/summary.md"] if config["compare"]["backbones"] else []),
        *(["results/final/robustness.tsv"] if config["robustness"]["enabled"] else []),
    ]
