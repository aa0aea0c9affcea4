"""Open-set figures: test clips as known, other actions as unknown (rule openset)."""

from actionrec.logs import logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    from actionrec import figures
    from actionrec.calibration import openset, read_calibration, write_json
    from actionrec.manifest import read_classes
    from actionrec.pipeline import Data
    from actionrec.predict import find_videos

    names = read_classes(sm.input.classes)
    summary, scores = openset(
        sm.input.model,
        Data.of(sm.input.split, sm.input.shards, len(names)),
        find_videos([sm.input.unknown], sm.params.extensions),
        read_calibration(sm.input.model, sm.input.calibration),
        views=sm.params.views,
        crops=sm.params.crops,
        batch_size=sm.params.batch_size,
        window_seconds=sm.params.window_seconds,
        per_segment=sm.params.per_segment,
        resize=sm.params.resize,
        ffmpeg_exe=sm.params.ffmpeg,
    )
    write_json(summary, sm.output.summary)
    figures.openset_scores(scores, summary, sm.output.figure)
