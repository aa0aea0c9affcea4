"""Decode one shard's clips into HDF5 (rule extract_shard)."""

from actionrec.extract import extract_shard, shard_rows
from actionrec.logs import logged
from actionrec.tables import read_tsv

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    p = sm.params
    rows = shard_rows(read_tsv(sm.input.manifest), int(sm.wildcards.shard), p.clips_per_shard)
    extract_shard(
        rows,
        sm.output.shard,
        sm.output.report,
        frames=p.frames,
        size=p.size,
        frames_per_segment=p.frames_per_segment,
        resize=p.resize,
        compression=p.compression,
        on_bad_video=p.on_bad_video,
        ffmpeg_exe=p.ffmpeg,
        threads=sm.threads,
        buffer_bytes=p.buffer_mb * 2**20,
    )
