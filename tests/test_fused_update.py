"""Tests for kbn.optim.fused_update: inside the block a listed kernel's L2 penalty keeps its value
and loses its gradient, a 16-bit layer multiplies by the kernel's copy, kbn's SGD adds what the
tape left out with autodiff's numbers and keeps the copy equal to the kernel, and nothing is added
for a kernel whose penalty the step did not fold."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kbn.nn.dense import Dense, fused_kernels
from kbn.optim.fused_update import fused_update, momentum_update
from kbn.optim.sgd import SGD

LAM = 0.03


def penalized(dtype="float32", units=4):
    layer = Dense(units, lam=LAM, dtype=dtype)
    layer.build((None, 6))
    return layer


def penalty_and_gradient(layer):
    with tf.GradientTape() as tape:
        value = layer.penalty(layer.kernel)
    return float(value), tape.gradient(value, layer.kernel.value)


def test_inside_the_block_a_listed_kernels_penalty_has_its_value_and_no_gradient():
    layer, other = penalized(), penalized()
    value, gradient = penalty_and_gradient(layer)
    w = layer.kernel.numpy()
    assert value == pytest.approx(LAM * np.sum(w**2), rel=1e-6)
    np.testing.assert_allclose(gradient.numpy(), 2 * LAM * w, rtol=1e-6)
    with fused_update(fused_kernels(keras.Sequential([layer]))):
        folded_value, folded_gradient = penalty_and_gradient(layer)
        _, unlisted_gradient = penalty_and_gradient(other)
    assert folded_value == value
    assert folded_gradient is None
    np.testing.assert_allclose(unlisted_gradient.numpy(), 2 * LAM * other.kernel.numpy(), rtol=1e-6)


def steps(optimizer, layer, fold, gradients):
    """Apply `gradients` (data gradients of the kernel) to `layer.kernel`, one per step.

    Each step traces the penalty as the training step does: inside the block when `fold`
    (its gradient left to the optimizer), else its gradient added as autodiff adds it.
    """
    kernel = layer.kernel
    optimizer.build([kernel])
    kernels = fused_kernels(keras.Sequential([layer]))

    @tf.function
    def step(gradient):
        with fused_update(kernels if fold else []):
            with tf.GradientTape() as tape:
                penalty = layer.penalty(kernel)
            extra = tape.gradient(penalty, kernel.value)
            optimizer.apply([gradient if extra is None else gradient + extra], [kernel])

    for gradient in gradients:
        step(gradient)
    return [kernel.numpy(), *(velocity.numpy() for velocity in optimizer.momentums)]


@pytest.mark.parametrize(
    "dtype, kwargs, rtol",
    [
        ("float32", {"momentum": 0.9}, 1e-6),  # one XLA pass; float rounding may differ
        ("float64", {"momentum": 0.9}, 1e-13),
        ("float32", {"momentum": 0.9, "nesterov": True}, 0),  # Keras's own update, gradient added
        ("float32", {"momentum": 0.0}, 0),
    ],
)
def test_sgd_adds_the_folded_penalty_gradient_with_autodiffs_numbers(dtype, kwargs, rtol):
    rng = np.random.default_rng(0)
    gradients = [tf.constant(rng.normal(size=(6, 4)), dtype) for _ in range(20)]
    layers = [penalized(dtype) for _ in range(2)]
    layers[1].set_weights(layers[0].get_weights())
    reference = steps(SGD(0.0864, **kwargs), layers[0], False, gradients)
    folded = steps(SGD(0.0864, **kwargs), layers[1], True, gradients)
    for ours, theirs in zip(folded, reference):
        # Rounding differs where the update subtracts numbers of the weights' size.
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=rtol * np.abs(theirs).max())
    assert not np.allclose(reference[0], layers[0].kernel.numpy() * 0)


def test_a_listed_kernel_whose_penalty_was_not_traced_in_the_block_gets_nothing_added():
    layer = penalized()
    start = layer.kernel.numpy()
    optimizer = SGD(0.1, momentum=0.9)
    optimizer.build([layer.kernel])
    with fused_update(fused_kernels(keras.Sequential([layer]))):
        optimizer.apply([tf.ones_like(start)], [layer.kernel])
    np.testing.assert_allclose(layer.kernel.numpy(), start - 0.1, rtol=1e-6)


def test_the_fused_update_is_the_reports_momentum_step_with_the_penalty_gradient():
    w, v = tf.Variable([[1.0, -2.0]]), tf.Variable([[0.5, 0.25]])
    momentum_update(w, v, tf.constant([[0.1, 0.2]]), 0.05, 0.9, 0.01)
    expected_v = 0.9 * np.array([[0.5, 0.25]]) - 0.05 * (
        np.array([[0.1, 0.2]]) + 0.01 * np.array([[1.0, -2.0]])
    )
    np.testing.assert_allclose(v.numpy(), expected_v, rtol=1e-6)
    np.testing.assert_allclose(w.numpy(), np.array([[1.0, -2.0]]) + expected_v, rtol=1e-6)
