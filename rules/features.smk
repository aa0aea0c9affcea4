# Backbone weights and the frozen-feature cache: every clip's per-frame
# features from a frozen pretrained backbone, one job per shard.


localrules:
    fetch_weights,


rule fetch_weights:
    # Run where Snakemake runs (a cluster's login node has internet; compute
    # nodes often do not): downloads a backbone's ImageNet weights once, into
    # the file that train.weights can then name.
    output:
        FETCHED_WEIGHTS,
    log:
        "logs/fetch_weights/{backbone}.log",
    wildcard_constraints:
        backbone=one_of(catalog.PRETRAINABLE),
    conda:
        "../envs/train.yaml"
    params:
        code=code_of("fetch_weights.py"),
    script:
        "../scripts/fetch_weights.py"


rule features:
    input:
        shard=f"{SHARD_DIR}/shard-{{shard}}.h5",
        backbone_files=cached_backbone_files,
    output:
        f"{FEATURE_DIR}/{{backbone}}/shard-{{shard}}.h5",
    log:
        "logs/features/{backbone}/shard-{shard}.log",
    benchmark:
        "benchmarks/features/{backbone}/shard-{shard}.tsv"
    wildcard_constraints:
        backbone=one_of(BACKBONE_BY_KEY),
        shard=r"\d{4}",
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=config["resources"]["gpus"],
    params:
        backbone=cached_backbone,
        weights=cached_backbone_weights,
        digests=cached_backbone_digests,
        code=code_of("cache_features.py"),
    script:
        "../scripts/cache_features.py"
