"""The command line: ``actionrec predict | export | explain | check-shards``.

Installed as the command ``actionrec`` by the README's set-up (the package is
installed editable from requirements.txt); ``python -m actionrec`` with
``PYTHONPATH=scripts`` is the same.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from . import __version__
from .catalog import EXPORT_FORMATS, TIMELINE_MIN_DURATION, TIMELINE_STRIDE
from .logs import quiet_startup
from .settings import defaults
from .video import RESIZE_MODES

EXAMPLES = {
    "predict": """examples:
  actionrec predict clips/ my_video.mp4 --model results/final/model.keras --top 5
  actionrec predict --stream /dev/video0                 # a webcam
  actionrec predict --stream rtsp://camera.local/live    # a network stream
  actionrec predict --stream talk.mp4 --output steps.tsv # a file, at its own pace
  actionrec predict --timeline match.mp4 --stride 1 --min-duration 2 --output timelines/""",
    "export": """example:
  actionrec export --model results/final/model.keras --out results/export/models""",
    "explain": """example:
  actionrec explain my_video.mp4 --model results/final/model.keras --out why.png --true Bounce""",
    "check-shards": """example:
  actionrec check-shards --configfile config/config.yaml --remove-bad""",
}


def bounded(kind: type, low: float, high: float, *, above: bool = False) -> Callable[[str], float]:
    """An argparse type: a number of ``kind`` from ``low`` (excluded when
    ``above``) to ``high``; anything else is refused with the range."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            noun = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {noun}, not {text!r}") from None
        # Written so that NaN, which every comparison refuses, is out of range.
        if (value > low if above else value >= low) and value <= high:
            return value
        lowest = f"more than {low:g}" if above else f"at least {low:g}"
        raise argparse.ArgumentTypeError(f"must be {lowest} and at most {high:g}, not {text}")

    return parse


# Far beyond any use, and short of what would exhaust memory or never end.
MAX_TOP = 1000
MAX_VIEWS = 64
MAX_WINDOW_SECONDS = 86400.0
MAX_STEP_SECONDS = 3600.0
MAX_TIMEOUT = 3600.0
MAX_EXPORT_CLIPS = 1024


