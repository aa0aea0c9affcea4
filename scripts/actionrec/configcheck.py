"""The checks of a run's config that its JSON schema cannot express: sums,
orders, files and folders that must exist, backbones and their weights. Each
error names the key and the fix. The Snakefile runs ``check_config`` on the
schema-checked config before any job (rules/common.smk); so can any code that
holds a config."""

from __future__ import annotations

from pathlib import Path

from . import catalog

# Weights files the workflow writes, which train.weights may name: ImageNet
# weights fetched where Snakemake runs, and the demo's own pretraining.
FETCHED_WEIGHTS = "resources/weights/{backbone}-imagenet.weights.h5"
PRETRAINED_WEIGHTS = "results/pretrain/{backbone}/backbone.weights.h5"
WRITTEN_WEIGHTS = {
    pattern.format(backbone=name)
    for name in catalog.PRETRAINABLE
    for pattern in (FETCHED_WEIGHTS, PRETRAINED_WEIGHTS)
}


def backbone_weights(config: dict, backbone: str) -> str:
    """train.weights as it applies to one backbone."""
    return catalog.weights_for(config["train"]["weights"], backbone)


def split_backbone(config: dict) -> str:
    """The backbone whose frozen features discovery and the audit compare clips by."""
    return config["split"]["features"] or config["train"]["backbone"]


def split_features_pretrained(config: dict) -> bool:
    backbone = split_backbone(config)
    return catalog.is_pretrained(backbone, backbone_weights(config, backbone))


def split_features_missing(config: dict, what: str, otherwise: str = "") -> str:
    backbone = split_backbone(config)
    return (
        f"{what} compares clips by the frozen features of a pretrained backbone, and "
        f"{backbone} (split.features, else train.backbone) has train.weights "
        f"{backbone_weights(config, backbone)}: set split.features to a pretrained backbone "
        f"(a Keras model file, or a catalog name with weights){otherwise}"
    )


def check_backbone(config: dict, key: str, backbone: str) -> None:
    """A backbone is a name from the catalog or an existing Keras model file."""
    if catalog.is_backbone_file(backbone):
        if not Path(backbone).is_file():
            raise ValueError(f"{key}: backbone file {backbone!r} does not exist")
    elif backbone not in catalog.BACKBONES:
        raise ValueError(
            f"{key}: {backbone!r} is not one of {list(catalog.BACKBONES)} nor the path of a "
            f"Keras model file ({catalog.BACKBONE_FILE_SUFFIX})"
        )
    size = config["extract"]["size"]
    if catalog.BACKBONES.get(backbone) and size < catalog.MIN_APPLICATION_SIZE:
        raise ValueError(
            f"{key}: {backbone} takes frames of at least {catalog.MIN_APPLICATION_SIZE} x "
            f"{catalog.MIN_APPLICATION_SIZE}, and extract.size is {size}; raise extract.size "
            "or use backbone smallcnn"
        )
    weights = backbone_weights(config, backbone)
    if catalog.BACKBONES.get(backbone, "") is None and weights != "none":
        raise ValueError(f"{key}: {backbone} has no pretrained weights; set train.weights: none")
    if weights not in ("none", "imagenet") and not Path(weights).is_file():
        if weights not in WRITTEN_WEIGHTS:
            raise ValueError(
                f"train.weights: file {weights!r} (for backbone {backbone}) does not exist; "
                "use imagenet, none, the path of a weights file, or one the workflow writes: "
                f"{FETCHED_WEIGHTS} (rule fetch_weights) or {PRETRAINED_WEIGHTS} (rule pretrain)"
            )


