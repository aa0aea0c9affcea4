"""Train and measure one backbone and head on the comparison's budget (rule compare_backbone)."""

import contextlib
import json

from actionrec.logs import logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]), open(sm.log[0], "a", buffering=1) as progress:
    with contextlib.redirect_stdout(progress):
        from actionrec.compare import compare_backbone
        from actionrec.manifest import read_classes
        from actionrec.pipeline import Data
        from actionrec.search import resolve_lr

        data = Data.of(
            sm.input.split, sm.input.shards, len(read_classes(sm.input.classes)), sm.input.features
        )
        options = resolve_lr(sm.params.train, sm.input.lr[0] if sm.input.lr else None)
        options.update(backbone=sm.params.backbone, head=sm.wildcards.head)
        with open(sm.input.leakage, encoding="utf-8") as f:
            split_method = json.load(f)["method"]
        compare_backbone(
            data,
            options,
            epochs=sm.params.compare["epochs"],
            train_fraction=sm.params.compare["train_fraction"],
            out_history=sm.output.history,
            out_metrics=sm.output.metrics,
            work_dir=sm.params.work_dir,
            split_method=split_method,
            seed=sm.params.seed,
            threads=sm.threads,
        )