def url_scheme_argument(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", text):
        raise argparse.ArgumentTypeError(f"expected a URL scheme such as tcp or file, not {text!r}")
    return text.lower()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actionrec",
        description="Recognise actions in video with a model this workflow trained.",
    )
    parser.add_argument("--version", action="version", version=f"actionrec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help,
            description=description,
            epilog=EXAMPLES[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    p = command(
        "predict",
        "classify video files, folders of them, or a live stream",
        "Print the most probable classes of each video. Long videos are classified in "
        "windows and the scores averaged. With --stream, classify a webcam, a network "
        "stream or a file played at its own pace, one line per step, until it ends or "
        "Ctrl-C. Exit status 1 when any video could not be classified (the others still "
        "are) or the stream dropped; 2 on bad arguments or a stream that never opened.",
    )
    p.add_argument("videos", nargs="*", help="video files, or folders to search for videos")
    _model_arguments(p)
    p.add_argument(
        "--top",
        type=bounded(int, 1, MAX_TOP),
        default=5,
        help=f"classes to print per video, 1 to {MAX_TOP} (default 5)",
    )
    p.add_argument(
        "--extensions",
        nargs="+",
        default=defaults("data")["extensions"],
        metavar="EXT",
        help="file endings taken as videos in a folder (default: data.extensions, "
        f"{' '.join(defaults('data')['extensions'])}, as the workflow takes them)",
    )
    p.add_argument(
        "--window-seconds",
        type=bounded(float, 0, MAX_WINDOW_SECONDS, above=True),
        help="length of the windows a video is cut into, more than 0 and at most "
        f"{MAX_WINDOW_SECONDS:g} (default 10; with --stream, 2)",
    )
    p.add_argument(
        "--views",
        type=bounded(int, 1, MAX_VIEWS),
        default=defaults("predict")["views"],
        help=f"temporal views averaged per window, 1 to {MAX_VIEWS} (default 1): each window "
        "is sampled to "
        "T x K frames, the layout of a shard with K frames a segment, and the views that "
        "evaluation takes of such a clip are averaged",
    )
    p.add_argument(
        "--frames-per-segment",
        type=bounded(int, 1, MAX_VIEWS),
        metavar="K",
        help=f"K of the sampling above, 1 to {MAX_VIEWS} (default: VIEWS); the run's "
        "extract.frames_per_segment "
        "gives a window exactly the views its test clips got",
    )
    p.add_argument(
        "--output", help="also write the results as a TSV file (its folders made when missing)"
    )
    when = p.add_argument_group("timelines: where in a video each action happens")
    when.add_argument(
        "--timeline",
        action="store_true",
        help="score windows at a stride and write each video's windows.tsv, segments.tsv, "
        "segments.json and timeline.png into --output/<video name>/ (without --output: "
        "<video>.timeline/ beside it); with --stream, into the --output folder when the "
        "stream ends. --window-seconds defaults to the training clips' length",
    )
    when.add_argument(
        "--stride",
        type=bounded(float, 0, MAX_STEP_SECONDS, above=True),
        metavar="SECONDS",
        help="seconds between the starts of windows, more than 0 and at most "
        f"{MAX_STEP_SECONDS:g} (default {TIMELINE_STRIDE:g}; with --stream, --step-seconds)",
    )
    when.add_argument(
        "--min-duration",
        type=bounded(float, 0, MAX_WINDOW_SECONDS),
        metavar="SECONDS",
        default=TIMELINE_MIN_DURATION,
        help="seconds a segment lasts at least: a shorter run of one class joins its "
        f"neighbour (default {TIMELINE_MIN_DURATION:g})",
    )
    live = p.add_argument_group("live video")
    live.add_argument(
        "--stream",
        metavar="SOURCE",
        help="classify a live source: a device (/dev/video0), a camera's URL (rtsp://, "
        "rtsps://, rtmp://, rtmps://, http://, https://, srt://, udp://, rtp://, or "
        "tcp://HOST:PORT?listen=1 for an encoder that sends here), a file, or - for standard "
        "input",
    )
    live.add_argument(
        "--allow-scheme",
        action="append",
        default=[],
        type=url_scheme_argument,
        metavar="SCHEME",
        help="also read --stream URLs of this scheme (such as tcp, to connect to a host, or "
        "file); repeat for more",
    )
    live.add_argument(
        "--step-seconds",
        type=bounded(float, 0, MAX_STEP_SECONDS, above=True),
        default=1.0,
        help=f"seconds between steps, more than 0 and at most {MAX_STEP_SECONDS:g} (default 1)",
    )
    live.add_argument(
        "--as-fast-as-possible",
        action="store_true",
        help="read a file source as fast as it decodes instead of at its own pace",
    )
    live.add_argument(
        "--timeout",
        type=bounded(float, 0, MAX_TIMEOUT, above=True),
        default=10.0,
        help="seconds a network source may stay silent before it counts as dropped, more "
        f"than 0 and at most {MAX_TIMEOUT:g} (default 10)",
    )

    e = command(
        "export",
        "export a saved model for serving and check every export",
        "Write the model as a TensorFlow SavedModel, LiteRT (TFLite), ONNX and OpenVINO "
        "file, run each on test clips beside the .keras model, and print a table of "
        "agreement, largest probability difference, size and CPU time per clip.",
    )
    e.add_argument("--model", default="results/final/model.keras", help="a saved .keras model")
    e.add_argument(
        "--out",
        default="results/export/models",
        help="folder for the exports (made when missing)",
    )
    export = defaults("export")
    e.add_argument(
        "--formats",
        nargs="+",
        default=export["formats"],
        choices=EXPORT_FORMATS,
        help=f"formats to write (default: {' '.join(export['formats'])})",
    )
    e.add_argument("--data", default="results/data", help="the run's data folder (test clips)")
    e.add_argument(
        "--clips",
        type=bounded(int, 1, MAX_EXPORT_CLIPS),
        default=export["clips"],
        help=f"test clips to check on, 1 to {MAX_EXPORT_CLIPS} (default {export['clips']})",
    )
    e.add_argument(
        "--output", help="also write the table as a TSV file (its folders made when missing)"
    )

    x = command(
        "explain",
        "draw why the model classified a video as it did",
        "Decode the video like extraction does (T frames of S x S) and draw one figure: "
        "its frames, Grad-CAM over each frame for the predicted (and the true) class, "
        "and the class probabilities over time.",
    )
    x.add_argument("video", help="a video file")
    _model_arguments(x)
    x.add_argument(
        "--out",
        default="explanation.png",
        help="the figure: PNG, or the format its ending names, such as .pdf or .svg (its "
        "folders made when missing)",
    )
    x.add_argument("--true", help="the video's true class, to explain it beside the predicted one")

    c = command(
        "check-shards",
        "verify the HDF5 shards against the manifest",
        "Check that every shard opens, holds frames of the shape its own attributes give, "
        "lists the manifest's clips and reads back whole (else: corrupt), and was extracted "
        "with the config's settings (else: mismatch, naming the keys and both values). Exit "
        "status 1 when any shard is missing, corrupt or a mismatch.",
    )
    c.add_argument(
        "--configfile",
        nargs="+",
        default=["config/config.yaml"],
        help="the run's config files (for extract.frames, frames_per_segment, size, resize "
        "and clips_per_shard)",
    )
    c.add_argument("--shards", default="results/data/shards", help="the shard folder")
    c.add_argument("--manifest", default="results/data/manifest.tsv", help="the manifest")
    c.add_argument(
        "--remove-bad",
        action="store_true",
        help="move corrupt shards aside (<shard>.corrupt) so that snakemake extracts them "
        "again, and mismatched ones when other shards match the config (never when none does: "
        "then the config is not the one they were extracted with)",
    )
    return parser


def _model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="results/final/model.keras", help="a saved .keras model")
    p.add_argument(
        "--classes",
        help="class names, one per line in label order (default: classes.txt beside the "
        "model, else results/data/classes.txt)",
    )
    p.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        default="crop",
        help="how frames become square; use the extraction's setting (default crop)",
    )
    p.add_argument("--ffmpeg", help="ffmpeg binary (default: PATH, else imageio-ffmpeg's)")
    p.add_argument(
        "--no-calibration",
        action="store_true",
        help="ignore the calibration.json beside the model: its raw probabilities, and no "
        "video is called unknown (by default the probabilities are calibrated, and predict "
        "reports a video whose rejection score is below the calibration's threshold as "
        "unknown, with its top classes and score)",
    )


