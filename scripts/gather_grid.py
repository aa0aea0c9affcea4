"""The learning-rate grid's points in one table and figure (rule search_grid)."""

from actionrec import figures
from actionrec.logs import logged
from actionrec.search import gather_grid
from actionrec.tables import write_tsv

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    table = gather_grid(sm.input)
    write_tsv(table, sm.output.table)
    figures.grid_curve(table, sm.output.figure)
