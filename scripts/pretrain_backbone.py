"""Pretrain a backbone on still synthetic images, the demo's ImageNet (rule pretrain)."""

import contextlib

from actionrec.logs import logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]), open(sm.log[0], "a", buffering=1) as progress:
    with contextlib.redirect_stdout(progress):
        from actionrec.pretrain import pretrain_backbone

        p = sm.params.pretrain
        pretrain_backbone(
            sm.wildcards.backbone,
            sm.params.size,
            out_weights=sm.output.weights,
            out_history=sm.output.history,
            images=p["images"],
            epochs=p["epochs"],
            batch_size=p["batch_size"],
            lr=p["lr"],
            seed=sm.params.seed,
            threads=sm.threads,
        )
