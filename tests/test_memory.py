"""Memory: extraction holds one clip at a time whatever its length, and the
input pipeline holds batches, not the dataset. Peak RSS is measured in a fresh
process per case."""

import json
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest

from actionrec.tables import write_tsv
from actionrec.video import write_video
from conftest import REPO

EXTRACT = """
import json, resource, sys
sys.path.insert(0, {scripts!r})
import pandas as pd
from actionrec.extract import extract_shard
rows = pd.read_csv({rows!r}, sep="\\t")
extract_shard(rows, {out!r} + ".h5", {out!r} + ".tsv", frames=16, size=224,
              buffer_bytes={buffer} * 2**20)
print(json.dumps({{"self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                   "ffmpeg": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}}))
"""

PIPELINE = """
import json, resource, sys
sys.path.insert(0, {scripts!r})
from actionrec.pipeline import Data, make_dataset
ds = make_dataset(Data.of({split!r}, {shards!r}, 5), "train", 4, shuffle=True, epochs=(0, 1))
n = sum(int(x.shape[0]) for x, _ in ds)
print(json.dumps({{"clips": n, "self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""


def peak(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def clips(folder, n_frames, container, count=3):
    rows = []
    rng = np.random.default_rng(0)
    for k in range(count):
        path = folder / f"v_Long_g{k + 1:02d}_c01.{container}"
        base = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        write_video(path, (np.roll(base, i, axis=1) for i in range(n_frames)), 320, 240, 25.0)
        rows.append(
            {
                "clip_id": path.stem,
                "path": str(path),
                "class": "Long",
                "label": 0,
                "group": f"Long_g{k + 1:02d}",
                "clip": "c01",
            }
        )
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("container", "buffer_mb"), [("avi", 64), ("mkv", 16)])
def test_extraction_memory_does_not_grow_with_clip_length(tmp_path, container, buffer_mb):
    result = {}
    for name, n_frames in (("short", 40), ("long", 1200)):
        folder = tmp_path / name
        folder.mkdir()
        write_tsv(clips(folder, n_frames, container), folder / "rows.tsv")
        result[name] = peak(
            EXTRACT.format(
                scripts=str(REPO / "scripts"),
                rows=str(folder / "rows.tsv"),
                out=str(folder / "s"),
                buffer=buffer_mb,
            )
        )
    # 1200 frames of 224 x 224 RGB are 180 MB: none of that may stay in memory
    # beyond the buffer (AVI: only the 16 sampled frames are ever sent).
    allowance_kb = (buffer_mb + 24) * 1024
    print(
        f"\n{container}: peak RSS short {result['short']['self'] / 1024:.0f} MB, "
        f"long {result['long']['self'] / 1024:.0f} MB"
    )
    assert result["long"]["self"] <= result["short"]["self"] + allowance_kb


def shards(folder, n_clips):
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    per = 200
    for k in range(-(-n_clips // per)):
        n = min(per, n_clips - k * per)
        with h5py.File(folder / f"shard-{k:04d}.h5", "w") as f:
            d = f.create_dataset("frames", (n, 8, 64, 64, 3), np.uint8, chunks=(1, 8, 64, 64, 3))
            f.attrs.update({"frames": 8, "size": 64})
            for i in range(n):
                d[i] = rng.integers(0, 255, (8, 64, 64, 3), dtype=np.uint8)
        for i in range(n):
            rows.append(
                {
                    "clip_id": f"c{k}_{i}",
                    "shard": f"shard-{k:04d}.h5",
                    "index": i,
                    "label": i % 5,
                    "group": f"g{k}_{i}",
                    "split": "train",
                }
            )
    write_tsv(pd.DataFrame(rows), folder / "split.tsv")
    return folder


def test_input_pipeline_memory_is_bounded_by_the_batch(tmp_path):
    result = {}
    for name, n in (("small", 100), ("large", 2000)):  # 10 MB against 197 MB of frames
        folder = shards(tmp_path / name, n)
        result[name] = peak(
            PIPELINE.format(
                scripts=str(REPO / "scripts"), split=str(folder / "split.tsv"), shards=str(folder)
            )
        )
        assert result[name]["clips"] == n
    print(
        f"\npipeline peak RSS: 100 clips {result['small']['self'] / 1024:.0f} MB, "
        f"2000 clips {result['large']['self'] / 1024:.0f} MB"
    )
    assert result["large"]["self"] <= result["small"]["self"] + 60 * 1024
