"""Command line: ``python -m actionrec predict VIDEO... --model results/final/model.keras``
and ``python -m actionrec check-shards``.

Run from the repository with ``PYTHONPATH=scripts`` (Snakemake rules find the
package on their own).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .video import RESIZE_MODES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m actionrec", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "predict",
        help="classify videos with a saved model",
        description="Print the most probable classes of each video. Long videos are "
        "classified in windows and the scores averaged. Exit status 1 when any video "
        "could not be classified (the others still are).",
    )
    p.add_argument("videos", nargs="+", help="video files, or folders to search for videos")
    p.add_argument("--model", default="results/final/model.keras", help="a saved .keras model")
    p.add_argument(
        "--classes",
        help="class names, one per line in label order (default: classes.txt beside the model)",
    )
    p.add_argument("--top", type=int, default=5, help="classes to print per video (default 5)")
    p.add_argument(
        "--window-seconds",
        type=float,
        default=10.0,
        help="length of the windows a long video is cut into (default 10)",
    )
    p.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        default="crop",
        help="how frames become square; use the extraction's setting (default crop)",
    )
    p.add_argument("--ffmpeg", help="ffmpeg binary (default: PATH, else imageio-ffmpeg's)")
    p.add_argument("--output", help="also write the results as a TSV file")
    c = sub.add_parser(
        "check-shards",
        help="verify the HDF5 shards against the manifest",
        description="Check that every shard opens, has the configured shapes and dtypes, "
        "lists the manifest's clips and reads back whole. Exit status 1 when any shard is "
        "missing or corrupt.",
    )
    c.add_argument(
        "--configfile",
        nargs="+",
        default=["config/config.yaml"],
        help="the run's config files (for extract.frames, size and clips_per_shard)",
    )
    c.add_argument("--shards", default="results/data/shards", help="the shard folder")
    c.add_argument("--manifest", default="results/data/manifest.tsv", help="the manifest")
    c.add_argument(
        "--remove-bad",
        action="store_true",
        help="move corrupt shards aside (<shard>.corrupt) so that snakemake extracts them again",
    )
    return parser


def _print_row(row: dict) -> None:
    if row["status"] != "ok":
        print(f"error: {row['video']}: {row['error']}", file=sys.stderr, flush=True)
        return
    print(f"{row['video']}  ({row['windows']} window(s), {row['frames']} frames)")
    for rank, item in enumerate(row["top"].split(";"), 1):
        name, prob = item.rsplit("=", 1)
        print(f"  {rank}. {name:<30s} {float(prob):.4f}")
    sys.stdout.flush()


def check_shards_command(args) -> int:
    import yaml

    from .shardcheck import check_shards
    from .tables import read_tsv

    extract: dict = {}
    for path in args.configfile:
        with open(path, encoding="utf-8") as f:
            extract.update((yaml.safe_load(f) or {}).get("extract", {}))
    table = check_shards(
        args.shards,
        read_tsv(args.manifest),
        clips_per_shard=int(extract["clips_per_shard"]),
        frames=int(extract["frames"]),
        size=int(extract["size"]),
        remove_bad=args.remove_bad,
    )
    for row in table.itertuples(index=False):
        line = f"{row.status:8s} {row.shard} ({row.clips} clips)"
        print(line + (f": {row.problem}" if row.problem else ""))
    bad = int((table["status"] != "ok").sum())
    print(f"{len(table) - bad} of {len(table)} shards ok")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if args.command == "check-shards":
        return check_shards_command(args)
    if args.top < 1:
        print("error: --top must be at least 1", file=sys.stderr)
        return 2
    from .manifest import read_classes
    from .predict import find_videos, predict_videos
    from .tables import write_tsv

    try:
        classes = read_classes(args.classes) if args.classes else None
        table = predict_videos(
            args.model,
            find_videos(args.videos),
            classes=classes,
            top=args.top,
            window_seconds=args.window_seconds,
            resize=args.resize,
            ffmpeg_exe=args.ffmpeg,
            on_result=_print_row,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.output:
        write_tsv(table, args.output)
    return 1 if (table["status"] != "ok").any() else 0


if __name__ == "__main__":
    sys.exit(main())
