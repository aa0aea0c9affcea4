"""One point of the learning-rate grid (rule search_grid_point)."""

import contextlib
import json

from actionrec.logs import logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]), open(sm.log[0], "a", buffering=1) as progress:
    with contextlib.redirect_stdout(progress):
        from actionrec.manifest import read_classes
        from actionrec.pipeline import Data
        from actionrec.search import SearchSettings, run_trial

        settings = SearchSettings.from_config(sm.params.search)
        data = Data.of(
            sm.input.split, sm.input.shards, len(read_classes(sm.input.classes)), sm.input.features
        )
        result = run_trial(
            float(sm.wildcards.lr), data, sm.params.train, settings, sm.params.work_dir,
            seed=sm.params.seed, threads=sm.threads,
        )  # fmt: skip
        with open(sm.output[0], "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
