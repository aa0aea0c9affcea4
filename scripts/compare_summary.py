"""The backbone comparison in one table, a Markdown page and figures (rule compare_summary)."""

from actionrec import figures
from actionrec.verdict import (
    SUMMARY_COLUMNS,
    claim_sentence,
    histories,
    markdown,
    paired_comparisons,
    summarise,
)
from actionrec.logs import logged
from actionrec.tables import write_tsv

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    summary = summarise(sm.input.metrics)
    pairs = paired_comparisons(sm.input.metrics, sm.input.predictions)
    sentence = claim_sentence(summary, pairs)
    write_tsv(summary[[c for c in SUMMARY_COLUMNS if c in summary]], sm.output.table)
    write_tsv(pairs, sm.output.pairs)
    with open(sm.output.markdown, "w", encoding="utf-8") as f:
        f.write(markdown(summary, sentence, pairs))
    figures.compare_curves(histories(sm.input.metrics, sm.input.histories), sm.output.curves)
    figures.compare_time(summary, sm.output.time)
