"""Train the final model (rule train)."""

from actionrec.logs import logged_with_progress

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged_with_progress(sm.log[0]):
    from actionrec.pipeline import Data
    from actionrec.search import resolve_lr
    from actionrec.train import TrainConfig, train

    data = Data.of_rule(sm.input)
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
