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

    # What the whole-video table and the timelines read alike.
    common = {
        "classes": read_classes(sm.input.classes),
        "top": sm.params.top,
        "views": sm.params.views,
        "per_segment": sm.params.per_segment,
        "resize": sm.params.resize,
        "ffmpeg_exe": sm.params.ffmpeg,
    }
    table = predict_videos(
        sm.input.model,
        videos,
        window_seconds=sm.params.window_seconds,
        on_result=report,
        **common,
    )
    write_tsv(table, sm.output[0])
    if sm.params.timeline["enabled"]:
        from pathlib import Path

        from actionrec.timeline import timeline_folders, timelines, training_seconds

        def timeline_done(row, segs):
            if row["status"] == "ok":
                log.info("%s: %s segment(s) -> %s", row["video"], row["segments"], row["folder"])
            else:
                log.warning("%s: no timeline: %s", row["video"], row["error"])

        settings = sm.params.timeline
        Path(sm.output.timelines).mkdir(parents=True, exist_ok=True)
        window = settings["window_seconds"] or training_seconds(sm.input.clips)
        timelines(
            sm.input.model,
            videos,
            timeline_folders(videos, sm.output.timelines, root=sm.input.videos),
            window_seconds=window,
            stride=settings["stride"],
            min_duration=settings["min_duration"],
            on_result=timeline_done,
            **common,
        )
