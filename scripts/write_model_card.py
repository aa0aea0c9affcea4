"""The final model's card from measured numbers (rule model_card)."""

from actionrec.logs import logged
from actionrec.model_card import write_model_card

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    best_lr = sm.input.lr[0] if sm.input.lr else None
    write_model_card(
        sm.output[0],
        metrics_json=sm.input.metrics,
        per_class_tsv=sm.input.per_class,
        history_tsv=sm.input.history,
        manifest_tsv=sm.input.manifest,
        leakage_json=sm.input.leakage,
        config=sm.params.config,
        best_lr_json=best_lr,
        robustness_json=sm.input.robustness[0] if sm.input.robustness else None,
        openset_json=sm.input.openset[0] if sm.input.openset else None,
    )
