"""Tests for kbn.nn.dense and kbn.nn.batch_norm: Dense and BatchNorm against Keras's own layers, the
hand-written backward passes against autodiff and finite differences, the moving statistics, the L2
penalty, float64, saving, tf.function and tf.distribute."""

import json
import pathlib
import re
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from kbn import nn
from kbn.gradcheck.check import max_entry_error
from kbn.nn import BatchNorm, Dense, autodiff_backward, batch_norm, dense

NUM_SAMPLES = 64
NUM_FEATURES = 5
NUM_UNITS = 4
BATCH = 6
MOMENTUM = 0.9
EPSILON = 1e-3
EXACT = dict(rtol=1e-12, atol=1e-12)  # float64 against float64


def random_inputs(shape, dtype="float64", seed=0):
    """Inputs with a different mean and spread per feature, so statistics matter."""
    rng = np.random.default_rng(seed)
    loc = rng.uniform(-3.0, 3.0, shape[-1])
    scale = rng.uniform(0.5, 4.0, shape[-1])
    return (loc + scale * rng.standard_normal(shape)).astype(dtype)


def randomize_batch_norm(layer, seed=1):
    """Set gamma, beta and the moving statistics of a built BatchNorm to distinct values."""
    rng = np.random.default_rng(seed)
    dim = layer.moving_mean.shape[0]
    if layer.scale:
        layer.gamma.assign(rng.uniform(0.5, 2.0, dim))
    if layer.center:
        layer.beta.assign(rng.uniform(-1.0, 1.0, dim))
    layer.moving_mean.assign(rng.uniform(-2.0, 2.0, dim))
    layer.moving_variance.assign(rng.uniform(0.5, 3.0, dim))


