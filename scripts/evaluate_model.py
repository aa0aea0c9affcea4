"""Classify the test split with the final model (rule evaluate)."""

from actionrec.logs import logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    from actionrec.evaluate import evaluate

    evaluate(
        sm.input.model, sm.input.split, sm.input.manifest, sm.input.leakage, sm.params.shard_dir,
        sm.output.predictions, sm.output.per_class, sm.output.metrics, sm.params.top,
        sm.params.batch_size,
    )  # fmt: skip
