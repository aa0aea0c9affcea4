"""Bayesian learning-rate search with scikit-optimize (rule search_bayes)."""

import contextlib
from pathlib import Path

from actionrec.logs import logged
from actionrec.tables import write_tsv

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]), open(sm.log[0], "a", buffering=1) as progress:
    with contextlib.redirect_stdout(progress):
        from actionrec import figures
        from actionrec.manifest import read_classes
        from actionrec.pipeline import Data, data_fingerprint
        from actionrec.search import SearchSettings, bayes_search, run_trial

        settings = SearchSettings.from_config(sm.params.search)
        data = Data.of(
            sm.input.split, sm.input.shards, len(read_classes(sm.input.classes)), sm.input.features
        )
        work = Path(sm.params.work_dir)

        def trial(lr):
            return run_trial(
                lr, data, sm.params.train, settings, work / "trial", seed=sm.params.seed,
                threads=sm.threads,
            )  # fmt: skip

        # What the trials depend on: a rerun with other data or settings starts afresh.
        context = {"train": sm.params.train, "data": data_fingerprint(data)}
        table = bayes_search(trial, settings, sm.params.seed, work, context)
        write_tsv(table, sm.output.table)
        figures.bayes_convergence(table, sm.output.figure)
