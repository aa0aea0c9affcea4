"""Per-frame features of one shard's clips from a frozen backbone (rule features)."""

from actionrec.logs import logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    from actionrec.features import cache_features

    cache_features(
        sm.input.shard, sm.output[0], sm.params.backbone, sm.params.weights, threads=sm.threads
    )
