"""Verify every shard against the manifest (rule check_shards, on request)."""

import logging

from actionrec.logs import logged
from actionrec.shardcheck import check_shards
from actionrec.tables import read_tsv, write_tsv

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    extract = sm.params.extract
    table = check_shards(
        sm.params.shard_dir, read_tsv(sm.input.manifest), extract["clips_per_shard"],
        extract["frames"], extract["size"],
    )  # fmt: skip
    write_tsv(table, sm.output[0])
    bad = table[table["status"] != "ok"]
    if len(bad):
        logging.getLogger("check_shards").error(
            "%d bad shard(s): %s. `PYTHONPATH=scripts python -m actionrec check-shards "
            "--remove-bad` moves them aside; snakemake then extracts them anew.",
            len(bad), ", ".join(bad["shard"]),
        )  # fmt: skip
