"""Train the final model (rule train)."""

import contextlib

from actionrec.logs import logged
from actionrec.tables import read_tsv

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]), open(sm.log[0], "a", buffering=1) as progress:
    # Keras prints its per-epoch progress to stdout: into the log with the rest.
    with contextlib.redirect_stdout(progress):
        from actionrec.evaluate import class_names, write_classes
        from actionrec.search import resolve_lr
        from actionrec.train import TrainConfig, train

        names = class_names(read_tsv(sm.input.manifest))
        num_classes = len(names)
        options = resolve_lr(sm.params.train, sm.input.lr[0] if sm.input.lr else None)
        cfg = TrainConfig.from_config(options, seed=sm.params.seed)
        train(
            sm.input.split, sm.params.shard_dir, num_classes, sm.output.model,
            sm.output.history, sm.params.work_dir, cfg, sm.threads,
        )  # fmt: skip
        write_classes(names, sm.output.classes)
