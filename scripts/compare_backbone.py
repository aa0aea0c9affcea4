"""Train and measure one backbone on the comparison's budget (rule compare_backbone)."""

import contextlib
import json

from actionrec.logs import logged
from actionrec.tables import read_tsv

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]), open(sm.log[0], "a", buffering=1) as progress:
    with contextlib.redirect_stdout(progress):
        from actionrec.compare import compare_backbone
        from actionrec.search import resolve_lr

        options = resolve_lr(sm.params.train, sm.input.lr[0] if sm.input.lr else None)
        with open(sm.input.leakage, encoding="utf-8") as f:
            method = json.load(f)["method"]
        num_classes = int(read_tsv(sm.input.manifest)["label"].max()) + 1
        backbone, _, head = sm.wildcards.model.partition("-")
        options["head"] = head or "average"
        compare_backbone(
            backbone, sm.input.split, sm.params.shard_dir, num_classes, options,
            sm.params.seed, sm.params.compare["epochs"], sm.params.compare["train_fraction"],
            sm.output.history, sm.output.metrics, sm.params.work_dir, sm.threads, method,
        )  # fmt: skip
