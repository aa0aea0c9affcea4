"""Every head builds, saves and reloads with Keras alone, and sees temporal
order exactly when it should: ``average`` gives a clip and its reverse the same
scores, every other head does not. (How well each head tells the demo's
order-only pairs apart is measured by ``bench/heads.py``, not here.)"""

import keras
import numpy as np
import pytest

from actionrec.catalog import HEADS
from actionrec.model import build_model, head_of

T, S, C = 6, 32, 4


@pytest.mark.parametrize("head", HEADS)
def test_head_builds_saves_reloads_and_sees_order_as_designed(head, tmp_path):
    keras.utils.set_random_seed(0)
    model = build_model(C, T, S, "smallcnn", head, weights="none")
    # The head on frame features that differ from frame to frame, forwards and backwards.
    rng = np.random.default_rng(0)
    features = rng.normal(0, 1, (4, *head_of(model).input_shape[1:])).astype("float32")
    forward = head_of(model).predict(features, verbose=0)
    backward = head_of(model).predict(features[:, ::-1], verbose=0)
    np.testing.assert_allclose(forward.sum(axis=1), 1.0, rtol=1e-5)
    if head == "average":
        np.testing.assert_allclose(backward, forward, atol=1e-6)
    else:
        assert np.abs(backward - forward).max() > 1e-3, head
    clips = rng.integers(0, 256, (3, T, S, S, 3), dtype=np.uint8)
    scores = model.predict(clips, verbose=0)
    assert scores.shape == (3, C)
    model.save(tmp_path / f"{head}.keras")
    again = keras.saving.load_model(tmp_path / f"{head}.keras")
    np.testing.assert_allclose(again.predict(clips, verbose=0), scores, atol=1e-6)
