"""Bayesian learning-rate search with scikit-optimize (rule search_bayes)."""

import contextlib
from pathlib import Path

from actionrec.logs import logged
from actionrec.tables import read_tsv, write_tsv

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]), open(sm.log[0], "a", buffering=1) as progress:
    with contextlib.redirect_stdout(progress):
        from actionrec import figures
        from actionrec.search import bayes_search, run_trial, settings_from_config

        settings = settings_from_config(sm.params.search)
        num_classes = int(read_tsv(sm.input.manifest)["label"].max()) + 1
        work = Path(sm.params.work_dir)

        def trial(lr):
            return run_trial(
                lr, sm.input.split, sm.params.shard_dir, num_classes, sm.params.train,
                sm.params.seed, settings, work / "trial", sm.threads,
            )  # fmt: skip

        context = {"train": sm.params.train, "split": Path(sm.input.split).stat().st_size}
        table = bayes_search(trial, settings, sm.params.seed, work / "trials.tsv", context)
        write_tsv(table, sm.output.table)
        figures.bayes_convergence(table, sm.output.figure)
