import h5py
import numpy as np
import pandas as pd

from actionrec.pipeline import Augment, make_dataset


def collect(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def test_batches_hold_the_shard_clips_in_split_order(tiny_data):
    ds = make_dataset(tiny_data["split"], tiny_data["shards"], "val", 3, batch_size=2)
    x, y = collect(ds)
    table = pd.read_csv(tiny_data["split"], sep="\t")
    val = table[table["split"] == "val"]
    assert x.dtype == np.uint8 and x.shape == (len(val), 4, 32, 32, 3)
    assert (y.argmax(axis=1) == val["label"].to_numpy()).all()
    for i, row in enumerate(val.itertuples()):
        with h5py.File(tiny_data["shards"] / row.shard) as f:
            np.testing.assert_array_equal(x[i], f["frames"][row.index])


def test_train_order_changes_every_epoch_and_follows_the_seed(tiny_data):
    def orders(seed):
        ds = make_dataset(tiny_data["split"], tiny_data["shards"], "train", 3, 4, True, seed=seed)
        return [collect(ds)[0].reshape(-1)[::997].tolist() for _ in range(2)]

    first, second = orders(1)
    assert first != second
    assert orders(1) == [first, second]


def test_augmentation_changes_train_clips_only_and_reproducibly(tiny_data):
    aug = Augment(crop=0.3, flip=True, brightness=0.2, contrast=0.3, low_light=0.5)
    plain = collect(make_dataset(tiny_data["split"], tiny_data["shards"], "train", 3, 2))[0]

    def augmented():
        ds = make_dataset(tiny_data["split"], tiny_data["shards"], "train", 3, 2, augment=aug)
        return collect(ds)[0]

    a, b = augmented(), augmented()
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and a.shape == plain.shape
    assert (np.abs(a.astype(int) - plain.astype(int)).mean(axis=(1, 2, 3, 4)) > 1).mean() > 0.8


def test_fraction_keeps_every_class(tiny_data):
    ds = make_dataset(tiny_data["split"], tiny_data["shards"], "train", 3, 2, fraction=0.2)
    _, y = collect(ds)
    assert set(y.argmax(axis=1)) == {0, 1, 2}
    assert len(y) < 10