def _print_row(row: dict) -> None:
    if row["status"] != "ok":
        print(f"error: {row['video']}: {row['error']}", file=sys.stderr, flush=True)
        return
    print(f"{row['video']}  ({row['windows']} window(s), {row['frames']} frames)")
    if row.get("unknown") is True:
        print(f"  unknown: none of the trained actions (score {row['score']:.4f})")
    for rank, item in enumerate(row["top"].split(";"), 1):
        name, prob = item.rsplit("=", 1)
        print(f"  {rank}. {name:<30s} {float(prob):.4f}")
    sys.stdout.flush()


def _print_step(row: dict) -> None:
    top = "  ".join(item.replace("=", " ") for item in row["top"].split(";"))
    if row.get("unknown") is True:
        top = f"unknown (score {row['score']:.4f})  {top}"
    print(f"{row['stream_seconds']:8.2f} s  {top}", flush=True)


def _load(args):
    """The model (calibrated unless --no-calibration) and its class names."""
    from .clipmodel import load_model, num_classes
    from .manifest import read_classes
    from .predict import default_classes

    model = load_model(args.model, calibration=not args.no_calibration)
    n = num_classes(model)
    names = read_classes(args.classes) if args.classes else default_classes(args.model, n)
    if len(names) != n:
        raise ValueError(f"{args.classes} names {len(names)} classes; the model has {n}")
    return model, names


