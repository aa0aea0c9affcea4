"""Verify every shard against the manifest (rule check_shards, on request)."""

import logging
from pathlib import Path

from actionrec.logs import logged
from actionrec.shardcheck import check_shards
from actionrec.tables import read_tsv, write_tsv

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    extract = sm.params.extract
    table = check_shards(
        Path(sm.input.shards[0]).parent,
        read_tsv(sm.input.manifest),
        clips_per_shard=extract["clips_per_shard"],
        frames=extract["frames"],
        size=extract["size"],
        frames_per_segment=extract["frames_per_segment"],
        resize=extract["resize"],
    )
    write_tsv(table, sm.output[0])
    bad = table[table["status"] != "ok"]
    if len(bad):
        logging.getLogger("check_shards").error(
            "%d bad shard(s): %s. `actionrec check-shards --remove-bad` moves corrupt "
            "ones aside; snakemake then extracts them anew. A mismatch is a shard extracted "
            "with other settings than this config's.",
            len(bad),
            ", ".join(bad["shard"] + " (" + bad["status"] + ")"),
        )