def gradients(layer, x, upstream, **call_kwargs):
    """Output and the gradients of sum(output * upstream) for x and every trainable weight."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, **call_kwargs)
        loss = tf.reduce_sum(y * upstream)
    grads = tape.gradient(loss, [x, *layer.trainable_weights])
    return y.numpy(), [g.numpy() for g in grads]


# --- our run_layer_test: the checklist of keras/src/testing/test_case.py ------------------


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_shape,
    expected_output_shape,
    expected_num_trainable_weights,
    expected_num_non_trainable_weights,
    call_kwargs=None,
):
    """Config round trip, build, symbolic call, eager call, one fit step, weight counts."""
    call_kwargs = call_kwargs or {}

    # 1. Config round trip: every init argument is kept, from_config rebuilds the same.
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    for key, value in init_kwargs.items():
        assert config[key] == value, key
    assert layer_cls.from_config(config).get_config() == config

    # 2. Build: every weight exists with the right trainability.
    layer.build(input_shape)
    assert layer.built
    assert len(layer.trainable_weights) == expected_num_trainable_weights
    assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights
    assert layer.compute_output_shape(input_shape) == expected_output_shape

    # 3. Symbolic call in a functional model.
    inputs = keras.Input(shape=input_shape[1:], batch_size=input_shape[0])
    symbolic = layer_cls(**init_kwargs)(inputs, **call_kwargs)
    assert tuple(symbolic.shape) == expected_output_shape

    # 4. Eager call.
    x = random_inputs(input_shape, "float32")
    eager = layer_cls(**init_kwargs)
    y = eager(x, **call_kwargs)
    assert tuple(y.shape) == expected_output_shape
    assert keras.backend.standardize_dtype(y.dtype) == "float32"
    assert np.all(np.isfinite(y))
    assert len(eager.trainable_weights) == expected_num_trainable_weights
    assert len(eager.non_trainable_weights) == expected_num_non_trainable_weights

    # 5. One fit step in a Sequential model moves every trainable weight.
    model = keras.Sequential([keras.Input(shape=input_shape[1:]), layer_cls(**init_kwargs)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [w.numpy().copy() for w in model.trainable_weights]
    target = np.ones(expected_output_shape, "float32")
    history = model.fit(x, target, batch_size=input_shape[0], epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    for old, new in zip(before, model.trainable_weights):
        assert not np.allclose(old, new.numpy()), new.path
    return model


@pytest.mark.parametrize(
    "init_kwargs, num_trainable",
    [
        ({"units": NUM_UNITS, "lam": 0.01}, 2),
        ({"units": NUM_UNITS, "use_bias": False}, 1),
    ],
)
def test_dense_walks_the_layer_checklist(init_kwargs, num_trainable):
    run_layer_test(
        Dense,
        init_kwargs,
        input_shape=(BATCH, NUM_FEATURES),
        expected_output_shape=(BATCH, NUM_UNITS),
        expected_num_trainable_weights=num_trainable,
        expected_num_non_trainable_weights=0,
    )


@pytest.mark.parametrize(
    "center, scale, num_trainable",
    [(True, True, 2), (True, False, 1), (False, True, 1), (False, False, 0)],
)
def test_batch_norm_walks_the_layer_checklist(center, scale, num_trainable):
    init_kwargs = {"momentum": MOMENTUM, "epsilon": EPSILON, "center": center, "scale": scale}
    shape = (BATCH, NUM_FEATURES)
    if num_trainable:
        model = run_layer_test(
            BatchNorm,
            init_kwargs,
            input_shape=shape,
            expected_output_shape=shape,
            expected_num_trainable_weights=num_trainable,
            expected_num_non_trainable_weights=2,
            call_kwargs={"training": True},
        )
        # The fit step trained on batch statistics, so it moved the moving statistics.
        bn = model.layers[0]
        assert not np.allclose(bn.moving_mean.numpy(), 0.0)
        assert not np.allclose(bn.moving_variance.numpy(), 1.0)
    layer = BatchNorm(**init_kwargs)
    layer.build(shape)
    names = sorted(w.path.split("/")[-1] for w in layer.trainable_weights)
    assert names == sorted(["beta"] * center + ["gamma"] * scale)
    assert [w.path.split("/")[-1] for w in layer.non_trainable_weights] == [
        "moving_mean",
        "moving_variance",
    ]


# --- agreement with Keras's own layers ----------------------------------------------------


@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_matches_keras_dense(use_bias):
    x = random_inputs((BATCH, NUM_FEATURES))
    upstream = random_inputs((BATCH, NUM_UNITS), seed=2)
    ours = Dense(NUM_UNITS, use_bias=use_bias, bias_initializer="random_normal", dtype="float64")
    ref = keras.layers.Dense(NUM_UNITS, use_bias=use_bias, dtype="float64")
    ours.build(x.shape)
    ref.build(x.shape)
    ref.set_weights(ours.get_weights())

    y, grads = gradients(ours, x, upstream)
    y_ref, grads_ref = gradients(ref, x, upstream)

    assert y.dtype == np.float64
    np.testing.assert_allclose(y, y_ref, **EXACT)
    assert len(grads) == len(grads_ref) == 2 + use_bias  # x, W[, b]
    for g, g_ref in zip(grads, grads_ref):
        np.testing.assert_allclose(g, g_ref, **EXACT)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_keras_batch_normalization_in_training_and_inference(training):
    x = random_inputs((BATCH, NUM_FEATURES))
    upstream = random_inputs((BATCH, NUM_FEATURES), seed=2)
    ours = BatchNorm(momentum=MOMENTUM, epsilon=EPSILON, dtype="float64")
    ref = keras.layers.BatchNormalization(momentum=MOMENTUM, epsilon=EPSILON, dtype="float64")
    ours.build(x.shape)
    ref.build(x.shape)
    randomize_batch_norm(ours)
    for name in ("gamma", "beta", "moving_mean", "moving_variance"):
        getattr(ref, name).assign(getattr(ours, name))
    moving_mean_before = ours.moving_mean.numpy().copy()

    y, grads = gradients(ours, x, upstream, training=training)
    y_ref, grads_ref = gradients(ref, x, upstream, training=training)

    np.testing.assert_allclose(y, y_ref, **EXACT)
    assert len(grads) == len(grads_ref) == 3  # x, gamma, beta
    for g, g_ref in zip(grads, grads_ref):
        np.testing.assert_allclose(g, g_ref, **EXACT)
    # Moving statistics: updated alike in training, untouched at inference.
    np.testing.assert_allclose(ours.moving_mean.numpy(), ref.moving_mean.numpy(), **EXACT)
    np.testing.assert_allclose(ours.moving_variance.numpy(), ref.moving_variance.numpy(), **EXACT)
    assert np.allclose(ours.moving_mean.numpy(), moving_mean_before) != training


# --- hand-written backward passes ---------------------------------------------------------


LAYER_CASES = {
    "dense": (lambda: Dense(NUM_UNITS, dtype="float64"), {}),
    "dense_no_bias": (lambda: Dense(NUM_UNITS, use_bias=False, dtype="float64"), {}),
    "batch_norm_training": (
        lambda: BatchNorm(momentum=MOMENTUM, dtype="float64"),
        {"training": True},
    ),
    "batch_norm_inference": (
        lambda: BatchNorm(momentum=MOMENTUM, dtype="float64"),
        {"training": False},
    ),
    "batch_norm_no_center_no_scale_training": (
        lambda: BatchNorm(center=False, scale=False, dtype="float64"),
        {"training": True},
    ),
    "batch_norm_no_center_no_scale_inference": (
        lambda: BatchNorm(center=False, scale=False, dtype="float64"),
        {"training": False},
    ),
}


def make_case(name):
    make, call_kwargs = LAYER_CASES[name]
    layer = make()
    x = random_inputs((BATCH, NUM_FEATURES))
    layer.build(x.shape)
    if isinstance(layer, BatchNorm):
        randomize_batch_norm(layer)
    upstream = random_inputs(layer.compute_output_shape(x.shape), seed=2)
    return layer, x, upstream, call_kwargs


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_hand_written_backward_equals_autodiff(case):
    layer, x, upstream, call_kwargs = make_case(case)
    moving = [w.numpy().copy() for w in layer.non_trainable_weights]
    y, grads = gradients(layer, x, upstream, **call_kwargs)
    for w, value in zip(layer.non_trainable_weights, moving):  # same state for autodiff
        w.assign(value)
    with autodiff_backward():
        y_auto, grads_auto = gradients(layer, x, upstream, **call_kwargs)

    np.testing.assert_allclose(y, y_auto, **EXACT)
    assert len(grads) == 1 + len(layer.trainable_weights)
    for g, g_auto in zip(grads, grads_auto):
        assert np.abs(g_auto).max() > 1e-3  # a real gradient, not zeros on both sides
        np.testing.assert_allclose(g, g_auto, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", ["dense", "batch_norm_training", "batch_norm_inference"])
def test_gradients_come_from_the_hand_written_backward_unless_autodiff(case, monkeypatch):
    """The autodiff reference is a different computation: the hand-written one runs only outside."""
    calls = []

    def spy(function):
        def wrapped(*args):
            calls.append(function.__name__)
            return function(*args)

        wrapped.__name__ = function.__name__
        return wrapped

    for module, name in (
        (dense, "dense_backward"),
        (batch_norm, "batch_norm_backward"),
        (batch_norm, "batch_norm_inference_backward"),
    ):
        monkeypatch.setattr(module, name, spy(getattr(module, name)))
    layer, x, upstream, call_kwargs = make_case(case)  # BatchNorm binds its ops at __init__

    with autodiff_backward():
        gradients(layer, x, upstream, **call_kwargs)
    assert calls == []
    gradients(layer, x, upstream, **call_kwargs)
    expected = {
        "dense": "dense_backward",
        "batch_norm_training": "batch_norm_backward",
        "batch_norm_inference": "batch_norm_inference_backward",
    }[case]
    assert calls == [expected]


def numerical_gradient(f, x, h=1e-5):
    """Centred differences of the scalar f at every element of the float64 array x."""
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        old = x[index]
        x[index] = old + h
        plus = f(x)
        x[index] = old - h
        minus = f(x)
        x[index] = old
        grad[index] = (plus - minus) / (2 * h)
    return grad


def relative_error(a, n):
    return max_entry_error(a, n, eps=1e-8)


def test_backward_functions_match_finite_differences():
    rng = np.random.default_rng(3)
    n, d, m = 4, 3, 2
    x = random_inputs((n, d))
    W = rng.standard_normal((d, m))
    b = rng.standard_normal(m)
    gamma = rng.uniform(0.5, 2.0, d)
    beta = rng.standard_normal(d)
    moving_mean, moving_var = rng.standard_normal(d), rng.uniform(0.5, 2.0, d)
    ds = rng.standard_normal((n, m))
    dy = rng.standard_normal((n, d))

    def dense_loss(x_, W_, b_):
        return float(np.sum(nn.dense_forward(x_, W_, b_).numpy() * ds))

    dx, dW, db = (g.numpy() for g in nn.dense_backward(tf.constant(ds), x, W))
    assert relative_error(dx, numerical_gradient(lambda v: dense_loss(v, W, b), x.copy())) < 1e-7
    assert relative_error(dW, numerical_gradient(lambda v: dense_loss(x, v, b), W.copy())) < 1e-7
    assert relative_error(db, numerical_gradient(lambda v: dense_loss(x, W, v), b.copy())) < 1e-7

    def bn_train_loss(x_, gamma_, beta_):
        mean, var = x_.mean(0), x_.var(0)
        y = nn.batch_norm_forward(x_, mean, var, gamma_, beta_, EPSILON)[0]
        return float(np.sum(y.numpy() * dy))

    def bn_inference_loss(x_, gamma_, beta_):
        y = nn.batch_norm_forward(x_, moving_mean, moving_var, gamma_, beta_, EPSILON)[0]
        return float(np.sum(y.numpy() * dy))

    for backward, loss, mean, var in [
        (nn.batch_norm_backward, bn_train_loss, x.mean(0), x.var(0)),
        (nn.batch_norm_inference_backward, bn_inference_loss, moving_mean, moving_var),
    ]:
        _, x_hat, inv_std = nn.batch_norm_forward(x, mean, var, gamma, beta, EPSILON)
        dx, dgamma, dbeta = (g.numpy() for g in backward(tf.constant(dy), x_hat, inv_std, gamma))
        num_dx = numerical_gradient(lambda v, loss=loss: loss(v, gamma, beta), x.copy())
        assert relative_error(dx, num_dx) < 1e-7
        num_dgamma = numerical_gradient(lambda v, loss=loss: loss(x, v, beta), gamma.copy())
        assert relative_error(dgamma, num_dgamma) < 1e-7
        num_dbeta = numerical_gradient(lambda v, loss=loss: loss(x, gamma, v), beta.copy())
        assert relative_error(dbeta, num_dbeta) < 1e-7


# --- BatchNorm's statistics ---------------------------------------------------------------


def test_moving_average_follows_momentum():
    layer = BatchNorm(momentum=0.9, dtype="float64")
    first = np.array([[1.0, 10.0], [3.0, 20.0], [5.0, 60.0]])  # mean 3, 30; var 8/3, 1400/3
    layer(first, training=True)
    # moving_mean = 0.9 * 0 + 0.1 * mean; moving_variance = 0.9 * 1 + 0.1 * biased var.
    np.testing.assert_allclose(layer.moving_mean.numpy(), [0.3, 3.0], rtol=1e-12)
    np.testing.assert_allclose(
        layer.moving_variance.numpy(), [0.9 + 0.8 / 3, 0.9 + 140.0 / 3], rtol=1e-12
    )

    second = np.array([[0.0, -4.0], [2.0, 4.0]])  # mean 1, 0; var 1, 16
    layer(second, training=True)
    np.testing.assert_allclose(
        layer.moving_mean.numpy(), [0.9 * 0.3 + 0.1 * 1.0, 0.9 * 3.0 + 0.1 * 0.0], rtol=1e-12
    )
    np.testing.assert_allclose(
        layer.moving_variance.numpy(),
        [0.9 * (0.9 + 0.8 / 3) + 0.1 * 1.0, 0.9 * (0.9 + 140.0 / 3) + 0.1 * 16.0],
        rtol=1e-12,
    )


def test_training_uses_batch_statistics_and_inference_uses_moving_ones():
    x = random_inputs((NUM_SAMPLES, 3))
    moving_mean = np.array([1.0, -2.0, 3.0])
    moving_var = np.array([4.0, 0.25, 9.0])
    layer = BatchNorm(momentum=MOMENTUM, epsilon=EPSILON, dtype="float64")
    layer.build(x.shape)

    def set_moving(mean, var):
        layer.moving_mean.assign(mean)
        layer.moving_variance.assign(var)

    # Training: the batch's own statistics, whatever the moving ones are.
    set_moving([50.0, 60.0, 70.0], [100.0, 200.0, 300.0])
    y = layer(x, training=True).numpy()
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-10)
    np.testing.assert_allclose(y.var(axis=0), x.var(axis=0) / (x.var(axis=0) + EPSILON))
    np.testing.assert_allclose(y.var(axis=0), 1.0, atol=5e-3)

    # Inference: the moving statistics, with gamma and beta applied.
    set_moving(moving_mean, moving_var)
    layer.gamma.assign([2.0, 0.5, -1.0])
    layer.beta.assign([0.1, 0.2, 0.3])
    expected = (x - moving_mean) / np.sqrt(moving_var + EPSILON) * [2.0, 0.5, -1.0] + [
        0.1,
        0.2,
        0.3,
    ]
    np.testing.assert_allclose(layer(x, training=False).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-12)  # training=None
    np.testing.assert_allclose(layer.moving_mean.numpy(), moving_mean)  # untouched
    np.testing.assert_allclose(layer.moving_variance.numpy(), moving_var)

    # Frozen: moving statistics even with training=True, and no update.
    layer.trainable = False
    np.testing.assert_allclose(layer(x, training=True).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(layer.moving_mean.numpy(), moving_mean)
    np.testing.assert_allclose(layer.moving_variance.numpy(), moving_var)


def test_frozen_batch_norm_keeps_its_moving_statistics_through_fit():
    x = random_inputs((NUM_SAMPLES, 3), "float32")
    model = keras.Sequential([keras.Input((3,)), BatchNorm(), keras.layers.Dense(1)])
    bn = model.layers[0]
    bn.moving_mean.assign([1.0, -2.0, 3.0])
    bn.moving_variance.assign([4.0, 0.25, 9.0])
    bn.trainable = False
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit(x, np.ones((NUM_SAMPLES, 1)), epochs=1, batch_size=16, verbose=0)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), [1.0, -2.0, 3.0])
    np.testing.assert_array_equal(bn.moving_variance.numpy(), [4.0, 0.25, 9.0])
    np.testing.assert_array_equal(bn.gamma.numpy(), 1.0)


# --- Dense's L2 penalty -------------------------------------------------------------------


def cross_entropy(logits, labels):
    logits = np.asarray(logits, np.float64)
    log_z = np.log(np.sum(np.exp(logits), axis=1))
    return np.mean(log_z - logits[np.arange(len(labels)), labels])


@pytest.mark.parametrize("lam, penalty", [(0.01, 0.91), (0.0, 0.0)])
def test_dense_l2_penalty_is_in_model_losses_and_fit_loss(lam, penalty):
    kernel = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])  # sum of squares 91
    bias = np.array([0.5, -0.5, 0.0])
    x = np.array([[0.1, 0.2], [0.3, -0.1], [-0.2, 0.4], [0.0, 0.5]], "float32")
    labels = np.array([0, 2, 1, 2])
    layer = Dense(3, lam=lam)
    model = keras.Sequential([keras.Input((2,)), layer])
    layer.set_weights([kernel, bias])

    if lam:
        assert len(layer.losses) == len(model.losses) == 1
        np.testing.assert_allclose(float(layer.losses[0]), penalty, rtol=1e-6)
        np.testing.assert_allclose(float(model.losses[0]), penalty, rtol=1e-6)
    else:
        assert layer.losses == [] and model.losses == []

    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    expected = cross_entropy(x @ kernel + bias, labels) + penalty
    assert cross_entropy(x @ kernel + bias, labels) == pytest.approx(1.0622074, abs=1e-6)  # by hand
    assert model.evaluate(x, labels, verbose=0) == pytest.approx(expected, rel=1e-5)
    history = model.fit(x, labels, batch_size=len(x), epochs=1, verbose=0)
    assert history.history["loss"][0] == pytest.approx(expected, rel=1e-5)


# --- shapes and dtypes --------------------------------------------------------------------


def test_dense_folds_leading_axes():
    x = random_inputs((2, 3, NUM_FEATURES), "float32")
    layer = Dense(NUM_UNITS, bias_initializer="random_normal")
    y = layer(x).numpy()
    assert y.shape == (2, 3, NUM_UNITS)
    flat = layer(x.reshape(6, NUM_FEATURES)).numpy()
    np.testing.assert_allclose(y, flat.reshape(2, 3, NUM_UNITS), rtol=1e-6)
    by_hand = x.reshape(6, -1) @ layer.kernel.numpy() + layer.bias.numpy()
    np.testing.assert_allclose(flat, by_hand, rtol=1e-5, atol=1e-5)
    symbolic = layer(keras.Input((3, NUM_FEATURES)))
    assert tuple(symbolic.shape) == (None, 3, NUM_UNITS)


def test_batch_norm_folds_leading_axes():
    x = random_inputs((2, 3, NUM_FEATURES))
    folded = BatchNorm(momentum=MOMENTUM, dtype="float64")
    flat = BatchNorm(momentum=MOMENTUM, dtype="float64")
    y = folded(x, training=True).numpy()
    y_flat = flat(x.reshape(6, NUM_FEATURES), training=True).numpy()
    assert y.shape == x.shape
    np.testing.assert_allclose(y, y_flat.reshape(x.shape), **EXACT)
    # Statistics over both leading axes: 6 rows per feature.
    rows = x.reshape(6, NUM_FEATURES)
    np.testing.assert_allclose(folded.moving_mean.numpy(), 0.1 * rows.mean(0), **EXACT)
    np.testing.assert_allclose(folded.moving_variance.numpy(), 0.9 + 0.1 * rows.var(0), **EXACT)
    np.testing.assert_allclose(
        folded(x, training=False).numpy(),
        flat(x.reshape(6, NUM_FEATURES), training=False).numpy().reshape(x.shape),
        **EXACT,
    )


@pytest.mark.parametrize("global_floatx", [False, True])
def test_layers_keep_float64_weights_and_outputs(global_floatx):
    if global_floatx:  # the policy is cached at the first layer: set both
        keras.config.set_floatx("float64")
        keras.config.set_dtype_policy("float64")
        kwargs = {}
    else:
        kwargs = {"dtype": "float64"}
    x = random_inputs((BATCH, NUM_FEATURES))
    x[:, 0] += 1e-9 * np.arange(BATCH)  # visible in float64 only
    dense = Dense(NUM_UNITS, lam=0.01, **kwargs)
    bn = BatchNorm(**kwargs)
    s = dense(x)
    y = bn(s, training=True)
    for w in dense.weights + bn.weights:
        assert keras.backend.standardize_dtype(w.dtype) == "float64", w.path
    assert s.dtype == tf.float64 and y.dtype == tf.float64
    assert keras.backend.standardize_dtype(dense.losses[0].dtype) == "float64"
    expected = x @ dense.kernel.numpy() + dense.bias.numpy()
    np.testing.assert_allclose(s.numpy(), expected, rtol=1e-13, atol=1e-13)
    mean, var = expected.mean(0), expected.var(0)
    np.testing.assert_allclose(
        y.numpy(), (expected - mean) / np.sqrt(var + EPSILON), rtol=1e-11, atol=1e-11
    )


# --- training -----------------------------------------------------------------------------


def separable_problem(n=NUM_SAMPLES, d=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    x = rng.standard_normal((n, d)) + 2.0 * (2 * labels[:, None] - 1)
    return x.astype("float32"), labels


def small_net(num_features=4, dtype=None):
    return keras.Sequential(
        [
            keras.Input((num_features,), dtype=dtype),
            Dense(8, use_bias=False, dtype=dtype),
            BatchNorm(momentum=MOMENTUM, dtype=dtype),
            keras.layers.ReLU(dtype=dtype),
            Dense(2, lam=1e-4, dtype=dtype),
        ]
    )


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda: keras.optimizers.SGD(0.1, momentum=0.9),
        lambda: keras.optimizers.Adam(0.05),
        lambda: keras.optimizers.RMSprop(0.01),
    ],
    ids=["sgd_momentum", "adam", "rmsprop"],
)
def test_layers_train_with_keras_optimizers(make_optimizer):
    x, labels = separable_problem()
    model = small_net()
    model.compile(
        optimizer=make_optimizer(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(x, labels, batch_size=16, epochs=5, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.6 * losses[0]
    assert history.history["accuracy"][-1] >= 0.85


def test_layers_work_inside_tf_function():
    x = random_inputs((BATCH, NUM_FEATURES), "float32")
    dense = Dense(NUM_UNITS)
    bn = BatchNorm(momentum=MOMENTUM)
    dense.build(x.shape)
    bn.build((BATCH, NUM_UNITS))
    variables = dense.trainable_weights + bn.trainable_weights

    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(bn(dense(x), training=True) - 1.0))
        return loss, tape.gradient(loss, variables)

    loss_eager, grads_eager = step(x)
    moving_eager = bn.moving_mean.numpy().copy()
    bn.moving_mean.assign(np.zeros(NUM_UNITS))
    bn.moving_variance.assign(np.ones(NUM_UNITS))
    loss_graph, grads_graph = tf.function(step)(tf.constant(x))
    np.testing.assert_allclose(loss_graph.numpy(), loss_eager.numpy(), rtol=1e-6)
    for g, g_eager in zip(grads_graph, grads_eager):
        np.testing.assert_allclose(g.numpy(), g_eager.numpy(), rtol=1e-5, atol=1e-6)
    # The update of the moving statistics runs inside the graph too.
    np.testing.assert_allclose(bn.moving_mean.numpy(), moving_eager, rtol=1e-6)
    assert not np.allclose(moving_eager, 0.0)


def test_one_fit_step_under_one_device_strategy_equals_plain_fit():
    x, labels = separable_problem(n=16)
    plain = small_net()
    initial = plain.get_weights()
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        distributed = small_net()
        distributed.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    distributed.set_weights(initial)
    plain.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    for model in (plain, distributed):
        model.fit(x, labels, batch_size=16, epochs=1, verbose=0)
    for w_plain, w_dist, w_init in zip(plain.weights, distributed.weights, initial):
        assert not np.allclose(w_plain.numpy(), w_init), w_plain.path  # everything moved
        np.testing.assert_allclose(w_dist.numpy(), w_plain.numpy(), rtol=1e-5, atol=1e-6)


def test_stateless_call_returns_the_updated_moving_statistics():
    x = random_inputs((BATCH, 2))
    model = keras.Sequential(
        [keras.Input((2,), dtype="float64"), BatchNorm(momentum=0.9, dtype="float64")]
    )
    bn = model.layers[0]
    _, non_trainable = model.stateless_call(
        [w.value for w in model.trainable_variables],
        [w.value for w in model.non_trainable_variables],
        tf.constant(x),
        training=True,
    )
    np.testing.assert_allclose(non_trainable[0].numpy(), 0.1 * x.mean(0), **EXACT)
    np.testing.assert_allclose(non_trainable[1].numpy(), 0.9 + 0.1 * x.var(0), **EXACT)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), 0.0)  # the layer itself untouched


# --- arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer_cls, kwargs, received",
    [
        (Dense, {"units": 0}, "units=0"),
        (Dense, {"units": -1}, "units=-1"),
        (Dense, {"units": 2.5}, "units=2.5"),
        (Dense, {"units": 3, "lam": -1}, "lam=-1"),
        (BatchNorm, {"momentum": 1.0}, "momentum=1.0"),
        (BatchNorm, {"momentum": -0.1}, "momentum=-0.1"),
        (BatchNorm, {"epsilon": 0}, "epsilon=0"),
        (BatchNorm, {"epsilon": -1e-3}, "epsilon=-0.001"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_the_value(layer_cls, kwargs, received):
    with pytest.raises(ValueError, match=re.escape(f"Received: {received}")):
        layer_cls(**kwargs)


# --- saving -------------------------------------------------------------------------------

LOAD_AND_PREDICT = """
import json, sys
import kbn, keras, numpy as np
result = {}
for path in sys.argv[1:]:
    model = keras.saving.load_model(path + ".keras")
    x = np.load(path + "_x.npy")
    np.save(path + "_loaded.npy", model(x, training=False).numpy())
    result[path] = {
        "types": [type(layer).__name__ for layer in model.layers],
        "dtypes": sorted({w.dtype for w in model.weights}),
        "bn": model.get_layer("bn").get_config()["momentum"],
        "lam": model.get_layer("dense1").get_config()["lam"],
    }