def check_backbone_keys(config: dict) -> None:
    """Two backbones never share a name, whose folders hold their features and
    comparison: two files of one stem in different folders would."""
    seen = {}
    entries = [("train.backbone", config["train"]["backbone"])]
    entries += [("compare.backbones", b) for b in config["compare"]["backbones"]]
    entries += [("split.features", split_backbone(config))]
    for key, backbone in entries:
        name = catalog.backbone_key(backbone)
        same = Path(backbone).resolve() if catalog.is_backbone_file(backbone) else backbone
        if name in seen and seen[name][1] != same:
            raise ValueError(
                f"{key}: {backbone!r} and {seen[name][0]!r} would share the name {name} "
                f"(results/features/{name}/, results/compare/{name}/); rename one of the files"
            )
        seen.setdefault(name, (backbone, same))


def _check_folders(config: dict) -> None:
    root = config["data"]["root"]
    if root is not None and not Path(root).is_dir():
        raise ValueError(
            f"data.root: folder {root!r} does not exist; point it at a folder laid "
            "out as <root>/<Class>/<clip>.avi, or set it to null for the demo"
        )
    unknown = config["evaluate"]["unknown_root"]
    if unknown is not None and not Path(unknown).is_dir():
        raise ValueError(
            f"evaluate.unknown_root: folder {unknown!r} does not exist; point it at a folder "
            "of videos of actions the model was not trained on, or set it to null"
        )
    splits_dir = config["data"]["splits_dir"]
    if splits_dir is not None and not (Path(splits_dir) / "classInd.txt").is_file():
        raise ValueError(
            f"data.splits_dir: {splits_dir!r} has no classInd.txt; point it at "
            "UCF101's ucfTrainTestlist folder, or set it to null"
        )
    if config["split"]["method"] == "official" and splits_dir is None:
        raise ValueError("split.method official needs data.splits_dir (UCF101's ucfTrainTestlist)")


def _check_search(config: dict) -> None:
    search = config["search"]
    if config["train"]["lr"] == "auto" and not search["methods"]:
        raise ValueError("train.lr auto takes the rate from the search: list search.methods")
    if "grid" in search["methods"] and not search["grid"]:
        raise ValueError("search.methods names grid but search.grid lists no learning rates")
    if search["low"] >= search["high"]:
        raise ValueError(
            f"search.low ({search['low']}) must be below search.high ({search['high']})"
        )
    bayes = search["bayes"]
    if bayes["n_initial_points"] > bayes["n_calls"]:
        raise ValueError(
            f"search.bayes.n_initial_points ({bayes['n_initial_points']}) exceeds "
            f"search.bayes.n_calls ({bayes['n_calls']})"
        )


def check_config(config: dict) -> None:
    """Every check, on a config the schema has checked and filled in; raises
    ValueError naming the key and the fix."""
    fractions = config["split"]["fractions"]
    total = sum(fractions.values())
    if abs(total - 1) > 1e-6:
        raise ValueError(f"split.fractions must sum to 1; {fractions} sums to {total:g}")
    if fractions["test"] == 0 and config["split"]["method"] != "official":
        raise ValueError(
            "split.fractions.test is 0, but the final model, the comparison and the report are "
            "measured on the test split; give it a share (0.2 is the default)"
        )
    demo = config["demo"]
    if demo["min_frames"] > demo["max_frames"]:
        raise ValueError(
            f"demo.min_frames ({demo['min_frames']}) is larger than "
            f"demo.max_frames ({demo['max_frames']})"
        )
    _check_folders(config)
    views, stored = config["evaluate"]["views"], config["extract"]["frames_per_segment"]
    if views > stored:
        raise ValueError(
            f"evaluate.views ({views}) exceeds extract.frames_per_segment ({stored}): a view "
            "takes one stored frame of every segment; lower evaluate.views or store more "
            "frames per segment"
        )
    check_backbone(config, "train.backbone", config["train"]["backbone"])
    if config["split"]["features"] is not None:
        check_backbone(config, "split.features", config["split"]["features"])
    if config["split"]["groups"] == "discover" and not split_features_pretrained(config):
        raise ValueError(
            split_features_missing(config, "split.groups: discover", ", or split.groups to names")
        )
    for backbone in config["compare"]["backbones"]:
        check_backbone(config, "compare.backbones", backbone)
    check_backbone_keys(config)
    _check_search(config)
