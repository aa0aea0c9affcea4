# Evaluation of the final model on the test split, its figures and model card,
# and prediction on folders of new videos.


rule calibrate:
    input:
        model="results/final/model.keras",
        split="results/data/split.tsv",
        classes="results/data/classes.txt",
        shards=shard_files,
    output:
        "results/final/calibration.json",
    log:
        "logs/evaluate/calibrate.log",
    benchmark:
        "benchmarks/evaluate/calibrate.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=config["resources"]["gpus"],
    params:
        batch_size=config["evaluate"]["batch_size"],
        views=config["evaluate"]["views"],
        crops=config["evaluate"]["crops"],
        score=config["evaluate"]["reject_score"],
        recall=config["evaluate"]["reject_recall"],
        code=code_of("calibrate_model.py"),
    script:
        "../scripts/calibrate_model.py"


rule evaluate:
    input:
        model="results/final/model.keras",
        calibration="results/final/calibration.json",
        split="results/data/split.tsv",
        classes="results/data/classes.txt",
        split_info="results/data/leakage.json",
        shards=shard_files,
    output:
        predictions=report(
            "results/final/predictions.tsv",
            caption="../report/predictions.rst",
            category="Final model",
            subcategory="Tables",
            labels={"table": "predictions", "split": "test"},
        ),
        per_class=report(
            "results/final/per_class.tsv",
            caption="../report/per_class.rst",
            category="Final model",
            subcategory="Tables",
            labels={"table": "per-class precision, recall and F1", "split": "test"},
        ),
        metrics=report(
            "results/final/metrics.json",
            caption="../report/metrics.rst",
            category="Final model",
            subcategory="Tables",
            labels=report_intro.metrics_labels,
        ),
    log:
        "logs/evaluate/evaluate.log",
    benchmark:
        "benchmarks/evaluate/evaluate.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=config["resources"]["gpus"],
    params:
        top=config["evaluate"]["top"],
        batch_size=config["evaluate"]["batch_size"],
        views=config["evaluate"]["views"],
        crops=config["evaluate"]["crops"],
        code=code_of("evaluate_model.py"),
    script:
        "../scripts/evaluate_model.py"


rule figures:
    input:
        predictions="results/final/predictions.tsv",
        per_class="results/final/per_class.tsv",
        history="results/final/history.tsv",
        classes="results/data/classes.txt",
    output:
        f1=report(
            "results/final/figures/per_class_f1.png",
            caption="../report/per_class_f1.rst",
            category="Final model",
            subcategory="Figures",
            labels={"figure": "per-class F1", "split": "test"},
        ),
        curves=report(
            "results/final/figures/learning_curves.png",
            caption="../report/learning_curves.rst",
            category="Final model",
            subcategory="Figures",
            labels={"figure": "learning curves", "split": "train, val, test"},
        ),
        confusion=report(
            "results/final/figures/confusion_matrix.png",
            caption="../report/confusion_matrix.rst",
            category="Final model",
            subcategory="Figures",
            labels={"figure": "confusion matrix", "split": "test"},
        ),
        pairs=report(
            "results/final/figures/confused_pairs.png",
            caption="../report/confused_pairs.rst",
            category="Final model",
            subcategory="Figures",
            labels={"figure": "most confused pairs", "split": "test"},
        ),
        pairs_table="results/final/confused_pairs.tsv",
        mistakes=report(
            "results/final/mistakes_by_video.tsv",
            caption="../report/mistakes_by_video.rst",
            category="Final model",
            subcategory="Tables",
            labels={"table": "test mistakes by source video", "split": "test"},
        ),
    log:
        "logs/evaluate/figures.log",
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        code=code_of("make_figures.py"),
    script:
        "../scripts/make_figures.py"


rule reliability:
    input:
        metrics="results/final/metrics.json",
    output:
        report(
            "results/final/figures/reliability.png",
            caption="../report/reliability.rst",
            category="Final model",
            subcategory="Calibration",
            labels={"figure": "reliability diagram", "split": "test"},
        ),
    log:
        "logs/evaluate/reliability.log",
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        code=code_of("draw_reliability.py"),
    script:
        "../scripts/draw_reliability.py"


rule openset:
    input:
        model="results/final/model.keras",
        calibration="results/final/calibration.json",
        split="results/data/split.tsv",
        classes="results/data/classes.txt",
        shards=shard_files,
        unknown=unknown_folder,
    output:
        summary=report(
            "results/final/openset.json",
            caption="../report/openset.rst",
            category="Final model",
            subcategory="Calibration",
            labels={"table": "open-set rejection", "split": "test and unknown videos"},
        ),
        figure=report(
            "results/final/figures/openset_scores.png",
            caption="../report/openset.rst",
            category="Final model",
            subcategory="Calibration",
            labels={"figure": "rejection scores of known and unknown clips", "split": "test"},
        ),
    log:
        "logs/evaluate/openset.log",
    benchmark:
        "benchmarks/evaluate/openset.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=config["resources"]["gpus"],
    params:
        batch_size=config["evaluate"]["batch_size"],
        views=config["evaluate"]["views"],
        crops=config["evaluate"]["crops"],
        window_seconds=config["predict"]["window_seconds"],
        per_segment=predict_per_segment(),
        resize=config["extract"]["resize"],
        ffmpeg=config["extract"]["ffmpeg"],
        extensions=config["data"]["extensions"],
        videos=unknown_listing,
        code=code_of("evaluate_openset.py"),
    script:
        "../scripts/evaluate_openset.py"