print(json.dumps(result))
"""


@pytest.mark.slow
def test_saved_model_predicts_identically_in_a_fresh_process(tmp_path, run_python):
    expected = {}
    for dtype in ("float32", "float64"):
        keras.config.set_floatx(dtype)  # Keras computes the compiled loss in floatx
        x, labels = separable_problem(n=16)
        inputs = keras.Input((4,), dtype=dtype)
        h = Dense(8, lam=1e-3, use_bias=False, dtype=dtype, name="dense1")(inputs)
        h = BatchNorm(momentum=0.5, dtype=dtype, name="bn")(h)
        h = keras.layers.ReLU(dtype=dtype)(h)
        model = keras.Model(inputs, Dense(2, dtype=dtype, name="dense2")(h))
        model.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(x, labels, batch_size=16, epochs=1, verbose=0)
        bn = model.get_layer("bn")
        assert np.abs(bn.moving_mean.numpy()).min() > 1e-3  # non-trivial statistics
        assert np.abs(bn.moving_variance.numpy() - 1.0).min() > 1e-3
        path = str(tmp_path / dtype)
        model.save(path + ".keras")
        x_test = random_inputs((8, 4), dtype, seed=5)
        np.save(path + "_x.npy", x_test)
        # A direct call: predict() would first cast float64 data to floatx.
        expected[path] = model(x_test, training=False).numpy()
        assert expected[path].dtype == dtype

    code = "import sys; sys.argv[1:] = " + repr(list(expected)) + "\n" + LOAD_AND_PREDICT
    info = json.loads(run_python(code).strip().splitlines()[-1])

    for path, predictions in expected.items():
        dtype = path.rsplit("/", 1)[-1]
        loaded = np.load(path + "_loaded.npy")
        assert loaded.dtype == dtype
        np.testing.assert_array_equal(loaded, predictions)
        assert info[path]["types"] == ["InputLayer", "Dense", "BatchNorm", "ReLU", "Dense"]
        assert info[path]["dtypes"] == [dtype]
        assert info[path]["bn"] == 0.5 and info[path]["lam"] == 1e-3


def test_setting_lam_on_a_built_dense_changes_its_penalty_in_place():
    layer = Dense(4, lam=0.1, kernel_initializer="ones")
    layer(np.zeros((2, 3), "float32"))
    assert float(layer.losses[0]) == pytest.approx(0.1 * 12)
    penalty = tf.function(lambda: layer.losses[0])
    layer.lam = 0.5
    assert layer.lam == 0.5 and layer.get_config()["lam"] == 0.5
    assert float(penalty()) == pytest.approx(0.5 * 12)  # a traced function sees it too


def test_a_dense_built_without_penalty_cannot_be_given_one():
    layer = Dense(4)
    layer(np.zeros((2, 3), "float32"))
    assert layer.losses == []
    with pytest.raises(ValueError, match="built without an L2 penalty"):
        layer.lam = 0.1
    with pytest.raises(ValueError, match="lam >= 0"):
        Dense(4, lam=0.1).lam = -1.0


# --- lambda's old name, `l2` (kbn 0.1) ----------------------------------------------------

DATA = pathlib.Path(__file__).resolve().parent / "data"
# Saved by kbn 0.1.0 (`PYTHONPATH=<kbn 0.1.0 checkout>`), then re-zipped with deflate to keep
# it small (the members are the bytes kbn 0.1.0 wrote):
#     rng = np.random.default_rng(0)
#     x = rng.integers(0, 256, size=(8, 4, 4, 1), dtype=np.uint8)
#     y = rng.integers(0, 3, size=8)
#     keras.utils.set_random_seed(0)
#     model = kbn.model.build_mlp([5], 3, batch_norm=True, lam=0.01, adapt=x, seed=0)
#     model.fit(x, y, epochs=2, batch_size=4, shuffle=False)  # moving statistics move
#     model.save("kbn-0.1.0-tiny.keras")
#     np.savez("kbn-0.1.0-tiny.npz", x=x, logits=model.predict(x))
# Its Dense configs carry lambda as "l2": 0.01.
OLD_MODEL = DATA / "kbn-0.1.0-tiny.keras"


def lambda_warnings(caught):
    """The warnings about lambda's names among `caught`."""
    return [str(w.message) for w in caught if "lam" in str(w.message) or "l2" in str(w.message)]


