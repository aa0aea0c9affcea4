# Learning-rate search on the val split: Bayesian (one sequential job) and a
# grid (one job per point), and the choice that `train.lr: auto` uses.


localrules:
    chosen_lr,


rule search_bayes:
    input:
        split="results/data/split.tsv",
        classes="results/data/classes.txt",
        shards=shard_files,
        features=train_features,
        backbone_files=train_backbone_files,
    output:
        table=report(
            "results/search/bayes.tsv",
            caption="../report/search_bayes.rst",
            category="Learning-rate search",
            subcategory="Tables",
            labels={"table": "Bayesian search trials", "split": "val"},
        ),
        figure=report(
            "results/search/figures/bayes_convergence.png",
            caption="../report/search_bayes.rst",
            category="Learning-rate search",
            subcategory="Figures",
            labels={"figure": "Bayesian search convergence", "split": "val"},
        ),
    log:
        "logs/search/bayes.log",
    benchmark:
        "benchmarks/search/bayes.tsv"
    conda:
        "../envs/train.yaml"
    threads: 8
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=config["resources"]["gpus"],
    params:
        search=search_params(("low", "high", "epochs", "train_fraction", "bayes")),
        train=trial_train(),
        seed=config["seed"],
        digests=train_backbone_digests,
        code=code_of("search_bayes.py"),
        work_dir="results/search/bayes.work",
    script:
        "../scripts/search_bayes.py"


rule search_grid_point:
    input:
        split="results/data/split.tsv",
        classes="results/data/classes.txt",
        shards=shard_files,
        features=train_features,
        backbone_files=train_backbone_files,
    output:
        "results/search/grid/lr-{lr}.json",
    log:
        "logs/search/grid/lr-{lr}.log",
    benchmark:
        "benchmarks/search/grid/lr-{lr}.tsv"
    wildcard_constraints:
        lr=r"[0-9.]+(e-?[0-9]+)?",
    conda:
        "../envs/train.yaml"
    threads: 8
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=config["resources"]["gpus"],
    params:
        search=search_params(("epochs", "train_fraction")),
        train=trial_train(),
        seed=config["seed"],
        digests=train_backbone_digests,
        code=code_of("search_grid_point.py"),
        work_dir="results/search/grid/lr-{lr}.work",
    script:
        "../scripts/search_grid_point.py"


rule search_grid:
    input:
        grid_points,
    output:
        table=report(
            "results/search/grid.tsv",
            caption="../report/search_grid.rst",
            category="Learning-rate search",
            subcategory="Tables",
            labels={"table": "grid search points", "split": "val"},
        ),
        figure=report(
            "results/search/figures/grid.png",
            caption="../report/search_grid.rst",
            category="Learning-rate search",
            subcategory="Figures",
            labels={"figure": "grid search", "split": "val"},
        ),
    log:
        "logs/search/grid.log",
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        code=code_of("gather_grid.py"),
    script:
        "../scripts/gather_grid.py"


checkpoint best_lr:
    input:
        searches=search_tables,
        split="results/data/split.tsv",
    output:
        report(
            "results/search/best_lr.json",
            caption="../report/best_lr.rst",
            category="Learning-rate search",
            subcategory="Tables",
            labels={"table": "chosen learning rate", "split": "val"},
        ),
    log:
        "logs/search/best_lr.log",
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        methods=config["search"]["methods"],
        code=code_of("choose_lr.py"),
    script:
        "../scripts/choose_lr.py"


rule chosen_lr:
    # A file named by the chosen rate: what uses the rate reads it as an input,
    # so that it reruns when the choice moves and not when best_lr.json is
    # rewritten with the same choice.
    input:
        ancient("results/search/best_lr.json"),
    output:
        CHOSEN_RATE,
    log:
        "logs/search/chosen/lr-{lr}.log",
    wildcard_constraints:
        lr=r"[0-9.]+(e-?[0-9]+)?",
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/write_chosen_lr.py"
