"""The final model on the test split under corruptions (rule robustness)."""

from actionrec.logs import logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    from actionrec.figures import robustness_heatmap
    from actionrec.manifest import read_classes
    from actionrec.pipeline import Data
    from actionrec.robustness import corruption_examples, evaluate_robustness

    names = read_classes(sm.input.classes)
    data = Data.of(sm.input.split, sm.input.shards, len(names))
    p = sm.params
    evaluate_robustness(
        sm.input.model,
        data,
        names,
        corruptions=p.corruptions,
        severities=p.severities,
        seed=p.seed,
        out_table=sm.output.table,
        out_summary=sm.output.summary,
        views=p.views,
        crops=p.crops,
        batch_size=p.batch_size,
    )
    robustness_heatmap(sm.output.table, sm.output.summary, sm.output.heatmap)
    corruption_examples(data, p.corruptions, p.seed, sm.output.examples)
