"""A short run of bench/scale.py (the data stages at two sizes) on a few tiny
clips, so that it cannot rot; its numbers belong to bench/, not here."""

import subprocess
import sys

from conftest import REPO

STAGES = (
    "startup",
    "manifest",
    "DAG pending",
    "extraction",
    "split",
    "shard check",
    "DAG done",
    "audit",
    "report",
    "total",
)


def test_the_scale_benchmark_times_every_data_stage_at_both_sizes(tmp_path):
    cmd = ["timeout", "-k", "10", "900", sys.executable, str(REPO / "bench/scale.py")]
    args = ("--work", str(tmp_path / "work"), "--out", str(tmp_path / "table.md"))
    small = ("--sizes", "6", "18", "--classes", "2", "--groups", "3", "--clips-per-shard", "10")
    out = subprocess.run([*cmd, *args, *small], capture_output=True, text=True)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    table = (tmp_path / "table.md").read_text()
    rows = {
        cells[0]: cells
        for line in table.splitlines()
        if line.startswith("| ")
        for cells in [[cell.strip() for cell in line.strip("|").split("|")]]
    }
    assert rows["stage"][1:5] == ["s @ 6", "s @ 18", "ratio", "growth"]
    for stage in STAGES:
        seconds_6, seconds_18, ratio = (float(cell) for cell in rows[stage][1:4])
        assert seconds_6 > 0 and seconds_18 > 0, rows[stage]
        # The ratio of the seconds before they were rounded to 0.1 s.
        low, high = (
            (seconds_18 - 0.05) / (seconds_6 + 0.05),
            (seconds_18 + 0.05) / (seconds_6 - 0.05),
        )
        assert low - 0.01 <= ratio <= high + 0.01, rows[stage]
        assert "exponent" in rows[stage][4]
    # Files written and peak memory at each size: one shard at 6 clips, two at 18.
    assert int(rows["extraction"][6]) > int(rows["extraction"][5]) > 0
    assert all(float(cell) > 0 for cell in rows["total"][7:9])
    assert "2 shard jobs" in table and "1 shard jobs" in table
    # The 18 clips: UCF101-style names in 2 class folders, rendered once.
    videos = list((tmp_path / "work").glob("videos-18-c2-g3/Action*/v_Action*_g0?_c0?.avi"))
    assert len(videos) == 18
