"""Export the final model for serving and check every export (rule export)."""

from actionrec.logs import logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    from actionrec.export import export_model, test_clips
    from actionrec.pipeline import Data
    from actionrec.tables import write_tsv

    table = export_model(
        sm.input.model,
        sm.output.models,
        test_clips(Data.of_rule(sm.input), sm.params.export["clips"]),
        formats=tuple(sm.params.export["formats"]),
        repeats=sm.params.export["repeats"],
    )
    write_tsv(table, sm.output.summary)
