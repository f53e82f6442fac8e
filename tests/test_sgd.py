"""Tests for kbn.optim.sgd.SGD: Keras's SGD numbers bit for bit, with the fused kernel or
without it, and a model compiled with it saves and loads."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kbn.nn.builder import build_mlp
from kbn.optim.sgd import SGD


def run_both(dtype, steps=20, **kwargs):
    """Keras's SGD and kbn's after `steps` updates: their variables, optimizers and op types."""
    rng = np.random.default_rng(0)
    start = rng.normal(size=(30, 7)).astype(dtype)
    variables = [keras.Variable(start), keras.Variable(start)]
    optimizers = [keras.optimizers.SGD(0.0864, **kwargs), SGD(0.0864, **kwargs)]
    for optimizer, variable in zip(optimizers, variables):
        optimizer.build([variable])

    @tf.function
    def step(gradient):
        for optimizer, variable in zip(optimizers, variables):
            optimizer.apply([gradient], [variable])

    for _ in range(steps):
        step(tf.constant(rng.normal(size=start.shape).astype(dtype)))
    graph = step.get_concrete_function(tf.TensorSpec(start.shape, dtype)).graph
    return variables, optimizers, {op.type for op in graph.get_operations()}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_momentum_update_equals_keras_sgd_bit_for_bit(dtype):
    (keras_w, ours_w), (keras_sgd, ours), ops = run_both(dtype, momentum=0.9)
    assert "ResourceApplyKerasMomentum" in ops
    np.testing.assert_array_equal(ours_w.numpy(), keras_w.numpy())
    np.testing.assert_array_equal(ours.momentums[0].numpy(), keras_sgd.momentums[0].numpy())
    assert not np.array_equal(ours_w.numpy(), np.zeros_like(ours_w.numpy()))
    assert ours.iterations.numpy() == 20


@pytest.mark.parametrize("kwargs", [{"momentum": 0.0}, {"momentum": 0.9, "nesterov": True}])
def test_updates_the_fused_kernel_cannot_do_are_keras_own(kwargs):
    (keras_w, ours_w), _, ops = run_both("float32", **kwargs)
    assert "ResourceApplyKerasMomentum" not in ops
    np.testing.assert_array_equal(ours_w.numpy(), keras_w.numpy())


def test_a_model_compiled_with_it_saves_and_loads_with_its_settings(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (8, 6)).astype("uint8")
    model = build_mlp([4], 3, adapt=x, seed=0)
    model.compile(optimizer=SGD(0.05, momentum=0.8), loss=model.loss)
    model.fit(x, np.arange(8) % 3, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.optimizer, SGD)
    assert loaded.optimizer.momentum == pytest.approx(0.8)
    assert float(loaded.optimizer.learning_rate) == pytest.approx(0.05)
    np.testing.assert_array_equal(
        loaded.optimizer.momentums[0].numpy(), model.optimizer.momentums[0].numpy()
    )