def _rejecting(model, args):
    """(model, rejection) of the calibration beside --model: the model with
    its features as a second output when the rejection's score needs them."""
    from .clipmodel import with_rejection

    return (model, None) if args.no_calibration else with_rejection(model, args.model)


def _error(message: str) -> int:
    from .predict import printable

    print(f"error: {printable(message)}", file=sys.stderr)
    return 2


def _output_problem(path: str, flag: str, folder: bool = False) -> str | None:
    """Why ``path`` cannot take the file (or, when ``folder``, the folder)
    that a command writes at its end, told before the work: something of the
    other kind there, a file where one of its folders would be, a folder
    that is not writable, or a name that the file system refuses."""
    target = Path(path)
    kind, other = ("folder", "file") if folder else ("file", "folder")
    if target.exists() and target.is_dir() != folder:
        return f"{flag} {path} is a {other}: name a new or existing {kind}"
    parent = target if folder else target.parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        return f"{flag} {path} cannot be made: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{flag} {path} cannot be made: {existing} is not writable"
    if folder or existing != parent:
        return None
    # The name itself is tried, as the file's own is made: some file systems
    # take only UTF-8 names, or shorter ones.
    part = parent / f".{target.name}.part"
    try:
        with open(part, "ab"):
            pass
    except OSError as err:
        return f"{flag} {path} cannot be written: {err.strerror}"
    finally:
        with contextlib.suppress(OSError):
            part.unlink()
    return None


def _write_table(table, path: str, flag: str) -> bool:
    """Write ``table`` to ``path``; False, with an error printed and no
    partial file left, when it cannot be."""
    from .tables import write_tsv

    try:
        write_tsv(table, path)
    except (OSError, UnicodeError) as err:
        with contextlib.suppress(OSError):
            Path(path).with_name(f".{Path(path).name}.part").unlink()
        _error(f"{flag} {path} could not be written: {err}")
        return False
    return True


def predict_command(args) -> int:
    from .predict import find_videos, predict_videos
    from .video import BadVideo

    per_segment = args.frames_per_segment or args.views
    if args.views > per_segment:
        return _error(
            f"--views ({args.views}) exceeds --frames-per-segment ({per_segment}): a view "
            "takes one of each segment's frames"
        )
    if bool(args.stream) == bool(args.videos):
        return _error("give video files or folders, or --stream SOURCE (one of the two)")
    if args.timeline:
        return timeline_command(args, per_segment)
    problem = args.output and _output_problem(args.output, "--output")
    if problem:
        return _error(problem)
    try:
        if args.stream:
            from .stream import check_source, classify_stream

            check_source(args.stream, args.allow_scheme)
            model, names = _load(args)
            model, rejection = _rejecting(model, args)
            table = classify_stream(
                model,
                args.stream,
                names,
                window_seconds=2.0 if args.window_seconds is None else args.window_seconds,
                step_seconds=args.step_seconds,
                rejection=rejection,
                **_stream_options(args, per_segment),
            )
        else:
            from .manifest import read_classes

            table = predict_videos(
                args.model,
                find_videos(args.videos, args.extensions),
                classes=read_classes(args.classes) if args.classes else None,
                top=args.top,
                window_seconds=10.0 if args.window_seconds is None else args.window_seconds,
                resize=args.resize,
                ffmpeg_exe=args.ffmpeg,
                on_result=_print_row,
                views=args.views,
                per_segment=per_segment,
                calibration=not args.no_calibration,
            )
    except (FileNotFoundError, ValueError, BadVideo) as err:
        return _error(str(err))
    if args.output and not _write_table(table, args.output, "--output"):
        return 2
    if args.stream:
        if "error" in table.attrs:
            print(f"error: {args.stream}: {table.attrs['error']}", file=sys.stderr)
            return 1
        return 0
    return 1 if (table["status"] != "ok").any() else 0


