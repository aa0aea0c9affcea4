"""Explanation figures for chosen test clips (rule explain)."""

from pathlib import Path

from actionrec.logs import logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]) as log:
    import keras

    from actionrec.explain import choose_clips, explain_figure
    from actionrec.manifest import read_classes
    from actionrec.pipeline import Data, clip_table, read_clip
    from actionrec.tables import read_tsv

    names = read_classes(sm.input.classes)
    data = Data.of_rule(sm.input)
    model = keras.saving.load_model(sm.input.model)
    chosen = choose_clips(
        read_tsv(sm.input.predictions), read_tsv(sm.input.per_class), sm.params.clips
    )
    test = clip_table(data.split, "test").set_index("clip_id")
    out = Path(sm.output[0])
    out.mkdir(parents=True, exist_ok=True)
    for row in chosen.itertuples():
        clip = read_clip(data, test.loc[row.clip_id, "shard"], int(test.loc[row.clip_id, "index"]))
        kind = "correct" if row.correct else "mistake"
        explain_figure(
            model,
            clip,
            names,
            out / f"{row.clip_id}.png",
            true=names.index(row.true),
            title=f"{row.clip_id} ({kind})",
        )
        log.info("explained %s: true %s, predicted %s", row.clip_id, row.true, row.predicted)
