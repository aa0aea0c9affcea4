"""Train/val/test split and leakage summary (rule split)."""

import json

from actionrec.logs import logged
from actionrec.split import make_split
from actionrec.tables import read_tsv, write_tsv

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]) as log:
    p = sm.params
    table, summary = make_split(
        read_tsv(sm.input[0]),
        p.method,
        dict(p.fractions),
        seed=p.seed,
        splits_dir=p.splits_dir,
        official_number=p.official_split,
    )
    write_tsv(table, sm.output.split)
    with open(sm.output.leakage, "w") as fh:
        json.dump(summary, fh, indent=2)
    log.info("split %s: %s, leakage %s", p.method, summary["clips"], summary["leakage"])
