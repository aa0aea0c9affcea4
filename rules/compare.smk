# Backbones (and heads) compared on the same budget, one job each, and a summary.


rule compare_backbone:
    input:
        split="results/data/split.tsv",
        classes="results/data/classes.txt",
        split_info="results/data/split.json",
        shards=shard_files,
        features=compared_features,
        backbone_files=compared_backbone_files,
        pretrain_history=compared_pretrain_history,
        lr=lr_choice,
    output:
        history="results/compare/{backbone}/{head}/history.tsv",
        metrics="results/compare/{backbone}/{head}/metrics.json",
        predictions="results/compare/{backbone}/{head}/predictions.tsv",
    log:
        "logs/compare/{backbone}/{head}.log",
    benchmark:
        "benchmarks/compare/{backbone}/{head}.tsv"
    wildcard_constraints:
        backbone=one_of(BACKBONE_BY_KEY),
        head=one_of(catalog.HEADS),
    conda:
        "../envs/train.yaml"
    threads: 8
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=config["resources"]["gpus"],
    params:
        backbone=compared_backbone,
        compare={k: config["compare"][k] for k in ("epochs", "finetune", "train_fraction")},
        train=compared_train(),
        seed=config["seed"],
        digests=compared_backbone_digests,
        code=code_of("compare_backbone.py"),
        work_dir="results/compare/{backbone}/{head}/work",
    script:
        "../scripts/compare_backbone.py"


rule compare_summary:
    input:
        metrics=expand("results/compare/{model}/metrics.json", model=compared_models()),
        histories=expand("results/compare/{model}/history.tsv", model=compared_models()),
        predictions=expand("results/compare/{model}/predictions.tsv", model=compared_models()),
    output:
        table=report(
            "results/compare/summary.tsv",
            caption="../report/compare.rst",
            category="Backbone comparison",
            subcategory="Tables",
            labels={"table": "backbone comparison", "split": "val, test"},
        ),
        markdown=report(
            "results/compare/summary.md",
            caption="../report/compare.rst",
            category="Backbone comparison",
            subcategory="Tables",
            labels={"table": "backbone comparison (Markdown)", "split": "val, test"},
        ),
        pairs=report(
            "results/compare/pairs.tsv",
            caption="../report/compare_pairs.rst",
            category="Backbone comparison",
            subcategory="Tables",
            labels={"table": "paired comparisons on the same test clips", "split": "test"},
        ),
        curves=report(
            "results/compare/figures/accuracy_per_epoch.png",
            caption="../report/compare_curves.rst",
            category="Backbone comparison",
            subcategory="Figures",
            labels={"figure": "accuracy per epoch", "split": "val, test"},
        ),
        time=report(
            "results/compare/figures/accuracy_vs_time.png",
            caption="../report/compare_time.rst",
            category="Backbone comparison",
            subcategory="Figures",
            labels={"figure": "test accuracy against training time", "split": "test"},
        ),
    log:
        "logs/compare/summary.log",
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        code=code_of("compare_summary.py"),
    script:
        "../scripts/compare_summary.py"
