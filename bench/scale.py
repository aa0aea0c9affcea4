"""Scale rehearsal of the workflow's data stages: UCF101's 13,320 clips and a tenth.

Renders tiny synthetic clips (32 x 24 px, 6-12 frames) in UCF101's layout
(<root>/<Class>/v_<Class>_gNN_cNN.avi) and runs the workflow's data stages on
them with Snakemake, one stage after another, at each size:

  startup     snakemake -n results/data/manifest.tsv once the manifest exists
              (nothing to do: the fixed cost of every snakemake start)
  manifest    results/data/manifest.tsv (the checkpoint)
  DAG pending snakemake -n of the whole workflow, every shard job still to run
  extraction  results/data/extract_report.tsv: every extract_shard job and the gather
  split       results/data/split.tsv
  shard check results/data/shard_check.tsv (every shard read back)
  DAG done    snakemake -n of the whole workflow once the data stages have run
  audit       results/data/figures/near_duplicates.png (the data stage's one report
              figure; the audit itself is skipped, saying why, as the backbone has no
              pretrained weights: no features are computed)
  report      snakemake --report report.html results/data/figures/near_duplicates.png
              (the whole workflow's report needs a trained model; this is the report
              of the data stages, the part of the DAG the target needs)

and prints for each stage its seconds, the files it wrote (under the run folder,
.snakemake/ included), the peak memory of its processes (the largest max RSS of
snakemake and every job it ran, from wait4) and, between the largest and the
smallest size, the ratio of seconds with its growth: linear when the seconds grow
as the clips (exponent log(ratio) / log(size ratio) near 1), sublinear when fixed
costs dominate, worse than linear above.

Sizes: the largest (13,320) is 101 classes (Action000..Action100) x 25 groups x 5
or 6 clips (132 or 131 clips a class, as UCF101's 4-7 clips a group average 5.3).
A smaller size keeps every class and takes the first clips of each (the tenth,
1,332: 13 or 14 clips a class, its first 2-3 groups), so it is a subset of the
same rendered files (hard links). Clips are rendered once into --work and reused.

Usage: python bench/scale.py --work DIR [--sizes 1332 13320] [--classes 101]
       [--groups 25] [--clips-per-shard 100] [--out table.md]
Smoke: python bench/scale.py --work DIR --sizes 24 72 --classes 3 --groups 4
       --clips-per-shard 20
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from actionrec.catalog import DEMO_CLASSES  # noqa: E402
from actionrec.synthetic import ClipSpec, render_clip  # noqa: E402

WORKFLOW = ("Snakefile", "rules", "scripts", "config", "envs", "report", "profiles")
AUDIT_FIGURE = "results/data/figures/near_duplicates.png"

# (stage, snakemake arguments); the dry runs and the report run no job.
STAGES = [
    ("manifest", ["results/data/manifest.tsv"]),
    ("startup", ["results/data/manifest.tsv", "-n"]),
    ("DAG pending", ["-n"]),
    ("extraction", ["results/data/extract_report.tsv"]),
    ("split", ["results/data/split.tsv"]),
    ("shard check", ["results/data/shard_check.tsv"]),
    ("DAG done", ["-n"]),
    ("audit", [AUDIT_FIGURE]),
    ("report", [AUDIT_FIGURE, "--report", "report.html"]),
]
ORDER = ["startup", *[name for name, _ in STAGES if name != "startup"]]


def per_class(n: int, classes: int) -> list[int]:
    """``n`` clips dealt over ``classes`` classes, the first ones one more."""
    return [n // classes + (c < n % classes) for c in range(classes)]


def plan(n_max: int, classes: int, groups: int) -> list[list[tuple[int, int]]]:
    """Per class, its clips as (group, clip) in order: a class's clips dealt
    over ``groups`` groups, the first groups one more."""
    out = []
    for n_c in per_class(n_max, classes):
        sizes = [n_c // groups + (g < n_c % groups) for g in range(groups)]
        out.append([(g + 1, c + 1) for g, size in enumerate(sizes) for c in range(size)])
    return out


def class_name(c: int, classes: int) -> str:
    return f"Action{c:0{max(3, len(str(classes - 1)))}d}"


def clip_path(root: Path, c: int, classes: int, group: int, clip: int) -> Path:
    name = class_name(c, classes)
    return root / name / f"v_{name}_g{group:02d}_c{clip:02d}.avi"


def render(root: Path, layout, args) -> float:
    """Every clip of the largest size under ``root``, those missing only; seconds."""
    stamp = root / "rendered.json"
    want = {
        "clips": sum(map(len, layout)),
        "classes": args.classes,
        "groups": args.groups,
        "frames": [args.min_frames, args.max_frames],
        "width": args.width,
        "height": args.height,
        "seed": args.seed,
    }
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        print(f"clips already rendered in {root}", flush=True)
        return 0.0
    import numpy as np

    rng = np.random.default_rng(args.seed)
    specs = []
    for c, clips in enumerate(layout):
        for group, clip in clips:
            n_frames = int(rng.integers(args.min_frames, args.max_frames + 1))
            path = clip_path(root, c, args.classes, group, clip)
            if not path.is_file():
                # The demo's renderers, each class drawn as one of the ten demo
                # classes in scenes of its own (the group number seeds the scene).
                cls = DEMO_CLASSES[c % len(DEMO_CLASSES)]
                scene = (c // len(DEMO_CLASSES)) * 100 + group
                specs.append(ClipSpec(cls, scene, clip, n_frames, path))
    print(f"rendering {len(specs)} clips into {root}", flush=True)
    start = time.perf_counter()
    n = len(specs)
    shared = (args.width, args.height, 25.0, args.seed)
    with ProcessPoolExecutor(args.cores) as pool:
        for _ in pool.map(render_clip, specs, *[[a] * n for a in shared], chunksize=16):
            pass
    stamp.write_text(json.dumps(want))
    return time.perf_counter() - start


def dataset(work: Path, rendered: Path, layout, n: int, classes: int) -> Path:
    """The first clips of each class for ``n`` clips: hard links to rendered files."""
    if n == sum(map(len, layout)):
        return rendered
    root = work / f"videos-{n}"
    if root.is_dir():
        shutil.rmtree(root)
    for c, k in enumerate(per_class(n, classes)):
        for group, clip in layout[c][:k]:
            src = clip_path(rendered, c, classes, group, clip)
            dest = clip_path(root, c, classes, group, clip)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.link(src, dest)
    return root


def failing_slurm_tools(folder: Path) -> str:
    """Stand-ins for SLURM's client tools that fail at once: snakemake's SLURM
    plugin otherwise waits seconds for real ones with no controller."""
    folder.mkdir(parents=True, exist_ok=True)
    for tool in ("scontrol", "sinfo", "sacct", "squeue"):
        (folder / tool).write_text("#!/bin/sh\nexit 1\n")
        (folder / tool).chmod(0o755)
    return str(folder)


def snakemake_exe() -> list[str]:
    exe = Path(sys.executable).with_name("snakemake")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "snakemake"]


def all_files(folder: Path) -> dict[str, int]:
    out = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            try:
                out[path] = os.lstat(path).st_size
            except FileNotFoundError:
                pass
    return out


def run_stage(cmd: list[str], cwd: Path, env: dict, log: Path, timeout: int):
    """(seconds, peak RSS in MB of the command and all it ran, its output)."""
    with open(log, "w") as fh:
        start = time.perf_counter()
        proc = subprocess.Popen(
            ["timeout", "-k", "10", str(timeout), *cmd],
            cwd=cwd,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
        # wait4's usage of a child covers its waited-for descendants: ru_maxrss
        # is the largest of them (KiB on Linux).
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(
            f"stage failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"in {cwd}, log {log}:\n{text[-4000:]}"
        )
    return seconds, usage.ru_maxrss / 1024, text


def job_total(text: str) -> int | None:
    """The total of a dry run's job stats."""
    found = re.findall(r"^total\s+(\d+)", text, re.MULTILINE)
    return int(found[-1]) if found else None


