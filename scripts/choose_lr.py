"""The learning rate with the lowest val loss over the searches (rule best_lr)."""

import json
import logging

from actionrec.logs import logged
from actionrec.search import choose, validation_noise
from actionrec.tables import read_tsv

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    tables = {m: read_tsv(p) for m, p in zip(sm.params.methods, sm.input.searches, strict=True)}
    best = choose(tables)
    split = read_tsv(sm.input.split)
    best["val_noise"] = validation_noise(tables, split.loc[split["split"] == "val", "group"])
    with open(sm.output[0], "w", encoding="utf-8") as f:
        json.dump(best, f, indent=1)
    logging.getLogger("best_lr").info(
        "chose lr %g from the %s search (val loss %.4f)",
        best["lr"],
        best["search"],
        best["val_loss"],
    )
    logging.getLogger("best_lr").info(best["val_noise"]["sentence"])
