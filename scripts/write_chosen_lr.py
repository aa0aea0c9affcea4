"""The chosen learning rate as a file named by it (rule chosen_lr)."""

from actionrec.logs import logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    with open(sm.output[0], "w", encoding="utf-8") as f:
        f.write(f"{float(sm.wildcards.lr)!r}\n")
