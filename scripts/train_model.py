"""Train the final model (rule train)."""

import contextlib

from actionrec.logs import logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]), open(sm.log[0], "a", buffering=1) as progress:
    # Keras prints its per-epoch progress to stdout: into the log with the rest.
    with contextlib.redirect_stdout(progress):
        from actionrec.manifest import read_classes
        from actionrec.pipeline import Data
        from actionrec.search import resolve_lr
        from actionrec.train import TrainConfig, train

        data = Data.of(
            sm.input.split, sm.input.shards, len(read_classes(sm.input.classes)), sm.input.features
        )
        options = resolve_lr(sm.params.train, sm.input.lr[0] if sm.input.lr else None)
        cfg = TrainConfig.from_config(options, seed=sm.params.seed)
        train(
            data,
            cfg,
            sm.params.work_dir,
            model_path=sm.output.model,
            history_path=sm.output.history,
            threads=sm.threads,
        )
