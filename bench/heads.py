"""Accuracy of every head on the ten demo classes, on the order-only pairs and
on the other classes, on held-out scenes.

Clips are rendered in memory by the demo's renderer (one clip per scene; 60
training and 20 test scenes per class; T=8, S=32). The ``smallcnn`` backbone
is trained end to end with the gru head, then frozen, and each head is
trained on it for the same budget (as tests/test_heads.py does on the pairs).

    python bench/heads.py [--train-scenes 60] [--test-scenes 20] [--epochs 20]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import keras  # noqa: E402

from actionrec import synthetic  # noqa: E402
from actionrec.catalog import DEMO_CLASSES, HEADS, ORDER_PAIRS  # noqa: E402
from actionrec.model import backbone_of, build_model  # noqa: E402

T, S = 8, 32
CLASSES = list(DEMO_CLASSES)
PAIRS = {c for pair in ORDER_PAIRS for c in pair}


def render(groups, seed=0):
    return synthetic.render_in_memory(CLASSES, groups, T, S, seed)


def train(model, x, y, epochs):
    steps = epochs * -(-len(x) // 16)
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(0.002, steps)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, shuffle=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-scenes", type=int, default=60)
    parser.add_argument("--test-scenes", type=int, default=20)
    parser.add_argument("--pretrain-epochs", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    x, y = render(range(1, args.train_scenes + 1))
    x_test, y_test = render(range(1000, 1000 + args.test_scenes))
    pairs = np.isin(np.array(CLASSES)[y_test], sorted(PAIRS))

    def report(name, model, seconds):
        right = model.predict(x_test, verbose=0).argmax(axis=1) == y_test
        print(
            f"{name:<26s} {right.mean():6.3f} {right[pairs].mean():8.3f} "
            f"{right[~pairs].mean():10.3f} {seconds:8.0f}",
            flush=True,
        )

    print(f"{len(x)} training clips, {len(x_test)} test clips of held-out scenes")
    print(f"{'model':<26s} {'all':>6s} {'pairs':>8s} {'order-free':>10s} {'seconds':>8s}")
    keras.utils.set_random_seed(0)
    base = build_model(len(CLASSES), T, S, "smallcnn", "gru")
    start = time.perf_counter()
    train(base, x, y, args.pretrain_epochs)
    report("gru, end to end", base, time.perf_counter() - start)
    weights = backbone_of(base).get_weights()
    for head in HEADS:
        keras.utils.set_random_seed(1)
        model = build_model(len(CLASSES), T, S, "smallcnn", head)
        backbone_of(model).set_weights(weights)
        backbone_of(model).trainable = False
        start = time.perf_counter()
        train(model, x, y, args.epochs)
        report(f"{head}, frozen backbone", model, time.perf_counter() - start)


if __name__ == "__main__":
    main()