def test_dense_takes_the_old_l2_argument_and_attribute_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match=r"Dense's l2= is now lam=; use lam="):
        layer = Dense(4, l2=0.1, kernel_initializer="ones")
    assert layer.lam == 0.1 and "l2" not in layer.get_config() and layer.get_config()["lam"] == 0.1
    layer(np.zeros((2, 3), "float32"))
    assert float(layer.losses[0]) == pytest.approx(0.1 * 12)
    with pytest.warns(DeprecationWarning, match=r"Dense.l2 is now Dense.lam; use lam"):
        assert layer.l2 == 0.1
    with pytest.warns(DeprecationWarning, match=r"Dense.l2 is now Dense.lam; use lam"):
        layer.l2 = 0.5
    assert layer.lam == 0.5 and layer.penalty.lam == 0.5
    assert float(layer.losses[0]) == pytest.approx(0.5 * 12)
    with pytest.warns(DeprecationWarning, match=r"L2Penalty's l2= is now lam=; use lam="):
        assert dense.L2Penalty(l2=0.2).lam == 0.2


def test_configs_saved_by_kbn_0_1_load_silently_with_the_same_lambda():
    old = {**Dense(4, lam=0.01, name="d").get_config()}
    old["l2"] = old.pop("lam")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layer = Dense.from_config(old)
        penalty = keras.regularizers.deserialize(
            {
                "module": "kbn.layers",
                "class_name": "L2Penalty",
                "config": {"l2": 0.3},
                "registered_name": "kbn>L2Penalty",
            }
        )
    assert lambda_warnings(caught) == []
    assert layer.lam == 0.01 and layer.get_config() == Dense(4, lam=0.01, name="d").get_config()
    assert isinstance(penalty, dense.L2Penalty) and penalty.lam == 0.3
    assert penalty.get_config() == {"lam": 0.3}
    assert dense.L2Penalty.from_config(penalty.get_config()).lam == 0.3


def test_a_model_saved_by_kbn_0_1_loads_silently_and_predicts_the_same(tmp_path):
    from kbn.inference.evaluate import load_model

    saved = np.load(DATA / "kbn-0.1.0-tiny.npz")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model(str(OLD_MODEL))
        logits = model.predict(saved["x"], verbose=0)
        model.save(tmp_path / "resaved.keras")  # saved again, with this release's key
        resaved = load_model(str(tmp_path / "resaved.keras"))
    assert lambda_warnings(caught) == []
    np.testing.assert_allclose(logits, saved["logits"], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(resaved.predict(saved["x"], verbose=0), logits)
    assert "l2" not in resaved.get_layer("dense1").get_config()
    layers = [layer for layer in model.layers if isinstance(layer, Dense)]
    assert [layer.lam for layer in layers] == [0.01, 0.01]
    assert [layer.get_config()["lam"] for layer in layers] == [0.01, 0.01]
    # The penalties are in force: the cost's L2 term is 0.01 * sum(W ** 2) over the kernels.
    expected = sum(0.01 * np.sum(layer.kernel.numpy().astype("float64") ** 2) for layer in layers)
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)
