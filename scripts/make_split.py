"""Groups (from names, or discovered from frozen features), the train/val/test
split and its group-leakage summary (rule split)."""

import json

from actionrec.logs import logged
from actionrec.tables import read_tsv, write_tsv

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]) as log:
    from actionrec.groups import choose_groups, clip_vectors
    from actionrec.split import make_split

    p = sm.params
    report = read_tsv(sm.input.report)
    ok = report[report["status"] == "ok"].reset_index(drop=True)
    vectors = clip_vectors(sm.input.features, ok) if sm.input.features else None
    grouped, groups = choose_groups(ok, p.groups, vectors, p.threshold)
    table, summary = make_split(
        grouped,
        p.method,
        dict(p.fractions),
        seed=p.seed,
        splits_dir=p.splits_dir,
        official_number=p.official_split,
    )
    summary["groups"] = groups
    write_tsv(table, sm.output.split)
    write_tsv(grouped[["clip_id", "class", "name_group", "group", "source"]], sm.output.groups)
    with open(sm.output.summary, "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
    log.info(
        "split %s, groups from %s (%d): %s, leakage %s",
        p.method,
        groups["source"],
        groups["groups"],
        summary["clips"],
        summary["leakage"],
    )
