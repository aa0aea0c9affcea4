"""Bayesian learning-rate search with scikit-optimize (rule search_bayes)."""

from pathlib import Path

from actionrec.logs import logged_with_progress
from actionrec.tables import write_tsv

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged_with_progress(sm.log[0]):
    from actionrec import figures
    from actionrec.pipeline import Data, data_fingerprint
    from actionrec.search import SearchSettings, bayes_search
    from actionrec.train import TrainConfig, environment, run_trial

    settings = SearchSettings.from_config(sm.params.search)
    data = Data.of_rule(sm.input)
    work = Path(sm.params.work_dir)

    def trial(lr):
        return run_trial(
            lr,
            data,
            sm.params.train,
            settings,
            work / "trial",
            seed=sm.params.seed,
            threads=sm.threads,
        )

    # What the trials depend on: a rerun with other data, settings, backbone
    # files, devices or libraries starts afresh.
    trial_cfg = TrainConfig.from_config(sm.params.train, lr=settings.low, seed=sm.params.seed)
    context = {"train": sm.params.train, "data": data_fingerprint(data), **environment(trial_cfg)}
    table = bayes_search(trial, settings, sm.params.seed, work, context)
    write_tsv(table, sm.output.table)
    figures.bayes_convergence(table, sm.output.figure)