def _print_timeline(row: dict, segs) -> None:
    if row["status"] != "ok":
        print(f"error: {row['video']}: {row['error']}", file=sys.stderr, flush=True)
        return
    print(f"{row['video']}  ({row['windows']} window(s), {row['segments']} segment(s))")
    for seg in segs.itertuples(index=False):
        print(f"  {seg.start:9.2f} - {seg.end:9.2f} s  {seg[2]:<30s} {seg.score:.4f}")
    print(f"  -> {row['folder']}", flush=True)


def _print_progress(line: str) -> None:
    from .predict import printable

    print(printable(line), file=sys.stderr, flush=True)


def timeline_command(args, per_segment: int) -> int:
    """predict --timeline: a timeline per video file, or of the stream."""
    from .video import BadVideo

    if args.stream and not args.output:
        return _error("--stream with --timeline needs --output, the folder of the timeline")
    problem = args.output and _output_problem(args.output, "--output", folder=True)
    if problem:
        return _error(problem)
    try:
        if args.stream:
            return _stream_timeline(args, per_segment)
        from .manifest import read_classes
        from .predict import find_videos
        from .timeline import timeline_folders, timelines

        videos = find_videos(args.videos, args.extensions)
        table = timelines(
            args.model,
            videos,
            timeline_folders(videos, args.output),
            classes=read_classes(args.classes) if args.classes else None,
            window_seconds=args.window_seconds,
            stride=args.stride or TIMELINE_STRIDE,
            min_duration=args.min_duration,
            views=args.views,
            per_segment=per_segment,
            top=args.top,
            calibration=not args.no_calibration,
            resize=args.resize,
            ffmpeg_exe=args.ffmpeg,
            on_result=_print_timeline,
            on_progress=_print_progress,
        )
    except (FileNotFoundError, ValueError, BadVideo, OSError) as err:
        return _error(str(err))
    return 1 if (table["status"] != "ok").any() else 0


def _stream_options(args, per_segment: int) -> dict:
    """The options of classify_stream that the steps and a timeline share."""
    return {
        "top": args.top,
        "resize": args.resize,
        "realtime": not args.as_fast_as_possible,
        "timeout": args.timeout,
        "ffmpeg_exe": args.ffmpeg,
        "on_step": _print_step,
        "views": args.views,
        "per_segment": per_segment,
        "allow_schemes": args.allow_scheme,
    }


def _stream_timeline(args, per_segment: int) -> int:
    from .stream import check_source, classify_stream
    from .timeline import Timeline, window_length, write_timeline

    check_source(args.stream, args.allow_scheme)
    model, names = _load(args)
    model, rejection = _rejecting(model, args)
    window = window_length(args.model, args.window_seconds)
    stride = args.stride or args.step_seconds
    line = Timeline(
        args.stream, names, window, stride, threshold=getattr(rejection, "threshold", None)
    )
    table = classify_stream(
        model,
        args.stream,
        names,
        window_seconds=window,
        step_seconds=stride,
        rejection=rejection,
        on_window=line.add,
        **_stream_options(args, per_segment),
    )
    segs = write_timeline(line, args.output, min_duration=args.min_duration, top=args.top)
    print(f"{len(line.starts)} window(s), {len(segs)} segment(s) -> {args.output}")
    if "error" in table.attrs:
        print(f"error: {args.stream}: {table.attrs['error']}", file=sys.stderr)
        return 1
    return 0