def run_size(n: int, root: Path, work: Path, args, env: dict) -> dict:
    """Every stage on ``n`` clips in a fresh copy of the workflow."""
    run = work / f"run-{n}"
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    for name in WORKFLOW:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, run / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, run / name)
    config = {
        "seed": args.seed,
        "data": {"root": str(root.resolve())},
        "extract": {
            "frames": args.frames,
            "size": args.size,
            "clips_per_shard": args.clips_per_shard,
        },
        # No pretrained backbone: nothing downloads or pretrains, the audit is
        # skipped (its figure still drawn) and discovery is never needed.
        "train": {"backbone": "smallcnn", "weights": "none"},
        "compare": {"backbones": ["smallcnn"]},
    }
    (run / "scale.yaml").write_text(json.dumps(config, indent=1))
    logs = run / "bench-logs"
    logs.mkdir()
    base = snakemake_exe()
    seen = all_files(run)
    result = {"clips": n, "stages": {}, "shards": math.ceil(n / args.clips_per_shard)}
    print(f"\n{n} clips ({result['shards']} shards) in {run}", flush=True)
    for name, targets in STAGES:
        cmd = [*base, *targets, "--cores", str(args.cores), "--configfile", "scale.yaml"]
        log = logs / f"{name.replace(' ', '_')}.log"
        seconds, peak, text = run_stage(cmd, run, env, log, args.timeout)
        now = all_files(run)
        new = [p for p in now if p not in seen]
        stage = {
            "seconds": seconds,
            "files": len(new),
            "mb": sum(now[p] for p in new) / 1e6,
            "peak_mb": peak,
        }
        if "-n" in targets:
            stage["jobs"] = job_total(text)
        result["stages"][name] = stage
        seen = now
        jobs = f", {stage['jobs']} jobs" if stage.get("jobs") is not None else ""
        print(
            f"  {name:12s} {seconds:8.1f} s  {len(new):6d} files  {peak:7.0f} MB peak{jobs}",
            flush=True,
        )
    bench = sorted((run / "benchmarks/extract_shard").glob("shard-*.tsv"))
    result["shard_job_seconds"] = [
        float(f.read_text().splitlines()[1].split("\t")[0]) for f in bench
    ]
    return result


