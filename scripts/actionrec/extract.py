"""Frames from clips into HDF5 shards, one shard per job.

A shard holds up to N clips, each as T frames of S x S RGB uint8:

- ``frames``   uint8 [n, T * K, S, S, 3], chunked one clip per chunk: T
  segments of the clip, K frames of each (``frames_per_segment``), in order
- ``label``    int64 [n]
- ``clip_id``  str [n]
- ``path``, ``source_frames``, ``fps``, ``duration``, ``padded``: per clip

and attributes naming T (``frames``), K (``frames_per_segment``), the frames
stored per clip (``stored_frames``), S, the sampling and resize rules, the
source paths, ffmpeg's version and the code version. With K = 1 a clip is its
T segment centres; with K > 1 training draws one of each segment's K frames
per epoch (TSN's sparse sampling) and evaluation averages views. A shard is
written under a temporary name and renamed when complete, so a half-written
shard is never read.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from . import __version__
from .provenance import code_digest
from .tables import read_tsv, write_tsv
from .video import DEFAULT_BUFFER_BYTES, BadVideo, decode_clip, find_ffmpeg

log = logging.getLogger(__name__)

REPORT_COLUMNS = [
    "clip_id",
    "path",
    "class",
    "label",
    "group",
    "shard",
    "index",
    "status",
    "reason",
    "source_frames",
    "fps",
    "duration",
    "padded",
]
SAMPLING_RULE = (
    "uniform segments: frame floor((i + (j + 0.5) / K) * n / T) for segment i in 0..T-1 "
    "and j in 0..K-1 of the n decoded frames, stored at position i * K + j (the "
    "centres of T * K equal parts); clips with n < T * K repeat frames (padded = true)"
)
COMPRESSION = {
    "none": {},
    "lzf": {"compression": "lzf"},
    "gzip": {"compression": "gzip", "compression_opts": 1},
}


class ExtractError(RuntimeError):
    """Extraction must stop; the message names the file and the fix."""


def shard_rows(manifest: pd.DataFrame, shard: int, clips_per_shard: int) -> pd.DataFrame:
    """The manifest rows that go into shard number ``shard`` (0-based)."""
    return manifest.iloc[shard * clips_per_shard : (shard + 1) * clips_per_shard]


def code_version() -> str:
    """Package version and a digest of the decoding and sampling code (this
    module and every package module it imports)."""
    return f"actionrec {__version__} ({code_digest(__file__)[:12]})"


def ffmpeg_version(exe: str) -> str:
    out = subprocess.run([exe, "-version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


def _create_datasets(f: h5py.File, frames: int, size: int, compression: str) -> dict:
    text = h5py.string_dtype()
    opts = {"track_times": False}
    ds = {
        "frames": f.create_dataset(
            "frames",
            shape=(0, frames, size, size, 3),
            maxshape=(None, frames, size, size, 3),
            dtype="uint8",
            chunks=(1, frames, size, size, 3),
            **COMPRESSION[compression],
            **opts,
        )
    }
    for name, dtype in [
        ("label", "int64"),
        ("clip_id", text),
        ("path", text),
        ("source_frames", "int64"),
        ("fps", "float64"),
        ("duration", "float64"),
        ("padded", "bool"),
    ]:
        ds[name] = f.create_dataset(
            name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(256,), **opts
        )
    return ds


class ShardWriter:
    """One shard, written whole or not at all: clips are appended to a hidden
    temporary file, which replaces ``shard_path`` only once :meth:`finish`
    has recorded its attributes."""

    def __init__(self, shard_path: Path, stored: int, size: int, compression: str):
        self.path = shard_path
        self.tmp = shard_path.with_name(f".{shard_path.name}.part")
        shard_path.parent.mkdir(parents=True, exist_ok=True)
        self.file = h5py.File(self.tmp, "w")
        self.ds = _create_datasets(self.file, stored, size, compression)
        self.count = 0

    def append(self, row: dict, clip) -> int:
        """Add a decoded clip and its manifest row; returns its index."""
        for d in self.ds.values():
            d.resize(self.count + 1, axis=0)
        self.ds["frames"][self.count] = clip.frames
        for name, value in [
            ("label", row["label"]),
            ("clip_id", row["clip_id"]),
            ("path", row["path"]),
            ("source_frames", clip.source_frames),
            ("fps", clip.fps),
            ("duration", clip.duration),
            ("padded", clip.padded),
        ]:
            self.ds[name][self.count] = value
        self.count += 1
        return self.count - 1

    def finish(self, attrs: dict) -> None:
        self.file.attrs.update(attrs)
        self.file.close()
        os.replace(self.tmp, self.path)

    def abandon(self) -> None:
        """Close the temporary file after a failure (it is left for inspection
        and is overwritten by the next attempt; a reader never sees it)."""
        if self.file.id.valid:
            self.file.close()


def report_row(row: dict, shard: str, index: int, reason: str, clip=None) -> dict:
    """A clip's row in the shard's report: ok with its decoding numbers, or
    (no ``clip``) skipped with ``reason``."""
    entry = {k: row[k] for k in ("clip_id", "path", "class", "label", "group")}
    if clip is None:
        numbers = {"source_frames": 0, "fps": float("nan"), "duration": float("nan")}
        return {
            **entry,
            "shard": shard,
            "index": -1,
            "status": "skipped",
            "reason": reason,
            **numbers,
            "padded": False,
        }
    numbers = {"source_frames": clip.source_frames, "fps": clip.fps, "duration": clip.duration}
    return {
        **entry,
        "shard": shard,
        "index": index,
        "status": "ok",
        "reason": reason,
        **numbers,
        "padded": clip.padded,
    }


def _decode_into(
    writer: ShardWriter,
    rows: pd.DataFrame,
    stored: int,
    size: int,
    on_bad_video: str,
    decode: dict,
) -> tuple[list[dict], int]:
    """Each clip of ``rows`` decoded to ``stored`` frames into ``writer``, or
    reported as skipped (or, ``on_bad_video`` fail, the end of the job);
    returns the report rows and the frames decoded."""
    report, decoded, name = [], 0, writer.path.name
    for i, row in enumerate(rows.to_dict("records"), 1):
        try:
            clip = decode_clip(row["path"], stored, size, **decode)
        except BadVideo as err:
            if on_bad_video == "fail":
                raise ExtractError(
                    f"{row['path']}: {err}. Remove or replace the file, or set "
                    "extract.on_bad_video: skip to leave bad clips out (they are "
                    "listed in results/data/extract_report.tsv)"
                ) from err
            log.warning("[%d/%d] skipped %s: %s", i, len(rows), row["path"], err)
            report.append(report_row(row, name, -1, str(err)))
            continue
        index = writer.append(row, clip)
        decoded += clip.source_frames
        padded = f"padded: {clip.source_frames} frames < {stored} stored" if clip.padded else ""
        report.append(report_row(row, name, index, padded, clip))
        log.info(
            "[%d/%d] %s: %d frames, %.2f fps%s",
            i,
            len(rows),
            row["clip_id"],
            clip.source_frames,
            clip.fps,
            " (padded)" if clip.padded else "",
        )
    return report, decoded


def extract_shard(
    rows: pd.DataFrame,
    shard_path: str | os.PathLike,
    report_path: str | os.PathLike,
    *,
    frames: int,
    size: int,
    frames_per_segment: int = 1,
    resize: str = "crop",
    compression: str = "none",
    on_bad_video: str = "skip",
    ffmpeg_exe: str | None = None,
    threads: int = 1,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
) -> pd.DataFrame:
    """Decode every clip in ``rows`` (manifest rows) into one shard.

    ``frames`` (T) segments of each clip, ``frames_per_segment`` (K) frames
    of each segment: T * K frames a clip. Memory holds one clip at a time.
    Bad clips are skipped and reported, or stop the job when ``on_bad_video``
    is ``fail``. Returns the shard's report.
    """
    if frames_per_segment < 1:
        raise ValueError(f"frames_per_segment must be at least 1, not {frames_per_segment}")
    stored = frames * frames_per_segment
    if on_bad_video not in ("skip", "fail"):
        raise ValueError(f"on_bad_video must be 'skip' or 'fail', not {on_bad_video!r}")
    if compression not in COMPRESSION:
        raise ValueError(f"compression must be one of {list(COMPRESSION)}, not {compression!r}")
    exe = find_ffmpeg(ffmpeg_exe)
    shard_path = Path(shard_path)
    start = time.perf_counter()
    writer = ShardWriter(shard_path, stored, size, compression)
    try:
        decode = {"resize": resize, "ffmpeg_exe": exe, "threads": threads}
        report, decoded = _decode_into(
            writer, rows, stored, size, on_bad_video, {**decode, "buffer_bytes": buffer_bytes}
        )
        writer.finish(
            {
                "frames": frames,
                "frames_per_segment": frames_per_segment,
                "stored_frames": stored,
                "size": size,
                "sampling": SAMPLING_RULE,
                "resize": resize,
                "channels": "RGB",
                "source_paths": np.array(rows["path"].tolist(), dtype=h5py.string_dtype()),
                "code_version": code_version(),
                "ffmpeg": ffmpeg_version(exe),
                "compression": compression,
            }
        )
    finally:
        writer.abandon()
    seconds = time.perf_counter() - start
    log.info(
        "%s: %d of %d clips ok, %d frames decoded in %.1f s (%.0f frames/s)",
        shard_path.name,
        writer.count,
        len(rows),
        decoded,
        seconds,
        decoded / max(seconds, 1e-9),
    )
    df = pd.DataFrame(report, columns=REPORT_COLUMNS)
    write_tsv(df, report_path)
    return df


def gather_reports(report_paths: list[str | os.PathLike], max_bad_fraction: float) -> pd.DataFrame:
    """Join the per-shard reports; stop when too many clips are bad."""
    df = pd.concat([read_tsv(p) for p in report_paths], ignore_index=True)
    bad = df[df["status"] != "ok"]
    share = len(bad) / max(len(df), 1)
    if len(bad):
        log.warning("%d of %d clips are bad (%.1f%%)", len(bad), len(df), 100 * share)
    if share > max_bad_fraction:
        kinds = Counter(r.split(":")[0] for r in bad["reason"])
        examples = "\n".join(
            f"  {p}: {r}" for p, r in zip(bad["path"][:10], bad["reason"][:10], strict=True)
        )
        raise ExtractError(
            f"{len(bad)} of {len(df)} clips ({100 * share:.1f}%) could not be used, more "
            f"than extract.max_bad_fraction = {max_bad_fraction}. Reasons: "
            f"{dict(kinds)}. First ones:\n{examples}\nThe per-shard reports are "
            f"results/data/shards/shard-*.tsv. Fix or remove these files, or raise "
            "extract.max_bad_fraction."
        )
    return df
