import h5py
import numpy as np
import pandas as pd
import pytest

from actionrec.extract import ExtractError, extract_shard, gather_reports
from actionrec.manifest import build_manifest
from actionrec.tables import read_tsv
from actionrec.video import decode_clip
from test_video import REASONS, make_bad_videos

T, S = 4, 32


@pytest.fixture
def mixed_folder(sample, tmp_path, ffmpeg_exe):
    """Two real good clips and one clip of each bad kind, as a dataset folder."""
    root = tmp_path / "videos"
    good = sample / "UCF-101/Archery/v_Archery_g01_c01.avi"
    make_bad_videos(root / "Bad", good, ffmpeg_exe)
    (root / "Good").mkdir()
    for name in ("v_ApplyEyeMakeup_g01_c01.avi", "v_ApplyEyeMakeup_g01_c02.avi"):
        (root / "Good" / name.replace("ApplyEyeMakeup", "Good")).write_bytes(
            (sample / "UCF-101/ApplyEyeMakeup" / name).read_bytes()
        )
    return root


def test_bad_clips_are_reported_and_good_clips_kept(mixed_folder, tmp_path):
    rows = build_manifest(mixed_folder)
    shard, report_path = tmp_path / "shard-0000.h5", tmp_path / "shard-0000.tsv"
    report = extract_shard(rows, shard, report_path, frames=T, size=S)

    assert len(report) == len(rows) == 7
    on_disk = read_tsv(report_path)
    assert on_disk["clip_id"].tolist() == rows["clip_id"].tolist()
    skipped = on_disk[on_disk["status"] == "skipped"]
    assert sorted(skipped["clip_id"]) == sorted(rows.loc[rows["class"] == "Bad", "clip_id"])
    for kind, reason in REASONS.items():
        assert skipped["reason"].str.contains(reason).any(), kind

    ok = on_disk[on_disk["status"] == "ok"]
    assert ok["index"].tolist() == [0, 1]
    with h5py.File(shard) as f:
        assert f["frames"].shape == (2, T, S, S, 3)
        for i, path in enumerate(ok["path"]):
            alone = decode_clip(path, T, S).frames
            np.testing.assert_array_equal(f["frames"][i], alone)
    assert not list(tmp_path.glob(".*part"))


def test_shard_schema_and_provenance(sample, tmp_path):
    rows = build_manifest(sample / "UCF-101").iloc[:3]
    shard = tmp_path / "shard-0000.h5"
    extract_shard(rows, shard, tmp_path / "r.tsv", frames=T, size=S, compression="gzip")
    with h5py.File(shard) as f:
        frames = f["frames"]
        assert frames.dtype == np.uint8 and frames.shape == (3, T, S, S, 3)
        assert frames.chunks == (1, T, S, S, 3)  # one clip is one read
        assert f["label"][:].tolist() == rows["label"].tolist()
        assert [c.decode() for c in f["clip_id"][:]] == rows["clip_id"].tolist()
        assert f["source_frames"][:].min() > 50
        assert set(np.round(f["fps"][:], 2)) <= {25.0, 29.97}
        attrs = dict(f.attrs)
        assert attrs["frames"] == T and attrs["size"] == S
        assert "uniform" in attrs["sampling"] and attrs["resize"] == "crop"
        assert list(attrs["source_paths"]) == rows["path"].tolist()
        assert attrs["code_version"].startswith("actionrec ")
        assert attrs["ffmpeg"].startswith("ffmpeg version")


def test_k_frames_per_segment_are_the_centres_of_t_times_k_parts(sample, tmp_path):
    """K frames of each of T segments: the frames a T x K uniform sampling
    takes, segment by segment, so that view j of a clip is frames j, K + j, ..."""
    rows = build_manifest(sample / "UCF-101").iloc[:2]
    shard = tmp_path / "shard-0000.h5"
    extract_shard(rows, shard, tmp_path / "r.tsv", frames=T, size=S, frames_per_segment=3)
    with h5py.File(shard) as f:
        assert f["frames"].shape == (2, T * 3, S, S, 3) and f["frames"].chunks[1] == T * 3
        assert (f.attrs["frames"], f.attrs["frames_per_segment"]) == (T, 3)
        assert f.attrs["stored_frames"] == T * 3
        for i, path in enumerate(rows["path"]):
            np.testing.assert_array_equal(f["frames"][i], decode_clip(path, T * 3, S).frames)


def test_on_bad_video_fail_names_the_file(mixed_folder, tmp_path):
    rows = build_manifest(mixed_folder)
    with pytest.raises(ExtractError, match=r"v_Bad_g01_c01\.avi: empty file.*on_bad_video"):
        extract_shard(
            rows, tmp_path / "s.h5", tmp_path / "s.tsv", frames=T, size=S, on_bad_video="fail"
        )
    assert not (tmp_path / "s.h5").exists()


def report(shard: int, statuses: list[str]) -> pd.DataFrame:
    ids = [f"s{shard}c{i}" for i in range(len(statuses))]
    return pd.DataFrame(
        {
            "clip_id": ids,
            "path": [f"/v/{c}.avi" for c in ids],
            "status": statuses,
            "reason": ["" if s == "ok" else "empty file (0 bytes)" for s in statuses],
        }
    )


def test_too_many_bad_clips_stop_the_run(tmp_path):
    paths = []
    for i, statuses in enumerate([["ok"] * 9 + ["skipped"], ["ok"] * 8 + ["skipped"] * 2]):
        paths.append(tmp_path / f"shard-{i}.tsv")
        report(i, statuses).to_csv(paths[-1], sep="\t", index=False)
    assert len(gather_reports(paths, max_bad_fraction=0.15)) == 20
    with pytest.raises(
        ExtractError, match=r"(?s)3 of 20 clips \(15.0%\).*max_bad_fraction.*/v/s1c9.avi: empty"
    ):
        gather_reports(paths, max_bad_fraction=0.1)
