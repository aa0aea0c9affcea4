"""Train and measure one backbone and head on the comparison's budget (rule compare_backbone)."""

import json

from actionrec.logs import logged_with_progress

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged_with_progress(sm.log[0]):
    from actionrec.compare import compare_backbone
    from actionrec.pipeline import Data
    from actionrec.search import resolve_lr

    data = Data.of_rule(sm.input)
    options = resolve_lr(sm.params.train, sm.input.lr[0] if sm.input.lr else None)
    options.update(backbone=sm.params.backbone, head=sm.wildcards.head)
    with open(sm.input.split_info, encoding="utf-8") as f:
        split_method = json.load(f)["method"]
    compare_backbone(
        data,
        options,
        epochs=sm.params.compare["epochs"],
        finetune=sm.params.compare["finetune"],
        train_fraction=sm.params.compare["train_fraction"],
        out_history=sm.output.history,
        out_metrics=sm.output.metrics,
        out_predictions=sm.output.predictions,
        work_dir=sm.params.work_dir,
        split_method=split_method,
        seed=sm.params.seed,
        pretrain_history=sm.input.pretrain_history[0] if sm.input.pretrain_history else None,
        threads=sm.threads,
    )
