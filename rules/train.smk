# Final training of the clip classifier on the train split, early-stopped on val.


rule train:
    input:
        split="results/data/split.tsv",
        manifest="results/data/manifest.tsv",
        shards=shard_files,
        lr=lr_choice,
    output:
        model="results/final/model.keras",
        history="results/final/history.tsv",
        classes="results/final/classes.txt",
    log:
        "logs/train/train.log",
    benchmark:
        "benchmarks/train/train.tsv"
    conda:
        "../envs/train.yaml"
    threads: 8
    resources:
        mem_mb=config["train"]["mem_mb"],
        runtime=config["train"]["runtime"],
        gpu=config["train"]["gpus"],
    params:
        train=train_options(),
        seed=config["seed"],
        shard_dir=SHARD_DIR,
        work_dir="results/final/work",
    script:
        "../scripts/train_model.py"
