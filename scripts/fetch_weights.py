"""Download a backbone's ImageNet weights into a file (rule fetch_weights; local)."""

from actionrec.logs import logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    from actionrec.model import fetch_imagenet_weights

    fetch_imagenet_weights(sm.wildcards.backbone, sm.output[0])
