"""One point of the learning-rate grid (rule search_grid_point)."""

import contextlib
import json

from actionrec.logs import logged
from actionrec.tables import read_tsv

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]), open(sm.log[0], "a", buffering=1) as progress:
    with contextlib.redirect_stdout(progress):
        from actionrec.search import run_trial, settings_from_config

        settings = settings_from_config(sm.params.search)
        num_classes = int(read_tsv(sm.input.manifest)["label"].max()) + 1
        result = run_trial(
            float(sm.wildcards.lr), sm.input.split, sm.params.shard_dir, num_classes,
            sm.params.train, sm.params.seed, settings, sm.params.work_dir, sm.threads,
        )  # fmt: skip
        with open(sm.output[0], "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