def export_command(args) -> int:
    from .export import export_model, test_clips
    from .manifest import read_classes
    from .pipeline import Data

    for problem in (
        _output_problem(args.out, "--out", folder=True),
        args.output and _output_problem(args.output, "--output"),
    ):
        if problem:
            return _error(problem)
    data = Path(args.data)
    try:
        names = read_classes(data / "classes.txt")
        clips = test_clips(Data.of(data / "split.tsv", data / "shards", len(names)), args.clips)
    except FileNotFoundError as err:
        return _error(f"{err} (--data names the run's results/data folder)")
    except ValueError as err:
        return _error(str(err))
    try:
        table = export_model(
            args.model,
            args.out,
            clips,
            formats=tuple(args.formats),
            repeats=defaults("export")["repeats"],
        )
    except (OSError, ValueError) as err:
        return _error(str(err))
    print(table.to_markdown(index=False))
    if args.output and not _write_table(table, args.output, "--output"):
        return 2
    return 0 if table["within_tolerance"].all() else 1


def explain_command(args) -> int:
    from .explain import check_explainable, explain_figure
    from .predict import model_geometry, printable
    from .video import BadVideo, decode_clip

    problem = _output_problem(args.out, "--out") or _figure_format_problem(args.out)
    if problem:
        return _error(problem)
    try:
        model, names = _load(args)
        check_explainable(model, args.model)
        if args.true is not None and args.true not in names:
            raise ValueError(f"--true {args.true!r} is not one of the model's classes {names}")
        frames, size = model_geometry(model)
        clip = decode_clip(args.video, frames, size, resize=args.resize, ffmpeg_exe=args.ffmpeg)
    except BadVideo as err:
        return _error(f"{args.video}: {err}")
    except (FileNotFoundError, ValueError) as err:
        return _error(str(err))
    true = names.index(args.true) if args.true else None
    video = printable(args.video)
    try:
        result = explain_figure(model, clip.frames, names, args.out, true=true, title=video)
    except OSError as err:
        return _error(f"--out {args.out} could not be written: {err}")
    print(
        f"{video}: predicted {result['predicted']} ({result['probability']:.3f}); "
        f"{printable(args.out)}"
    )
    return 0


def _figure_format_problem(path: str) -> str | None:
    from matplotlib.backend_bases import FigureCanvasBase

    ending = Path(path).suffix[1:].lower()
    known = FigureCanvasBase.get_supported_filetypes()
    if ending and ending not in known:
        return (
            f"--out {path}: matplotlib writes no .{ending} figures; end the name in one of "
            f"{', '.join('.' + k for k in sorted(known))}"
        )
    return None


def check_shards_command(args) -> int:
    import yaml

    from .shardcheck import check_shards
    from .tables import read_tsv

    extract = defaults("extract")
    for path in args.configfile:
        with open(path, encoding="utf-8") as f:
            extract.update((yaml.safe_load(f) or {}).get("extract", {}))
    table = check_shards(
        args.shards,
        read_tsv(args.manifest),
        clips_per_shard=int(extract["clips_per_shard"]),
        frames=int(extract["frames"]),
        size=int(extract["size"]),
        frames_per_segment=int(extract["frames_per_segment"]),
        resize=str(extract["resize"]),
        remove_bad=args.remove_bad,
    )
    for row in table.itertuples(index=False):
        line = f"{row.status:8s} {row.shard} ({row.clips} clips)"
        print(line + (f": {row.problem}" if row.problem else ""))
    bad = int((table["status"] != "ok").sum())
    print(f"{len(table) - bad} of {len(table)} shards ok")
    if (table["status"] == "mismatch").any():
        print(
            "mismatch: the shards were extracted with other settings than "
            f"{' '.join(args.configfile)} gives; pass the config they were extracted with "
            "(--configfile), or run snakemake with this one to extract them anew",
            file=sys.stderr,
        )
    return 1 if bad else 0


COMMANDS = {
    "predict": predict_command,
    "export": export_command,
    "explain": explain_command,
    "check-shards": check_shards_command,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    quiet_startup()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
