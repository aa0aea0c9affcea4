"""Fit the final model's temperature and rejection threshold on val (rule calibrate)."""

from actionrec.logs import logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    from actionrec.calibration import calibrate
    from actionrec.manifest import read_classes
    from actionrec.pipeline import Data

    names = read_classes(sm.input.classes)
    calibrate(
        sm.input.model,
        Data.of(sm.input.split, sm.input.shards, len(names)),
        sm.output[0],
        views=sm.params.views,
        crops=sm.params.crops,
        batch_size=sm.params.batch_size,
        score=sm.params.score,
        recall=sm.params.recall,
    )
