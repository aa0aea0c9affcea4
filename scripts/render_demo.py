"""Render the built-in synthetic demo dataset (rule render_demo)."""

from actionrec.logs import logged
from actionrec.synthetic import render_dataset

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    render_dataset(sm.output[0], seed=sm.params.seed, workers=sm.threads, **sm.params.demo)
