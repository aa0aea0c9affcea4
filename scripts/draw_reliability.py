"""The reliability diagram of the final model before and after calibration (rule reliability)."""

import json

from actionrec import figures
from actionrec.logs import logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    with open(sm.input.metrics, encoding="utf-8") as f:
        metrics = json.load(f)
    figures.reliability_diagram(metrics["calibration"], sm.output[0])
