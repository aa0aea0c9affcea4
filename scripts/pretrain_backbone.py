"""Pretrain a backbone on still synthetic images, the demo's ImageNet (rule pretrain)."""

from actionrec.logs import logged_with_progress

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged_with_progress(sm.log[0]):
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
