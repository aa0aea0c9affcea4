"""The final model's card from measured numbers (rule model_card)."""

from actionrec.logs import logged
from actionrec.model_card import write_model_card

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    best_lr = sm.input.lr[0] if sm.input.lr else None
    write_model_card(
        sm.output[0], sm.input.metrics, sm.input.per_class, sm.input.history,
        sm.input.manifest, sm.input.leakage, sm.params.config, best_lr,
    )  # fmt: skip
