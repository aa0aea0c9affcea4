"""Extraction throughput against plain ffmpeg decoding, on the same clips.

Prints, side by side in one run:
  1. plain `ffmpeg -threads 1 -i CLIP -map 0:v:0 -f null -`, one clip after another;
  2. this workflow's decode_clip (decode, scale to S x S, RGB, sample T), one core;
  3. plain ffmpeg again, one clip list per core, all cores at once;
  4. whole shards extracted by as many parallel workers as cores, as Snakemake
     runs extract_shard jobs, with the share of all cores' time that was busy.

Usage: python bench/extract_throughput.py [--clips DIR] [--frames 16] [--size 224]
DIR defaults to ../shared/data/ucf101-sample/UCF-101 (UCF101's layout).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from actionrec.catalog import shard_count  # noqa: E402
from actionrec.extract import extract_shard, shard_rows  # noqa: E402
from actionrec.manifest import build_manifest  # noqa: E402
from actionrec.video import decode_clip, find_ffmpeg  # noqa: E402

DEFAULT_CLIPS = Path(__file__).resolve().parents[2] / "shared/data/ucf101-sample/UCF-101"


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def plain_ffmpeg(exe: str, paths: list[str]) -> float:
    for p in paths:
        subprocess.run(
            [
                exe,
                "-nostdin",
                "-v",
                "error",
                "-threads",
                "1",
                "-i",
                p,
                "-map",
                "0:v:0",
                "-f",
                "null",
                "-",
            ],
            check=True,
        )
    return 0.0


def ours(exe: str, paths: list[str], frames: int, size: int) -> int:
    return sum(decode_clip(p, frames, size, ffmpeg_exe=exe, threads=1).source_frames for p in paths)


def timed(fn, *args):
    wall, cpu = time.perf_counter(), cpu_seconds()
    out = fn(*args)
    return out, time.perf_counter() - wall, cpu_seconds() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=Path, default=DEFAULT_CLIPS)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeat", type=int, default=2, help="passes over the clips")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--compression", default="none", choices=["none", "lzf", "gzip"])
    args = ap.parse_args()

    exe = find_ffmpeg()
    manifest = build_manifest(args.clips)
    paths = manifest["path"].tolist() * args.repeat
    ours(exe, paths[:3], args.frames, args.size)  # warm the page cache

    n_frames, wall_ours, cpu_ours = timed(ours, exe, paths, args.frames, args.size)
    _, wall_plain, cpu_plain = timed(plain_ffmpeg, exe, paths)
    print(
        f"{len(paths)} clips ({len(manifest)} x {args.repeat}), {n_frames} frames, "
        f"T={args.frames}, S={args.size}, ffmpeg {exe}"
    )
    print(f"{'':34s}{'frames/s':>10s}{'frames/cpu-s':>14s}")
    print(
        f"{'plain ffmpeg -f null (1 thread)':34s}{n_frames / wall_plain:10.0f}"
        f"{n_frames / cpu_plain:14.0f}"
    )
    print(f"{'decode_clip (1 thread)':34s}{n_frames / wall_ours:10.0f}{n_frames / cpu_ours:14.0f}")
    print(f"ratio decode_clip / plain, per core: {wall_plain / wall_ours:.2f}x")

    chunks = [paths[k :: args.workers] for k in range(args.workers)]
    with ProcessPoolExecutor(args.workers) as pool:
        wall = time.perf_counter()
        list(pool.map(plain_ffmpeg, [exe] * args.workers, chunks))
        wall_par = time.perf_counter() - wall
    print(
        f"plain ffmpeg on {args.workers} workers: {n_frames / wall_par:.0f} frames/s in all, "
        f"{n_frames / wall_par / args.workers:.0f} per core"
    )

    per_shard = max(1, len(manifest) // (2 * args.workers))
    table = manifest.loc[manifest.index.repeat(args.repeat)].reset_index(drop=True)
    n_shards = shard_count(len(table), per_shard)
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(args.workers) as pool:
        jobs = [
            (shard_rows(table, k, per_shard), f"{tmp}/shard-{k:04d}.h5", f"{tmp}/shard-{k:04d}.tsv")
            for k in range(n_shards)
        ]
        wall, cpu = time.perf_counter(), cpu_seconds()
        futures = [
            pool.submit(
                extract_shard,
                r,
                s,
                t,
                frames=args.frames,
                size=args.size,
                compression=args.compression,
            )
            for r, s, t in jobs
        ]
        done = sum(int(f.result()["source_frames"].sum()) for f in futures)
        pool.shutdown()
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    print(
        f"{n_shards} shards on {args.workers} workers: {done / wall:.0f} frames/s in all, "
        f"{done / wall / args.workers:.0f} per core; "
        f"cores busy {100 * cpu / (wall * args.workers):.0f}%; compression {args.compression}"
    )
    print(f"ratio shards / plain, all cores: {wall_par / wall * done / n_frames:.2f}x")


if __name__ == "__main__":
    main()
