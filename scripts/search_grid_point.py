"""One point of the learning-rate grid (rule search_grid_point)."""

import json

from actionrec.logs import logged_with_progress

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged_with_progress(sm.log[0]):
    from actionrec.pipeline import Data
    from actionrec.search import SearchSettings
    from actionrec.train import run_trial

    settings = SearchSettings.from_config(sm.params.search)
    data = Data.of_rule(sm.input)
    result = run_trial(
        float(sm.wildcards.lr),
        data,
        sm.params.train,
        settings,
        sm.params.work_dir,
        seed=sm.params.seed,
        threads=sm.threads,
    )
    with open(sm.output[0], "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
