# Final training of the clip classifier on the train split, early-stopped on val:
# end to end from scratch, or in stages on a pretrained backbone (train.smk's
# script and scripts/actionrec/train.py say which).


rule train:
    input:
        split="results/data/split.tsv",
        classes="results/data/classes.txt",
        shards=shard_files,
        features=train_features,
        backbone_files=train_backbone_files,
        lr=lr_choice,
    output:
        model="results/final/model.keras",
        history="results/final/history.tsv",
    log:
        "logs/train/train.log",
    benchmark:
        "benchmarks/train/train.tsv"
    conda:
        "../envs/train.yaml"
    threads: 8
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=config["resources"]["gpus"],
    params:
        train=config["train"],
        seed=config["seed"],
        digests=train_backbone_digests,
        code=code_of("train_model.py"),
        work_dir="results/final/work",
    script:
        "../scripts/train_model.py"
