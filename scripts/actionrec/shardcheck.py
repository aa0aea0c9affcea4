"""Verify the HDF5 shards against themselves, the manifest and the run's config.

Every shard must open, hold frames of the shape its own attributes declare,
list the manifest's clips of its slice (those extracted ok, in order, with
their labels), and give back every clip's frames when read. A shard that
fails is ``corrupt``: reported with its path and the problem and, on
request, moved aside (``<shard>.corrupt``), so that the next ``snakemake``
run extracts it again and reruns what depends on it.

A shard's slice is the one it was cut with, which its ``source_paths``
attribute (else its report) lists, skipped clips too: that tells the
clips_per_shard it was cut with. Judged by the config's slice instead, a
shard cut with a smaller clips_per_shard passed, the clips it lacks taken
for skipped ones by its own report.

A sound shard extracted with other settings than the config's, its
clips_per_shard among them, is a ``mismatch``, named with the keys and both
values. It is moved aside only when other shards match the config: when
none does, the config given is not the one they were extracted with, and
nothing is wrong with them. A shard that records no slice and holds another
one than the config's is a mismatch that is never moved: nothing tells
whether the shard or the config is wrong.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from .catalog import shard_count, shard_name
from .extract import shard_rows
from .tables import read_tsv

log = logging.getLogger(__name__)

COLUMNS = ["shard", "status", "clips", "problem"]


@dataclass
class ShardState:
    """What one shard holds: ``problems`` when it is damaged or disagrees
    with itself or the manifest; ``settings``, the extraction settings its
    attributes give; ``recorded``, whether it lists the slice it was cut
    from; ``cut``, the clips_per_shard that slice was cut with, when that
    puts other clips in it than the config's; ``slice_size``, the clips of
    the manifest slice it holds, when that is another than the config's and
    its record does not place it in this manifest."""

    clips: int = 0
    problems: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    recorded: bool = False
    cut: int | None = None
    slice_size: int | None = None


def _settings(f: h5py.File, shape: tuple[int, ...]) -> tuple[dict, list[str]]:
    """The shard's extraction settings from its attributes, and where its
    frames disagree with them. Shards written before an attribute existed
    are taken at their frames' shape (and one frame a segment)."""
    stored, height, width = shape[1], shape[2], shape[3]
    per_segment = int(f.attrs.get("frames_per_segment", 1))
    settings = {
        "frames": int(f.attrs.get("frames", stored // per_segment)),
        "frames_per_segment": per_segment,
        "size": int(f.attrs.get("size", height)),
    }
    if "resize" in f.attrs:
        settings["resize"] = str(f.attrs["resize"])
    problems = []
    declared = settings["frames"] * per_segment
    if stored != declared or int(f.attrs.get("stored_frames", declared)) != declared:
        problems.append(
            f"holds {stored} frames a clip; its attributes frames={settings['frames']} x "
            f"frames_per_segment={per_segment} say {declared}"
        )
    if (height, width) != (settings["size"],) * 2 or shape[4:] != (3,):
        problems.append(
            f"frames of {height}x{width}x{shape[4] if len(shape) > 4 else '?'}; "
            f"its attribute size={settings['size']} says "
            f"{settings['size']}x{settings['size']}x3"
        )
    return settings, problems


def _positions(manifest: pd.DataFrame) -> pd.Series | None:
    """Each clip's row in the manifest, by clip id; None when an id repeats."""
    rows = pd.Series(range(len(manifest)), index=manifest["clip_id"].astype(str))
    return None if rows.index.duplicated().any() else rows


def _slice_size(ids: list[str], labels: list[int], manifest: pd.DataFrame) -> int | None:
    """The clips_per_shard of a slice holding ``ids``: when they are manifest
    clips in the manifest's order with its labels, the clips between the
    first and the last; else None."""
    rows = _positions(manifest)
    if not ids or rows is None or not pd.Index(ids).isin(rows.index).all():
        return None
    at = rows[ids].to_numpy()
    if (np.diff(at) <= 0).any() or manifest["label"].to_numpy()[at].tolist() != labels:
        return None
    return int(at[-1] - at[0] + 1)


def _ids(table: pd.DataFrame) -> list[str]:
    return table["clip_id"].astype(str).tolist()


def _recorded_slice(f: h5py.File, listed: pd.DataFrame | None) -> list[str] | None:
    """The clip ids of the slice the shard was cut from, skipped clips too:
    its ``source_paths`` attribute (a clip's id is its file's stem), else its
    report's rows; None when it has neither."""
    if "source_paths" in f.attrs:
        paths = f.attrs["source_paths"]
        return [Path(p.decode() if isinstance(p, bytes) else str(p)).stem for p in paths]
    if listed is not None:
        return _ids(listed)
    return None


def _cut(ids: list[str], manifest: pd.DataFrame, index: int) -> int | None:
    """The clips_per_shard that makes ``ids`` shard number ``index`` of the
    manifest, or None when no clips_per_shard does (the slice is not one of
    this manifest)."""
    rows = _positions(manifest)
    if not ids or rows is None or not pd.Index(ids).isin(rows.index).all():
        return None
    at = rows[ids].to_numpy()
    start = int(at[0])
    if (np.diff(at) != 1).any() or (index and (start == 0 or start % index)):
        return None
    cut = start // index if index else len(ids)
    return cut if _ids(shard_rows(manifest, index, cut)) == ids else None


def _extracted(rows: pd.DataFrame, listed: pd.DataFrame | None) -> pd.DataFrame:
    """``rows`` less the clips the shard's report lists as skipped. A report of
    another slice says nothing about these rows: all of them are expected."""
    if listed is None or _ids(listed) != _ids(rows):
        return rows
    ok = listed.loc[listed["status"] == "ok", "clip_id"].astype(str)
    return rows[rows["clip_id"].astype(str).isin(ok)]


def check_shard(
    path: str | os.PathLike,
    manifest: pd.DataFrame,
    index: int,
    clips_per_shard: int,
    listed: pd.DataFrame | None = None,
) -> ShardState:
    """Check shard number ``index`` against its own attributes and the
    manifest rows it should hold: those of the slice it was cut with (as it
    records, see :func:`_recorded_slice`), else of the config's
    ``clips_per_shard``, less the clips its report ``listed`` gives as
    skipped."""
    state = ShardState()
    wanted = shard_rows(manifest, index, clips_per_shard)
    try:
        with h5py.File(path, "r") as f:
            missing = [d for d in ("frames", "label", "clip_id") if d not in f]
            if missing:
                state.problems.append(f"missing datasets {missing}")
                return state
            data = f["frames"]
            n = data.shape[0]
            if data.dtype != np.uint8:
                state.problems.append(f"frames dtype {data.dtype}, expected uint8")
            if data.ndim != 5:
                state.problems.append(f"frames of shape {data.shape}, expected [n, T, S, S, 3]")
                return state
            state.settings, own = _settings(f, data.shape)
            state.problems += own
            recorded = _recorded_slice(f, listed)
            state.recorded = recorded is not None
            cut = None if recorded is None else _cut(recorded, manifest, index)
            rows = wanted if cut is None else shard_rows(manifest, index, cut)
            if _ids(rows) != _ids(wanted):
                state.cut = cut
            expected = _extracted(rows, listed)
            ids = [c.decode() if isinstance(c, bytes) else str(c) for c in f["clip_id"][:]]
            labels = f["label"][:].tolist()
            if len(ids) != n or len(labels) != n:
                state.problems.append(f"{n} clips of frames, {len(ids)} ids, {len(labels)} labels")
            want = _ids(expected)
            if ids != want:
                if cut is None:
                    state.slice_size = _slice_size(ids, labels, manifest)
                if state.slice_size is None:
                    state.problems.append(
                        f"clips {ids[:3]}... differ from the manifest's {want[:3]}..."
                    )
            elif labels != expected["label"].tolist():
                state.problems.append("labels differ from the manifest's")
            for i in range(n):  # one chunk per clip: a slice per read
                data[i]
            state.clips = n
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        state.clips = 0
        state.problems.append(f"unreadable: {err}")
    return state


def _mismatches(
    state: ShardState, config: dict, clips_per_shard: int, index: int, clips: int
) -> list[str]:
    """Where a shard's settings differ from the config's, key by key."""
    differ = [
        f"extract.{key} is {want} in the config, {state.settings[key]} in the shard"
        for key, want in config.items()
        if key in state.settings and state.settings[key] != want
    ]
    if state.cut is not None:
        # A first shard holding every clip was cut with any clips_per_shard that large.
        cut = f"{state.cut} or more" if index == 0 and state.cut == clips else state.cut
        differ.append(
            f"extract.clips_per_shard is {clips_per_shard} in the config, {cut} in the shard"
        )
    elif state.slice_size is not None:
        differ.append(
            f"extract.clips_per_shard is {clips_per_shard} in the config; the shard holds "
            f"a slice of {state.slice_size} clips of the manifest"
            + ("" if state.recorded else ", and no record of the slice it was cut from")
        )
    return differ


def check_shards(
    shard_dir: str | os.PathLike,
    manifest: pd.DataFrame,
    *,
    clips_per_shard: int,
    frames: int,
    size: int,
    frames_per_segment: int = 1,
    resize: str | None = None,
    remove_bad: bool = False,
) -> pd.DataFrame:
    """Check every shard the manifest calls for; one row per shard, with
    status ``ok``, ``missing``, ``corrupt`` or ``mismatch``. ``remove_bad``
    moves corrupt shards aside, and mismatched ones when some shard matches
    the config, except those that hold another slice and record none."""
    shard_dir = Path(shard_dir)
    config = {"frames": frames, "frames_per_segment": frames_per_segment, "size": size}
    if resize is not None:
        config["resize"] = resize
    rows = []
    unrecorded = set()
    for k in range(shard_count(len(manifest), clips_per_shard)):
        path = shard_dir / f"{shard_name(k)}.h5"
        report = path.with_suffix(".tsv")
        if not path.exists():
            rows.append(
                {"shard": str(path), "status": "missing", "clips": 0, "problem": "no such file"}
            )
            continue
        listed = read_tsv(report) if report.exists() else None
        state = check_shard(path, manifest, k, clips_per_shard, listed)
        differ = _mismatches(state, config, clips_per_shard, k, len(manifest))
        if state.slice_size is not None and not state.recorded:
            unrecorded.add(str(path))
        if state.problems:
            status = "corrupt"
        elif differ:
            status = "mismatch"
        else:
            status = "ok"
        problem = state.problems + ([f"config mismatch: {'; '.join(differ)}"] if differ else [])
        rows.append(
            {
                "shard": str(path),
                "status": status,
                "clips": state.clips,
                "problem": "; ".join(problem),
            }
        )
        if problem:
            log.error("%s: %s", path, "; ".join(problem))
    table = pd.DataFrame(rows, columns=COLUMNS)
    mismatched = table["status"] == "mismatch"
    if mismatched.any() and not (table["status"] == "ok").any():
        log.error(
            "no shard matches the config: give the config the shards were extracted with, or "
            "run snakemake to extract them with this one; none of them is moved aside"
        )
    if remove_bad:
        movable = table["status"] == "corrupt"
        if (table["status"] == "ok").any():
            movable |= mismatched & ~table["shard"].isin(unrecorded)
        for shard in table.loc[movable, "shard"]:
            aside = Path(shard).with_name(Path(shard).name + ".corrupt")
            os.replace(shard, aside)
            log.warning("moved %s to %s: the next snakemake run extracts it again", shard, aside)
    log.info("%d shards: %d ok", len(table), int((table["status"] == "ok").sum()))
    return table
