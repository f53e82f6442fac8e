"""Tests for kbn/nn/preprocessing.py: the Centering, Whitening and PrincipalComponents layers."""

import numpy as np
import pytest

from kbn.nn.preprocessing import Centering, PrincipalComponents, Whitening, principal_axes


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


def correlated_pixels(n=4000, d=6, seed=0):
    """(n, d) uint8 'pixels' whose features share most of their signal, as neighbours in an image
    do."""
    rng = np.random.default_rng(seed)
    mixing = np.eye(d) + 0.8  # every feature carries the common component
    z = rng.normal(size=(n, d)) @ mixing.T
    return np.clip(128 + 20 * z, 0, 255).astype("uint8")


def test_whitening_gives_the_training_inputs_identity_covariance():
    x = correlated_pixels()
    before = np.corrcoef(x.T.astype(np.float64))
    assert before[0, 1] > 0.5
    layer = Whitening(1e-8, dtype="float64")
    layer.adapt(x, scale=1 / 255)
    y = layer(x.astype("float64") / 255).numpy()
    np.testing.assert_allclose(np.cov(y.T, bias=True), np.eye(x.shape[1]), atol=1e-4)


def test_whitening_is_zca_symmetric_and_epsilon_damps_low_variance_directions():
    x = correlated_pixels()
    layer = Whitening(1e-2, dtype="float64")
    layer.adapt(x, scale=1 / 255)
    w = layer.kernel.numpy()
    np.testing.assert_allclose(w, w.T, atol=1e-12)  # ZCA: W = U diag(.) U^T, no rotation
    variances = np.linalg.eigvalsh(np.cov((x / 255).T, bias=True))
    whitened = np.linalg.eigvalsh(np.cov((x / 255 @ w).T, bias=True))
    # Each direction's variance s becomes s / (s + epsilon): below 1, and much below for
    # s << epsilon.
    np.testing.assert_allclose(
        np.sort(whitened), np.sort(variances / (variances + 1e-2)), rtol=1e-4
    )


def test_whitening_ignores_a_constant_shift_of_its_adapt_inputs():
    x = correlated_pixels()
    a, b = Whitening(1e-3, dtype="float64"), Whitening(1e-3, dtype="float64")
    a.adapt(x)
    b.adapt(x.astype("float64") + 100.0, chunk=333)
    np.testing.assert_allclose(a.kernel.numpy(), b.kernel.numpy(), rtol=1e-5, atol=1e-8)


def test_whitening_refuses_a_bad_epsilon_and_a_single_example():
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        Whitening(0.0)
    with pytest.raises(ValueError, match="at least two training examples. Received: 1"):
        Whitening().adapt(np.zeros((1, 4), "uint8"))


def test_principal_components_keep_the_directions_of_largest_variance_in_order():
    x = correlated_pixels()
    layer = PrincipalComponents(2, dtype="float64")
    layer.adapt(x, scale=1 / 255)
    u = layer.kernel.numpy()
    np.testing.assert_allclose(u.T @ u, np.eye(2), atol=1e-12)  # orthonormal axes
    centred = x / 255 - (x / 255).mean(axis=0)
    y = layer(centred).numpy()
    variances = np.sort(np.linalg.eigvalsh(np.cov((x / 255).T, bias=True)))[::-1]
    # The kept coordinates are uncorrelated, with the two largest variances, largest first.
    np.testing.assert_allclose(np.cov(y.T, bias=True), np.diag(variances[:2]), rtol=1e-6, atol=1e-7)
    # What is lost is the variance along the other axes.
    lost = centred - y @ u.T
    np.testing.assert_allclose((lost**2).sum(axis=1).mean(), variances[2:].sum(), rtol=1e-6)


def test_principal_components_of_whitened_inputs_are_pca_whitening():
    x = correlated_pixels()
    axes = principal_axes(x, scale=1 / 255)
    whitening = Whitening(1e-8, dtype="float64")
    whitening.set_axes(*axes)
    components = PrincipalComponents(3, dtype="float64")
    components.set_axes(*axes)
    y = components(whitening(x / 255 - (x / 255).mean(axis=0))).numpy()
    np.testing.assert_allclose(np.cov(y.T, bias=True), np.eye(3), atol=1e-4)
    # The same matrix as adapt's own decomposition.
    alone = Whitening(1e-8, dtype="float64")
    alone.adapt(x, scale=1 / 255)
    np.testing.assert_allclose(alone.kernel.numpy(), whitening.kernel.numpy(), atol=1e-9)


def test_principal_components_refuse_none_and_more_than_the_inputs():
    with pytest.raises(ValueError, match="components must be an int >= 1"):
        PrincipalComponents(0)
    with pytest.raises(ValueError, match="at most the 6 input features. Received: components=7"):
        PrincipalComponents(7).adapt(correlated_pixels(n=10))
    assert PrincipalComponents.from_config(PrincipalComponents(3).get_config()).components == 3