def growth(ratio: float, sizes_ratio: float) -> str:
    exponent = math.log(ratio) / math.log(sizes_ratio) if ratio > 0 else float("nan")
    if exponent > 1.15:
        verdict = "worse than linear"
    elif exponent >= 0.85:
        verdict = "linear"
    else:
        verdict = "sublinear (fixed cost)"
    return f"{verdict}, exponent {exponent:.2f}"


def table(results: list[dict]) -> str:
    small, large = results[0], results[-1]
    sizes_ratio = large["clips"] / small["clips"]
    clips = [f"{r['clips']:,}" for r in results]
    head = [
        "stage",
        *[f"s @ {c}" for c in clips],
        "ratio",
        "growth",
        *[f"files @ {c}" for c in clips],
        *[f"peak MB @ {c}" for c in clips],
    ]
    lines = [
        "| " + " | ".join(head) + " |",
        "|:--|" + "--:|" * len(clips) + "--:|:--|" + "--:|" * (2 * len(clips)),
    ]
    rows = ORDER + ["total"]
    for name in rows:
        if name == "total":
            per = [
                {
                    "seconds": sum(s["seconds"] for s in r["stages"].values()),
                    "files": sum(s["files"] for s in r["stages"].values()),
                    "peak_mb": max(s["peak_mb"] for s in r["stages"].values()),
                }
                for r in results
            ]
        else:
            per = [r["stages"][name] for r in results]
        ratio = per[-1]["seconds"] / per[0]["seconds"]
        cells = [
            name,
            *[f"{p['seconds']:.1f}" for p in per],
            f"{ratio:.2f}",
            growth(ratio, sizes_ratio),
            *[f"{p['files']:,}" for p in per],
            *[f"{p['peak_mb']:.0f}" for p in per],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"size ratio {sizes_ratio:g} (linear: ratio ~{sizes_ratio:g})"]
    for r in results:
        jobs = r["shard_job_seconds"]
        dag = r["stages"]["DAG pending"].get("jobs"), r["stages"]["DAG done"].get("jobs")
        notes.append(
            f"{r['clips']:,} clips: {r['shards']} shard jobs, their own seconds "
            f"(benchmarks/) sum {sum(jobs):.1f}, mean {sum(jobs) / max(len(jobs), 1):.2f}; "
            f"dry-run jobs pending {dag[0]}, after the data stages {dag[1]}; "
            f"extraction wrote {r['stages']['extraction']['mb']:.1f} MB"
        )
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="rendered clips and runs")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1332, 13320])
    parser.add_argument("--classes", type=int, default=101)
    parser.add_argument("--groups", type=int, default=25, help="groups a class at the largest")
    parser.add_argument("--min-frames", type=int, default=6)
    parser.add_argument("--max-frames", type=int, default=12)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--height", type=int, default=24)
    parser.add_argument("--frames", type=int, default=4, help="extract.frames")
    parser.add_argument("--size", type=int, default=16, help="extract.size")
    parser.add_argument("--clips-per-shard", type=int, default=100)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--timeout", type=int, default=3600, help="seconds a stage at most")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args()
    sizes = sorted(set(args.sizes))
    if len(sizes) < 2 or sizes[0] < args.classes:
        parser.error("give two or more sizes, the smallest at least --classes clips")

    start = time.perf_counter()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    layout = plan(sizes[-1], args.classes, args.groups)
    rendered = work / f"videos-{sizes[-1]}-c{args.classes}-g{args.groups}"
    seconds = render(rendered, layout, args)
    print(f"render: {seconds:.1f} s", flush=True)

    with tempfile.TemporaryDirectory(prefix="no-slurm-") as tools:
        env = {
            **os.environ,
            "PATH": failing_slurm_tools(Path(tools)) + os.pathsep + os.environ["PATH"],
        }
        results = [
            run_size(n, dataset(work, rendered, layout, n, args.classes), work, args, env)
            for n in sizes
        ]
    text = (
        f"Data stages at {', '.join(f'{n:,}' for n in sizes)} clips ({args.classes} classes; "
        f"clips {args.width}x{args.height}, {args.min_frames}-{args.max_frames} frames; "
        f"extract.frames {args.frames}, size {args.size}, clips_per_shard "
        f"{args.clips_per_shard}; --cores {args.cores})\n\n" + table(results)
    )
    print("\n" + text)
    print(f"whole benchmark: {time.perf_counter() - start:.0f} s (render {seconds:.0f} s)")
    (work / "scale.json").write_text(json.dumps(results, indent=1))
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