rule model_card:
    input:
        metrics="results/final/metrics.json",
        per_class="results/final/per_class.tsv",
        history="results/final/history.tsv",
        manifest="results/data/manifest.tsv",
        leakage="results/data/leakage.json",
        lr=lr_report,
        robustness=robustness_report,
        calibration="results/final/calibration.json",
        openset=openset_report,
    output:
        report(
            "results/final/model_card.md",
            caption="../report/model_card.rst",
            category="Final model",
            subcategory="Tables",
            labels={"table": "model card", "split": "train, val, test"},
        ),
    log:
        "logs/evaluate/model_card.log",
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        config=model_card_config(),
        code=code_of("write_model_card.py"),
    script:
        "../scripts/write_model_card.py"


rule predict:
    input:
        model="results/final/model.keras",
        calibration="results/final/calibration.json",
        classes="results/data/classes.txt",
        videos=predict_folder,
        clips=predict_training_clips,
    output:
        table="results/predict/{name}.tsv",
        timelines=predict_timelines(),
    log:
        "logs/predict/{name}.log",
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=config["resources"]["gpus"],
    params:
        top=config["predict"]["top"],
        window_seconds=config["predict"]["window_seconds"],
        views=config["predict"]["views"],
        per_segment=predict_per_segment(),
        resize=config["extract"]["resize"],
        ffmpeg=config["extract"]["ffmpeg"],
        extensions=config["data"]["extensions"],
        videos=predict_listing,
        timeline=predict_timeline(),
        code=code_of("predict_videos.py"),
    script:
        "../scripts/predict_videos.py"


rule export:
    input:
        model="results/final/model.keras",
        calibration="results/final/calibration.json",
        split="results/data/split.tsv",
        classes="results/data/classes.txt",
        shards=shard_files,
    output:
        models=directory("results/export/models"),
        summary=report(
            "results/export/summary.tsv",
            caption="../report/export.rst",
            category="Export",
            labels={"table": "exported models against the .keras model", "split": "test"},
        ),
    log:
        "logs/export/export.log",
    benchmark:
        "benchmarks/export/export.tsv"
    conda:
        "../envs/export.yaml"
    threads: 2
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=config["resources"]["gpus"],
    params:
        export=config["export"],
        code=code_of("export_model.py"),
    script:
        "../scripts/export_model.py"


rule explain:
    input:
        model="results/final/model.keras",
        split="results/data/split.tsv",
        classes="results/data/classes.txt",
        shards=shard_files,
        predictions="results/final/predictions.tsv",
        per_class="results/final/per_class.tsv",
    output:
        report(
            directory("results/final/explain"),
            patterns=["{clip}.png"],
            caption="../report/explain.rst",
            category="Final model",
            subcategory="Explanations",
            labels={"figure": "explanation of {clip}", "split": "test"},
        ),
    log:
        "logs/evaluate/explain.log",
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=config["resources"]["gpus"],
    params:
        clips=config["explain"]["clips"],
        code=code_of("explain_clips.py"),
    script:
        "../scripts/explain_clips.py"


rule robustness:
    input:
        model="results/final/model.keras",
        split="results/data/split.tsv",
        classes="results/data/classes.txt",
        shards=shard_files,
    output:
        table=report(
            "results/final/robustness.tsv",
            caption="../report/robustness.rst",
            category="Final model",
            subcategory="Robustness",
            labels={"table": "accuracy under corruptions", "split": "test"},
        ),
        summary="results/final/robustness.json",
        heatmap=report(
            "results/final/figures/robustness.png",
            caption="../report/robustness.rst",
            category="Final model",
            subcategory="Robustness",
            labels={"figure": "accuracy by corruption and severity", "split": "test"},
        ),
        examples=report(
            "results/final/figures/corruptions.png",
            caption="../report/corruptions.rst",
            category="Final model",
            subcategory="Robustness",
            labels={"figure": "a test clip under each corruption", "split": "test"},
        ),
    log:
        "logs/evaluate/robustness.log",
    benchmark:
        "benchmarks/evaluate/robustness.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=config["resources"]["gpus"],
    params:
        corruptions=config["robustness"]["corruptions"],
        severities=config["robustness"]["severities"],
        seed=config["seed"],
        batch_size=config["evaluate"]["batch_size"],
        views=config["evaluate"]["views"],
        crops=config["evaluate"]["crops"],
        code=code_of("evaluate_robustness.py"),
    script:
        "../scripts/evaluate_robustness.py"
