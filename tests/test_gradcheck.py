"""Tests for kbn/gradcheck/check.py: three gradients agree, and a wrong one is caught."""

import numpy as np
import pytest
import tensorflow as tf

from kbn.errors import KbnError
from kbn.gradcheck.check import (
    _numeric_gradient,
    check_gradients,
    format_table,
    gradient_table,
    max_entry_error,
    param_names,
    relative_error,
)
from kbn.nn import batch_norm as batch_norm_lib
from kbn.nn import dense as dense_lib
from kbn.nn.builder import build_mlp

DIM = 20  # input features: the report's check on a reduced input
NUM_CLASSES = 10


def _batch(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, DIM)).astype("float64"), rng.integers(0, NUM_CLASSES, n)


def _scramble_batch_norm(model, seed=1):
    """Move gamma and beta away from 1 and 0, so their gradients matter."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, batch_norm_lib.BatchNorm):
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape))
            layer.beta.assign(rng.normal(0, 0.5, layer.beta.shape))


@pytest.mark.parametrize("batch_norm", [True, False], ids=["bn", "no-bn"])
def test_report_table_has_every_relative_error_below_1e_6(batch_norm):
    x, y = _batch(30)
    rows = gradient_table(x, y, hidden=[50], batch_sizes=[10, 20, 30], batch_norm=batch_norm)
    params = ["W1", "gamma1", "beta1", "W2", "b2"] if batch_norm else ["W1", "b1", "W2", "b2"]
    assert [r["param"] for r in rows] == params * 3
    assert [r["batch_size"] for r in rows] == [n for n in (10, 20, 30) for _ in params]
    assert max(r["rel_error"] for r in rows) < 1e-6
    assert max(r["rel_error_autodiff"] for r in rows) < 1e-12


def test_four_layer_net_with_gamma_beta_and_l2_checks_below_1e_6():
    x, y = _batch(20, seed=3)
    model = build_mlp([30, 20, 10], NUM_CLASSES, lam=0.05, adapt=x, dtype="float64", seed=2)
    _scramble_batch_norm(model)
    checks = check_gradients(model, x, y)
    assert [c.param for c in checks] == [
        "W1",
        "gamma1",
        "beta1",
        "W2",
        "gamma2",
        "beta2",
        "W3",
        "gamma3",
        "beta3",
        "W4",
        "b4",
    ]
    assert max(c.rel_error for c in checks) < 1e-6
    assert max(c.rel_error_autodiff for c in checks) < 1e-12


def test_net_with_dropout_and_augmentation_checks_below_1e_6_under_one_fixed_mask():
    # Every evaluation of the check reuses the layers' seed state: one dropout mask,
    # one flip and shift, so the numeric and hand-written gradients see the same function.
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (20, 4, 4, 3)).astype("float64")
    y = rng.integers(0, NUM_CLASSES, 20)
    model = build_mlp(
        [30, 20],
        NUM_CLASSES,
        adapt=x,
        dropout=0.5,
        flip=True,
        translate=0.25,
        dtype="float64",
        seed=2,
    )
    checks = check_gradients(model, x, y)
    assert max(c.rel_error for c in checks) < 1e-6
    assert max(c.rel_error_autodiff for c in checks) < 1e-12


def test_l2_penalty_is_part_of_the_checked_gradient():
    x, y = _batch(10)
    plain = build_mlp([8], NUM_CLASSES, adapt=x, dtype="float64", seed=0)
    penalised = build_mlp([8], NUM_CLASSES, lam=0.5, adapt=x, dtype="float64", seed=0)
    g_plain = check_gradients(plain, x, y)[0]
    g_penalised = check_gradients(penalised, x, y)[0]
    kernel = penalised.get_layer("dense1").kernel.numpy()
    np.testing.assert_allclose(g_penalised.hand - g_plain.hand, 2 * 0.5 * kernel, atol=1e-12)
    assert g_penalised.rel_error < 1e-6


def test_sign_flipped_dense_backward_is_caught(monkeypatch):
    original = dense_lib.dense_backward

    def flipped(ds, x, W):
        dx, dW, db = original(ds, x, W)
        return dx, -dW, db

    monkeypatch.setattr(dense_lib, "dense_backward", flipped)
    x, y = _batch(10)
    model = build_mlp([8], NUM_CLASSES, adapt=x, dtype="float64", seed=0)
    checks = {c.param: c for c in check_gradients(model, x, y)}
    assert checks["W1"].rel_error > 0.5
    assert checks["W2"].rel_error > 0.5
    assert checks["W2"].rel_error_autodiff > 0.5  # autodiff disagrees as well


def test_batch_norm_backward_without_the_mean_terms_is_caught(monkeypatch):
    def naive(dy, x_hat, inv_std, gamma):
        # Treats mean and var as constants: the classic BatchNorm mistake.
        return dy * gamma * inv_std, tf.reduce_sum(dy * x_hat, 0), tf.reduce_sum(dy, 0)

    monkeypatch.setattr(batch_norm_lib, "batch_norm_backward", naive)
    x, y = _batch(10)
    model = build_mlp([8], NUM_CLASSES, adapt=x, dtype="float64", seed=0)
    _scramble_batch_norm(model)
    checks = {c.param: c for c in check_gradients(model, x, y)}
    assert checks["W1"].rel_error > 1e-2


def test_check_leaves_weights_and_moving_statistics_untouched():
    x, y = _batch(10)
    model = build_mlp([8], NUM_CLASSES, adapt=x, dtype="float64", seed=0)
    before = [w.copy() for w in model.get_weights()]
    check_gradients(model, x, y)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_float32_model_is_checked_in_float64_with_the_same_weights():
    x, y = _batch(10)
    model = build_mlp([8], NUM_CLASSES, adapt=x, dtype="float32", seed=0)
    checks = check_gradients(model, x, y)
    assert max(c.rel_error for c in checks) < 1e-6
    float32 = check_gradients(model, x, y, dtype="float32")
    assert 1e-12 < max(c.rel_error for c in float32) < 1e-3  # single precision shows


def test_param_names_follow_the_report():
    x, _ = _batch(4)
    with_bn = build_mlp([8, 6], NUM_CLASSES, adapt=x, seed=0)
    without = build_mlp([8, 6], NUM_CLASSES, batch_norm=False, adapt=x, seed=0)
    assert param_names(with_bn) == ["W1", "gamma1", "beta1", "W2", "gamma2", "beta2", "W3", "b3"]
    assert param_names(without) == ["W1", "b1", "W2", "b2", "W3", "b3"]


def test_relative_error_is_the_report_formula():
    a = np.array([3.0, 0.0])
    b = np.array([0.0, 4.0])
    assert relative_error(a, a) == 0.0
    assert relative_error(a, b) == pytest.approx(5.0 / (3.0 + 4.0))
    assert max_entry_error([1.0, 0.0], [3.0, 0.0]) == pytest.approx(2.0 / 4.0)
    assert max_entry_error([0.0], [0.0]) == 0.0  # dead unit: both exactly zero


def test_numeric_gradient_steps_around_a_relu_kink():
    w = tf.constant([2e-6, 1.0], tf.float64)  # first entry sits 2e-6 from the kink

    def cost(params):
        return tf.reduce_sum(tf.nn.relu(params[0]))

    grad, kinks = _numeric_gradient(cost, [w], 0, 1e-5, np.arange(2))
    np.testing.assert_allclose(grad, [1.0, 1.0], rtol=1e-9)
    assert kinks == 1


def test_max_entries_checks_a_random_subset():
    x, y = _batch(10)
    model = build_mlp([8], NUM_CLASSES, adapt=x, dtype="float64", seed=0)
    checks = check_gradients(model, x, y, max_entries=5)
    w1 = checks[0]
    assert w1.shape == (DIM, 8)
    assert np.count_nonzero(~np.isnan(w1.numeric)) == 5
    assert w1.rel_error < 1e-6


def test_format_table_has_one_line_per_batch_size():
    x, y = _batch(6)
    rows = gradient_table(x, y, hidden=[4], batch_sizes=[3, 6], batch_norm=False)
    table = format_table(rows).splitlines()
    assert table[0] == (
        "| Batch size | Relative Error W1 | Relative Error b1 "
        "| Relative Error W2 | Relative Error b2 |"
    )
    assert [line.split("|")[1].strip() for line in table[2:]] == ["3", "6"]


@pytest.mark.parametrize("sizes", [[0], [], [40]])
def test_bad_batch_sizes_are_user_errors(sizes):
    x, y = _batch(30)
    with pytest.raises(KbnError):
        gradient_table(x, y, batch_sizes=sizes)


def test_gradient_table_takes_lam_and_its_old_name_l2_with_a_warning():
    x, y = _batch(6)
    rows = gradient_table(
        x, y, hidden=[4], batch_sizes=[3], batch_norm=False, lam=0.5, max_entries=3
    )
    with pytest.warns(DeprecationWarning, match="l2= is now lam="):
        old = gradient_table(
            x, y, hidden=[4], batch_sizes=[3], batch_norm=False, l2=0.5, max_entries=3
        )
    assert [r["rel_error"] for r in old] == [r["rel_error"] for r in rows]
    plain = gradient_table(x, y, hidden=[4], batch_sizes=[3], batch_norm=False, max_entries=3)
    assert [r["rel_error"] for r in plain] != [r["rel_error"] for r in rows]  # lam reached the net
