# Backbones (and heads) compared on the same budget, one job each, and a summary.


rule compare_backbone:
    input:
        split="results/data/split.tsv",
        manifest="results/data/manifest.tsv",
        leakage="results/data/leakage.json",
        shards=shard_files,
        lr=lr_choice,
    output:
        history="results/compare/{model}/history.tsv",
        metrics="results/compare/{model}/metrics.json",
    log:
        "logs/compare/{model}.log",
    benchmark:
        "benchmarks/compare/{model}.tsv"
    wildcard_constraints:
        model=compared_model_pattern(),
    conda:
        "../envs/train.yaml"
    threads: 8
    resources:
        mem_mb=config["train"]["mem_mb"],
        runtime=config["train"]["runtime"],
        gpu=config["train"]["gpus"],
    params:
        compare=config["compare"],
        train=train_options(),
        seed=config["seed"],
        shard_dir=SHARD_DIR,
        work_dir="results/compare/work/{model}",
    script:
        "../scripts/compare_backbone.py"


rule compare_summary:
    input:
        metrics=expand("results/compare/{model}/metrics.json", model=compared_models()),
        histories=expand("results/compare/{model}/history.tsv", model=compared_models()),
    output:
        table=report(
            "results/compare/summary.tsv",
            caption="../report/compare.rst",
            category="Backbone comparison",
        ),
        markdown=report(
            "results/compare/summary.md",
            caption="../report/compare.rst",
            category="Backbone comparison",
        ),
        curves=report(
            "results/compare/figures/accuracy_per_epoch.png",
            caption="../report/compare_curves.rst",
            category="Backbone comparison",
        ),
        time=report(
            "results/compare/figures/accuracy_vs_time.png",
            caption="../report/compare_time.rst",
            category="Backbone comparison",
        ),
    log:
        "logs/compare/summary.log",
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/compare_summary.py"
