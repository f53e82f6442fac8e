"""Tests for kbn.nn.cross_entropy: the loss against Keras's, its hand-written gradient against
autodiff, finite differences and the report's `P - T`, smoothing, saving and the old name."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from synthetic import make_images

from kbn.data import Dataset, Split
from kbn.gradcheck.check import max_entry_error
from kbn.nn import (
    SoftmaxCrossEntropy,
    autodiff_backward,
    build_mlp,
    builder,
    cross_entropy,
    cross_entropy_backward,
    cross_entropy_forward,
    smoothed_targets,
)
from kbn.nn.cross_entropy import SmoothedCrossentropy
from kbn.training import TrainConfig, train

N, K = 6, 4
EXACT = dict(rtol=1e-12, atol=1e-12)  # float64 against float64


def logits_and_labels(seed=0):
    rng = np.random.default_rng(seed)
    s = rng.normal(0.0, 3.0, (N, K))  # spread wide enough that softmax is far from uniform
    y = rng.integers(0, K, N)
    return s, y


def loss_and_gradient(loss, s, y):
    s = tf.constant(s)
    with tf.GradientTape() as tape:
        tape.watch(s)
        value = loss(y, s)
    return float(value), tape.gradient(value, s).numpy()


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_loss_and_gradient_equal_keras_cross_entropy(smoothing):
    s, y = logits_and_labels()
    ours = loss_and_gradient(SoftmaxCrossEntropy(smoothing, dtype="float64"), s, y)
    if smoothing:
        theirs_loss = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=smoothing, dtype="float64"
        )
        theirs = loss_and_gradient(
            lambda y_, s_: theirs_loss(tf.one_hot(y_, K, dtype=s_.dtype), s_), s, y
        )
    else:
        theirs = loss_and_gradient(
            keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64"), s, y
        )
    assert ours[0] == pytest.approx(theirs[0], rel=1e-12)
    assert ours[0] > 0.5  # a real loss, not the trivial 0
    np.testing.assert_allclose(ours[1], theirs[1], **EXACT)


def test_gradient_of_the_batch_mean_is_probabilities_minus_targets_over_n():
    s, y = logits_and_labels(1)
    _, grad = loss_and_gradient(SoftmaxCrossEntropy(dtype="float64"), s, y)
    p = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(grad, (p - np.eye(K)[y]) / N, **EXACT)
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-15)  # P and T both sum to 1


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_hand_written_backward_equals_autodiff_and_runs_only_outside_it(smoothing, monkeypatch):
    calls = []
    backward = cross_entropy.cross_entropy_backward

    def spy(*args):
        calls.append("backward")
        return backward(*args)

    monkeypatch.setattr(cross_entropy, "cross_entropy_backward", spy)
    s, y = logits_and_labels(2)
    loss = SoftmaxCrossEntropy(smoothing, dtype="float64")
    with autodiff_backward():
        value_auto, grad_auto = loss_and_gradient(loss, s, y)
    assert calls == []
    value, grad = loss_and_gradient(loss, s, y)
    assert calls == ["backward"]
    assert value == pytest.approx(value_auto, rel=1e-14)
    assert np.abs(grad_auto).max() > 1e-2
    np.testing.assert_allclose(grad, grad_auto, **EXACT)


def test_backward_function_matches_finite_differences():
    s, y = logits_and_labels(3)
    s = s / 3  # no probability near 0: centred differences resolve about 1e-11 per entry
    t = smoothed_targets(tf.constant(y), K, 0.1, tf.float64)
    dl = np.random.default_rng(4).standard_normal(N)

    def f(s_):
        return float(np.sum(cross_entropy_forward(tf.constant(s_), t)[0].numpy() * dl))

    numerical = np.zeros_like(s)
    h = 1e-5
    for index in np.ndindex(s.shape):
        plus, minus = s.copy(), s.copy()
        plus[index] += h
        minus[index] -= h
        numerical[index] = (f(plus) - f(minus)) / (2 * h)
    _, log_p = cross_entropy_forward(tf.constant(s), t)
    analytic = cross_entropy_backward(tf.constant(dl), log_p, t).numpy()
    assert max_entry_error(analytic, numerical, eps=1e-8) < 1e-7


def test_smoothed_targets_put_one_minus_e_plus_e_over_k_on_the_label():
    t = smoothed_targets(tf.constant([2, 0]), 4, 0.2, tf.float64).numpy()
    np.testing.assert_allclose(t, [[0.05, 0.05, 0.85, 0.05], [0.85, 0.05, 0.05, 0.05]], **EXACT)
    np.testing.assert_allclose(smoothed_targets(tf.constant([1]), 3, 0.0, tf.float64), [[0, 1, 0]])


def test_large_logits_give_a_finite_loss_and_gradient():
    s = np.array([[1000.0, -1000.0, 0.0]])
    value, grad = loss_and_gradient(SoftmaxCrossEntropy(dtype="float64"), s, np.array([1]))
    assert value == pytest.approx(2000.0)
    np.testing.assert_allclose(grad, [[1.0, -1.0, 0.0]], atol=1e-12)


def test_labels_of_shape_n_by_one_and_in_float_give_the_same_loss():
    s, y = logits_and_labels(5)
    loss = SoftmaxCrossEntropy(dtype="float64")
    flat = loss(y, s)
    assert float(loss(y.reshape(-1, 1).astype("float64"), s)) == pytest.approx(
        float(flat), rel=1e-15
    )


def test_label_smoothing_outside_zero_to_one_is_refused_naming_the_value():
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\). Received: 1.0"):
        SoftmaxCrossEntropy(1.0)


def test_build_mlp_compiles_with_it_and_a_saved_model_keeps_its_smoothing(tmp_path):
    model = build_mlp([3], K, input_shape=(5,), seed=0)
    assert isinstance(model.loss, SoftmaxCrossEntropy)
    assert model.loss.label_smoothing == 0.0
    model.compile(optimizer="sgd", loss=SoftmaxCrossEntropy(0.1))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.loss, SoftmaxCrossEntropy)
    assert loaded.loss.label_smoothing == 0.1


def test_a_loss_saved_under_its_earlier_name_loads_as_the_same_loss():
    config = keras.saving.serialize_keras_object(SmoothedCrossentropy(0.1))
    assert config["registered_name"] == "kbn>SmoothedCrossentropy"
    loaded = keras.saving.deserialize_keras_object(config)
    assert isinstance(loaded, SoftmaxCrossEntropy)
    s, y = logits_and_labels(6)
    s = s.astype("float32")
    assert float(loaded(y, s)) == pytest.approx(float(SoftmaxCrossEntropy(0.1)(y, s)), rel=1e-6)


def test_training_with_it_takes_the_steps_keras_cross_entropy_takes_in_float64(
    tmp_path, monkeypatch
):
    x, y = make_images(96, seed=0)
    val_x, val_y = make_images(32, seed=1)
    data = Dataset(
        "synthetic", Split(x, y), Split(val_x, val_y), Split(val_x[:0], val_y[:0]), ("a", "b", "c")
    )
    weights = {}
    for name, make_loss in [
        (
            "keras",
            lambda label_smoothing=0.0: keras.losses.SparseCategoricalCrossentropy(
                from_logits=True
            ),
        ),
        ("kbn", builder.loss),
    ]:
        monkeypatch.setattr(builder, "loss", make_loss)
        model = build_mlp([8, 6], 3, adapt=x, lam=1e-3, seed=0, dtype="float64")
        config = TrainConfig(
            eta=0.1,
            epochs=3,
            batch_size=16,
            logdir=str(tmp_path),
            run_name=name,
            verbose=0,
            plot_curves=False,
        )
        train(model, data, config)
        assert isinstance(model.loss, SoftmaxCrossEntropy) == (name == "kbn")
        weights[name] = model.get_weights()
    moved = max(
        np.abs(a - b).max()
        for a, b in zip(
            weights["kbn"],
            build_mlp([8, 6], 3, adapt=x, lam=1e-3, seed=0, dtype="float64").get_weights(),
        )
    )
    assert moved > 1e-2  # the runs trained
    for ours, theirs in zip(weights["kbn"], weights["keras"]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
