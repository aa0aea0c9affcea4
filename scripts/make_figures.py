"""Figures of the final model's evaluation (rule figures)."""

from actionrec import figures
from actionrec.intervals import mistakes_by_group
from actionrec.scores import confused_pairs, confusion
from actionrec.manifest import read_classes
from actionrec.logs import logged
from actionrec.tables import read_tsv, write_tsv

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    names = read_classes(sm.input.classes)
    predictions = read_tsv(sm.input.predictions)
    cm = confusion(predictions, names)
    pairs = confused_pairs(cm, names)
    figures.per_class_f1(read_tsv(sm.input.per_class), sm.output.f1)
    figures.learning_curves(read_tsv(sm.input.history), sm.output.curves)
    figures.confusion_matrix(cm, names, sm.output.confusion)
    figures.confused_pairs(pairs, sm.output.pairs)
    write_tsv(pairs, sm.output.pairs_table)
    write_tsv(mistakes_by_group(predictions), sm.output.mistakes)
