"""The multi-device and GPU paths of training, run on this machine's CPU: two
logical CPU devices under MirroredStrategy (the path several GPUs take), and
mixed precision with XLA (the path one GPU takes)."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
from test_train import SPLIT_CPU, finish, kill_after_a_backup
from test_train import start as train_process

from conftest import REPO


def start(tiny_data, out: Path, replicas: int, **overrides) -> subprocess.Popen:
    """test_train's training on the small backbone with the schema's augmentation."""
    from actionrec.settings import with_defaults

    augment = with_defaults("train", {})["augment"]
    return train_process(
        tiny_data, out, replicas, backbone="smallcnn", augment=augment, **overrides
    )


def test_two_replicas_train_with_the_global_batch_resume_and_restart_on_one(tiny_data, tmp_path):
    import shutil

    from actionrec.pipeline import steps_per_epoch

    proc = start(tiny_data, tmp_path, replicas=2)
    done = kill_after_a_backup(proc, tmp_path / "work/full/backup/training_metadata.json")
    assert 1 <= done < 3
    first = (tmp_path / "log.txt").read_text()
    assert "MirroredStrategy with 2 replica(s)" in first and "batch 8;" in first
    other = tmp_path / "one"
    shutil.copytree(tmp_path / "work", other / "work")

    log = finish(start(tiny_data, tmp_path, replicas=2), tmp_path)
    rerun = log[len(first) :]
    assert rerun.split("resuming after epoch")[1].startswith(f" {done} ")
    # Steps per epoch follow the global batch (2 replicas x 4 clips). Read from the rerun,
    # which finishes its epochs: the killed run may die between Keras's backup and the
    # progress line it prints after it.
    steps = steps_per_epoch(tiny_data["split"], "train", 8, 1.0, 5)
    assert steps < steps_per_epoch(tiny_data["split"], "train", 4, 1.0, 5)
    assert f"{steps}/{steps} " in rerun
    history = pd.read_csv(tmp_path / "history.tsv", sep="\t")
    assert history["epoch"].tolist() == [1, 2, 3] and history["loss"].notna().all()

    # The same interrupted state rerun on one device: not resumed, started afresh.
    log = finish(start(tiny_data, other, replicas=1), other)
    assert "holds an interrupted run of other devices: starting afresh" in log
    assert "resuming after epoch" not in log and "batch 4;" in log


def test_mixed_precision_and_xla_train_and_save_a_float32_model(tiny_data, tmp_path):
    log = finish(
        start(tiny_data, tmp_path, 1, mixed_precision=True, xla=True, max_epochs=2), tmp_path
    )
    assert "mixed precision on; XLA on" in log
    history = pd.read_csv(tmp_path / "history.tsv", sep="\t")
    assert history["loss"].notna().all() and history["val_loss"].notna().all()
    import keras
    import numpy as np

    keras.mixed_precision.set_global_policy("float32")
    model = keras.saving.load_model(tmp_path / "model.keras")
    clip = np.zeros((1, *model.input_shape[1:]), dtype="uint8")
    probs = model.predict(clip, verbose=0)
    assert probs.dtype == np.float32 and np.isclose(probs.sum(), 1.0, atol=1e-3)


TRIAL = """
import json, logging, sys
from pathlib import Path
logging.basicConfig(level=logging.INFO)
{prelude}
sys.path.insert(0, {scripts!r})
from actionrec.features import cache_features
from actionrec.pipeline import Data
from actionrec.search import SearchSettings
from actionrec.train import run_trial
data = Data.of({split!r}, {shards!r}, 3)
out = Path({out!r})
for name, shard in data.shards.items():
    cache_features(shard, out / name, {backbone!r}, "none")
data = data.with_features(sorted(out.glob("shard-*.h5")))
settings = SearchSettings.from_config({{"epochs": 2}})
section = {{"backbone": {backbone!r}, "weights": "none", "batch_size": 4}}
print("TRIAL", json.dumps(run_trial(0.003, data, section, settings, out / "work", seed=0)))
"""


def test_a_search_trial_on_cached_features_runs_on_two_replicas(tiny_data, tmp_path):
    from conftest import make_backbone_file

    backbone = make_backbone_file(tmp_path / "net.keras")
    code = TRIAL.format(
        prelude=SPLIT_CPU.format(n=2),
        scripts=str(REPO / "scripts"),
        split=str(tiny_data["split"]),
        shards=str(tiny_data["shards"]),
        out=str(tmp_path),
        backbone=str(backbone),
    )
    cmd = ["timeout", "-k", "10", "600", sys.executable, "-c", code]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert "MirroredStrategy with 2 replica(s)" in log and "cached features" in log
    result = json.loads(log.split("TRIAL ")[1].splitlines()[0])
    assert result["epoch"] >= 1 and 0 < result["val_loss"] < 10
