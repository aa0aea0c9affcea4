"""Verify the HDF5 shards against the manifest and the extraction settings.

Every shard must open, hold the datasets with the declared shapes and dtypes,
list the manifest's clips of its slice (those extracted ok, in order, with
their labels), and give back every clip's frames when read. A shard that
fails is reported with its path and the problem; on request it is moved
aside (``<shard>.corrupt``), so that the next ``snakemake`` run extracts it
again and reruns what depends on it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from .catalog import shard_count, shard_name
from .extract import shard_rows

log = logging.getLogger(__name__)

COLUMNS = ["shard", "status", "clips", "problem"]


def check_shard(
    path: str | os.PathLike,
    expected: pd.DataFrame,
    frames: int,
    size: int,
    frames_per_segment: int = 1,
) -> tuple[int, list[str]]:
    """(clips in the shard, problems). ``expected``: the manifest rows of this
    shard's slice that its report lists as extracted ok."""
    problems: list[str] = []
    try:
        with h5py.File(path, "r") as f:
            missing = [d for d in ("frames", "label", "clip_id") if d not in f]
            if missing:
                return 0, [f"missing datasets {missing}"]
            data = f["frames"]
            n = data.shape[0]
            if data.dtype != np.uint8:
                problems.append(f"frames dtype {data.dtype}, expected uint8")
            stored = frames * frames_per_segment
            if data.shape[1:] != (stored, size, size, 3):
                problems.append(
                    f"frames shape {data.shape[1:]}, expected {(stored, size, size, 3)} "
                    "(extract.frames x extract.frames_per_segment, extract.size)"
                )
            # Shards written before frames_per_segment existed hold one frame a segment.
            for key, want, default in (
                ("frames", frames, -1),
                ("frames_per_segment", frames_per_segment, 1),
                ("size", size, -1),
            ):
                if int(f.attrs.get(key, default)) != want:
                    problems.append(f"attribute {key}={f.attrs.get(key)}, expected {want}")
            ids = [c.decode() if isinstance(c, bytes) else str(c) for c in f["clip_id"][:]]
            labels = f["label"][:]
            if len(ids) != n or len(labels) != n:
                problems.append(f"{n} clips of frames, {len(ids)} ids, {len(labels)} labels")
            want = expected["clip_id"].tolist()
            if ids != want:
                problems.append(f"clips {ids[:3]}... differ from the manifest's {want[:3]}...")
            elif labels.tolist() != expected["label"].tolist():
                problems.append("labels differ from the manifest's")
            for i in range(n):  # one chunk per clip: a slice per read
                data[i]
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        return 0, problems + [f"unreadable: {err}"]
    return n, problems


def check_shards(
    shard_dir: str | os.PathLike,
    manifest: pd.DataFrame,
    *,
    clips_per_shard: int,
    frames: int,
    size: int,
    frames_per_segment: int = 1,
    remove_bad: bool = False,
) -> pd.DataFrame:
    """Check every shard the manifest calls for; one row per shard."""
    shard_dir = Path(shard_dir)
    rows = []
    for k in range(shard_count(len(manifest), clips_per_shard)):
        path = shard_dir / f"{shard_name(k)}.h5"
        report = path.with_suffix(".tsv")
        expected = shard_rows(manifest, k, clips_per_shard)
        if report.exists():
            ok = pd.read_csv(report, sep="\t", usecols=["clip_id", "status"])
            expected = expected[expected["clip_id"].isin(ok.loc[ok["status"] == "ok", "clip_id"])]
        if not path.exists():
            rows.append(
                {"shard": str(path), "status": "missing", "clips": 0, "problem": "no such file"}
            )
            continue
        n, problems = check_shard(path, expected, frames, size, frames_per_segment)
        status = "ok" if not problems else "corrupt"
        rows.append(
            {"shard": str(path), "status": status, "clips": n, "problem": "; ".join(problems)}
        )
        if problems:
            log.error("%s: %s", path, "; ".join(problems))
            if remove_bad:
                aside = path.with_name(path.name + ".corrupt")
                os.replace(path, aside)
                log.warning("moved %s to %s: the next snakemake run extracts it again", path, aside)
    table = pd.DataFrame(rows, columns=COLUMNS)
    log.info("%d shards: %d ok", len(table), int((table["status"] == "ok").sum()))
    return table
