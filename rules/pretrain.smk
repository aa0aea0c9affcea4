# The demo's own ImageNet: a backbone pretrained on still synthetic images, whose
# weights train.weights names (results/pretrain/{backbone}/backbone.weights.h5).


rule pretrain:
    output:
        weights=PRETRAINED_WEIGHTS,
        history="results/pretrain/{backbone}/history.tsv",
    log:
        "logs/pretrain/{backbone}.log",
    benchmark:
        "benchmarks/pretrain/{backbone}.tsv"
    wildcard_constraints:
        backbone=one_of(catalog.PRETRAINABLE),
    conda:
        "../envs/train.yaml"
    threads: 8
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=config["resources"]["gpus"],
    params:
        pretrain=config["pretrain"],
        size=config["extract"]["size"],
        seed=config["seed"],
        code=code_of("pretrain_backbone.py"),
    script:
        "../scripts/pretrain_backbone.py"
