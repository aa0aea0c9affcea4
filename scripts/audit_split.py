"""Near-duplicate audit of the split: every val and test clip against its most
similar train clip (rule audit_split)."""

import json

from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from actionrec.logs import logged
from actionrec.tables import read_tsv

STRIP = 4  # frames of each clip in the figure

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]) as log:
    from actionrec.figures import near_duplicates
    from actionrec.groups import audit, clip_vectors, warnings_of

    p = sm.params
    split = read_tsv(sm.input.split)
    with open(sm.input.summary, encoding="utf-8") as f:
        summary = json.load(f)
    pairs = pd.DataFrame()
    if p.skipped:
        result = {"skipped": p.skipped}
        log.warning("near-duplicate audit skipped: %s", p.skipped)
    else:
        vectors = clip_vectors(sm.input.features, split)
        source = read_tsv(sm.input.groups).set_index("clip_id")["source"]
        discovered = (source.loc[split["clip_id"]] == "discovered").to_numpy()
        result, pairs = audit(
            split, vectors, similarity=p.similarity, pairs=p.pairs, discovered=discovered
        )
        result["features"] = p.features
        result["pairs"] = pairs.to_dict("records")
        log.info(
            "near-duplicates in train (cosine >= %s): val %s, test %s",
            p.similarity,
            result["val"]["near_duplicates"],
            result["test"]["near_duplicates"],
        )
    warnings = warnings_of(
        summary["method"],
        None if p.skipped else result,
        p.max_share,
        summary.get("name_leakage"),
    )
    for warning in warnings:
        log.warning(warning)
    with open(sm.output.leakage, "w", encoding="utf-8") as fh:
        json.dump({**summary, "audit": result, "warnings": warnings}, fh, indent=2)

    shards = {Path(f).name: f for f in sm.input.shards}
    where = split.set_index("clip_id")[["shard", "index"]]

    def strip(clip_id):
        shard, index = where.loc[clip_id]
        with h5py.File(shards[shard], "r") as f:
            frames = f["frames"][int(index)]  # one clip: a slice, not fancy indexing
        return frames[np.linspace(0, len(frames) - 1, STRIP).round().astype(int)]

    strips = [(strip(r.clip_id), strip(r.train_clip)) for r in pairs.itertuples()]
    near_duplicates(pairs, strips, sm.output.pairs, note=result.get("skipped", ""))
