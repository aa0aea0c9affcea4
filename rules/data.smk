# Videos -> manifest -> HDF5 shards (one job per shard) -> split.


rule render_demo:
    output:
        directory(DEMO_ROOT),
    log:
        "logs/render_demo/render_demo.log",
    benchmark:
        "benchmarks/render_demo/render_demo.tsv"
    conda:
        "../envs/data.yaml"
    threads: 4
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        demo=config["demo"],
        seed=config["seed"],
        code=code_of("render_demo.py"),
    script:
        "../scripts/render_demo.py"


checkpoint manifest:
    input:
        demo_videos,
    output:
        manifest="results/data/manifest.tsv",
        classes="results/data/classes.txt",
    log:
        "logs/manifest/manifest.log",
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        root=data_root(),
        class_index=class_index(),
        extensions=config["data"]["extensions"],
        videos=dataset_listing(),
        code=code_of("build_manifest.py"),
    script:
        "../scripts/build_manifest.py"


rule extract_shard:
    input:
        manifest="results/data/manifest.tsv",
    output:
        shard=f"{SHARD_DIR}/shard-{{shard}}.h5",
        report=f"{SHARD_DIR}/shard-{{shard}}.tsv",
    log:
        "logs/extract_shard/shard-{shard}.log",
    benchmark:
        "benchmarks/extract_shard/shard-{shard}.tsv"
    wildcard_constraints:
        shard=r"\d{4}",
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=config["extract"]["buffer_mb"] + 1000,
        runtime=60,
    params:
        frames=config["extract"]["frames"],
        size=config["extract"]["size"],
        frames_per_segment=config["extract"]["frames_per_segment"],
        clips_per_shard=config["extract"]["clips_per_shard"],
        resize=config["extract"]["resize"],
        compression=config["extract"]["compression"],
        on_bad_video=config["extract"]["on_bad_video"],
        ffmpeg=config["extract"]["ffmpeg"],
        buffer_mb=config["extract"]["buffer_mb"],
        code=code_of("extract_shard.py"),
    script:
        "../scripts/extract_shard.py"


rule extract_report:
    input:
        shards=shard_files,
        reports=shard_reports,
    output:
        "results/data/extract_report.tsv",
    log:
        "logs/extract_report/extract_report.log",
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        max_bad_fraction=config["extract"]["max_bad_fraction"],
        code=code_of("gather_extract_report.py"),
    script:
        "../scripts/gather_extract_report.py"


rule split:
    input:
        report="results/data/extract_report.tsv",
        features=discovery_features,
    output:
        split="results/data/split.tsv",
        summary="results/data/split.json",
        groups="results/data/groups.tsv",
    log:
        "logs/split/split.log",
    conda:
        "../envs/evaluate.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        method=config["split"]["method"],
        fractions=config["split"]["fractions"],
        seed=config["seed"],
        splits_dir=config["data"]["splits_dir"],
        official_split=config["split"]["official_split"],
        groups=config["split"]["groups"],
        threshold=config["split"]["discover"]["threshold"],
        code=code_of("make_split.py"),
    script:
        "../scripts/make_split.py"


rule audit_split:
    # Every val and test clip against its most similar train clip: near-
    # duplicates across the split, whatever the groups say.
    input:
        split="results/data/split.tsv",
        summary="results/data/split.json",
        groups="results/data/groups.tsv",
        shards=shard_files,
        features=audit_features,
    output:
        leakage="results/data/leakage.json",
        pairs=report(
            "results/data/figures/near_duplicates.png",
            caption="../report/near_duplicates.rst",
            category="Data",
            labels={"figure": "most similar held-out and train clips", "split": "val, test"},
        ),
    log:
        "logs/split/audit.log",
    conda:
        "../envs/evaluate.yaml"
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        similarity=config["split"]["audit"]["similarity"],
        max_share=config["split"]["audit"]["max_share"],
        pairs=config["split"]["audit"]["pairs"],
        features=lambda wildcards: split_backbone(),
        skipped=lambda wildcards: (
            None
            if split_features_pretrained()
            else split_features_missing("the audit", " to audit the split")
        ),
        code=code_of("audit_split.py"),
    script:
        "../scripts/audit_split.py"


rule check_shards:
    input:
        manifest="results/data/manifest.tsv",
        shards=shard_files,
    output:
        "results/data/shard_check.tsv",
    log:
        "logs/check_shards/check_shards.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    params:
        extract=config["extract"],
        code=code_of("check_shards.py"),
    script:
        "../scripts/check_shards.py"
