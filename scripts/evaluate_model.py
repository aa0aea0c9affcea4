"""Classify the test split with the final model (rule evaluate)."""

import json

from actionrec.logs import logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    from actionrec.evaluate import evaluate
    from actionrec.manifest import read_classes
    from actionrec.pipeline import Data

    names = read_classes(sm.input.classes)
    with open(sm.input.split_info, encoding="utf-8") as f:
        split_info = json.load(f)
    evaluate(
        sm.input.model,
        Data.of(sm.input.split, sm.input.shards, len(names)),
        split_info,
        out_predictions=sm.output.predictions,
        out_per_class=sm.output.per_class,
        out_metrics=sm.output.metrics,
        names=names,
        top=sm.params.top,
        batch_size=sm.params.batch_size,
        views=sm.params.views,
        crops=sm.params.crops,
        calibration=sm.input.calibration,
    )
