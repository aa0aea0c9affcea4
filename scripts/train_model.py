"""Train the final model (rule train)."""

import contextlib

from actionrec.logs import logged
from actionrec.tables import read_tsv

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]), open(sm.log[0], "a", buffering=1) as progress:
    # Keras prints its per-epoch progress to stdout: into the log with the rest.
    with contextlib.redirect_stdout(progress):
        from actionrec.train import TrainConfig, train

        num_classes = int(read_tsv(sm.input.manifest)["label"].max()) + 1
        cfg = TrainConfig.from_config(sm.params.train, seed=sm.params.seed)
        train(
            sm.input.split, sm.params.shard_dir, num_classes, sm.output.model,
            sm.output.history, sm.params.work_dir, cfg, sm.threads,
        )  # fmt: skip
