"""Join the per-shard reports into results/data/extract_report.tsv (rule extract_report)."""

from actionrec.extract import gather_reports
from actionrec.logs import logged
from actionrec.tables import write_tsv

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    write_tsv(gather_reports(sm.input.reports, sm.params.max_bad_fraction), sm.output[0])
