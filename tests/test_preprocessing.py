"""Tests for kbn/preprocessing.py: the Centering layer."""

import numpy as np
import pytest

from kbn.preprocessing import Centering


def test_centering_learns_the_rescaled_per_feature_mean():
    x = np.array([[0, 255, 51, 0], [255, 255, 153, 0]], "uint8")  # (2, 4)
    layer = Centering(1 / 255, dtype="float64")
    layer.adapt(x)
    np.testing.assert_allclose(layer.mean.numpy(), [0.5, 1.0, 0.4, 0.0], rtol=1e-15)
    raw = Centering(1.0, dtype="float64")
    raw.adapt(x)
    np.testing.assert_allclose(raw.mean.numpy(), [127.5, 255.0, 102.0, 0.0])
    assert Centering.from_config(layer.get_config()).scale == 1 / 255


def test_centering_in_float64_is_exact():
    x = np.array([[0, 255, 51, 7]], "uint8")
    layer = Centering(1 / 255, dtype="float64")
    layer.adapt(np.array([[0, 0, 0, 0]], "uint8"))
    np.testing.assert_array_equal(layer(x).numpy(), x.astype("float64") * (1 / 255))


def test_centering_refuses_an_empty_adapt():
    with pytest.raises(ValueError, match="Received: 0"):
        Centering().adapt(np.zeros((0, 4), "uint8"))
