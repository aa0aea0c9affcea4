"""Classify a folder of new videos with the final model (rule predict)."""

import logging

from actionrec.manifest import read_classes
from actionrec.logs import logged
from actionrec.predict import find_videos, predict_videos
from actionrec.tables import write_tsv

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    log = logging.getLogger("predict")
    videos = find_videos([sm.input.videos], sm.params.extensions)

    def report(row):
        if row["status"] == "ok":
            log.info("%s: %s (%.3f)", row["video"], row["predicted"], row["probability"])
        else:
            log.warning("%s: not classified: %s", row["video"], row["error"])

    table = predict_videos(
        sm.input.model,
        videos,
        classes=read_classes(sm.input.classes),
        top=sm.params.top,
        window_seconds=sm.params.window_seconds,
        views=sm.params.views,
        per_segment=sm.params.per_segment,
        resize=sm.params.resize,
        ffmpeg_exe=sm.params.ffmpeg,
        on_result=report,
    )
    write_tsv(table, sm.output[0])
