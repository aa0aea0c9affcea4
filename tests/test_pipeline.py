import h5py
import numpy as np
import pandas as pd

from actionrec.pipeline import Augment, make_dataset, steps_per_epoch


def collect(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def test_batches_hold_the_shard_clips_in_split_order(tiny_data):
    ds = make_dataset(tiny_data["data"], "val", batch_size=2)
    x, y = collect(ds)
    table = pd.read_csv(tiny_data["split"], sep="\t")
    val = table[table["split"] == "val"]
    assert x.dtype == np.uint8 and x.shape == (len(val), 4, 32, 32, 3)
    assert (y.argmax(axis=1) == val["label"].to_numpy()).all()
    for i, row in enumerate(val.itertuples()):
        with h5py.File(tiny_data["shards"] / row.shard) as f:
            np.testing.assert_array_equal(x[i], f["frames"][row.index])


def test_train_order_changes_every_epoch_and_follows_the_seed(tiny_data):
    n = len(pd.read_csv(tiny_data["split"], sep="\t").query("split == 'train'"))

    def epochs(seed, first, stop, aug=None):
        ds = make_dataset(
            tiny_data["data"],
            "train",
            4,
            shuffle=True,
            augment=aug,
            seed=seed,
            epochs=(first, stop),
        )
        x = collect(ds)[0]
        assert len(x) == n * (stop - first)
        return [x[k * n : (k + 1) * n] for k in range(stop - first)]

    a = epochs(1, 0, 3)
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[1], a[2])
    for x, y in zip(epochs(1, 0, 3), a, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(epochs(2, 0, 1)[0], a[0])
    # A stream that starts at epoch 2 (training resumed there) gives epoch 2 as before,
    # augmentation included.
    np.testing.assert_array_equal(epochs(1, 2, 3)[0], a[2])
    aug = Augment(crop=0.3, brightness=0.2)
    np.testing.assert_array_equal(epochs(1, 2, 3, aug)[0], epochs(1, 0, 3, aug)[2])
    assert steps_per_epoch(tiny_data["split"], "train", 4) == -(-n // 4)


def test_augmentation_changes_train_clips_only_and_reproducibly(tiny_data):
    aug = Augment(crop=0.3, flip=True, brightness=0.2, contrast=0.3, low_light=0.5)
    plain = collect(make_dataset(tiny_data["data"], "train", 2))[0]

    def augmented():
        ds = make_dataset(tiny_data["data"], "train", 2, augment=aug)
        return collect(ds)[0]

    a, b = augmented(), augmented()
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and a.shape == plain.shape
    assert (np.abs(a.astype(int) - plain.astype(int)).mean(axis=(1, 2, 3, 4)) > 1).mean() > 0.8


def test_fraction_keeps_every_class(tiny_data):
    ds = make_dataset(tiny_data["data"], "train", 2, fraction=0.2)
    _, y = collect(ds)
    assert set(y.argmax(axis=1)) == {0, 1, 2}
    assert len(y) < 10


def test_the_data_fingerprint_sees_the_shards_settings(tiny_data, tmp_path):
    """A re-extraction at another frame size leaves split.tsv as it was; the
    fingerprint that resumable searches and trainings compare must change."""
    import shutil

    from actionrec.pipeline import Data, data_fingerprint

    other = tmp_path / "shards"
    shutil.copytree(tiny_data["shards"], other)
    for shard in other.glob("shard-*.h5"):
        with h5py.File(shard, "a") as f:
            f.attrs["size"] = 64
    same_split = Data.of(tiny_data["split"], other, 3)
    assert data_fingerprint(same_split) != data_fingerprint(tiny_data["data"])
    assert data_fingerprint(tiny_data["data"]) == data_fingerprint(
        Data.of(tiny_data["split"], tiny_data["shards"], 3)
    )
