"""Tests for kbn.nn.precision and mixed precision through kbn: the layers under each Keras dtype
policy (16-bit compute, float32 variables, float32 islands), a training step in bfloat16 and
float16 (loss scaling), saved models in a fresh process, the detection of native bfloat16 and
the cifar10-mlp preset's choice, and `kbn train --precision`."""

import contextlib
import io
import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import synthetic
import tensorflow as tf

import kbn
from kbn.cli import main
from kbn.data import Dataset, Split
from kbn.nn import BatchNorm, Dense, precision
from kbn.nn.builder import build_mlp
from kbn.training import LoopCache, TrainConfig, train
from kbn.training.stages import split_fixed_stages

MIXED = ("mixed_bfloat16", "mixed_float16")
COMPUTE = {"mixed_bfloat16": tf.bfloat16, "mixed_float16": tf.float16}
# bfloat16 keeps 8 bits of mantissa (relative rounding 2^-8 = 0.4%), float16 11 bits; a
# gradient summed over a batch of 32 in 16-bit matmuls lands within a few percent of float32's.
GRADIENT_RTOL = {"mixed_bfloat16": 0.05, "mixed_float16": 0.01}
N, D, M = 32, 24, 16
NUM_CLASSES = 3


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(1.0, 2.0, (N, D)).astype("float32"), rng.normal(size=(N, M)).astype("float32")


def dataset(n_train=96, n_val=24):
    x, y = synthetic.make_images(n_train + n_val, seed=0, num_classes=NUM_CLASSES)
    return Dataset(
        name="synthetic",
        train=Split(x[:n_train], y[:n_train]),
        val=Split(x[n_train:], y[n_train:]),
        test=None,
        class_names=("a", "b", "c"),
    )


DATA = dataset()


def layer_gradients(layer, x, upstream, training=True):
    """(y, [dL/dx, dL/dvariable...]) of L = sum(y * upstream), as float32 NumPy."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
    grads = tape.gradient(loss, [x, *layer.trainable_variables])
    return y, [keras.ops.convert_to_numpy(g) for g in grads]


@pytest.mark.parametrize("policy", MIXED)
@pytest.mark.parametrize(
    "make",
    [lambda dtype: Dense(M, dtype=dtype), lambda dtype: BatchNorm(dtype=dtype)],
    ids=["Dense", "BatchNorm"],
)
def test_layers_compute_in_16_bits_keep_float32_variables_and_float32_like_gradients(make, policy):
    x, upstream = inputs()
    if isinstance(make("float32"), BatchNorm):
        x, upstream = x[:, :M], upstream
    reference = make("float32")
    layer = make(keras.DTypePolicy(policy))
    reference.build(x.shape)
    layer.build(x.shape)
    layer.set_weights(reference.get_weights())

    y, grads = layer_gradients(layer, x, upstream)
    y32, grads32 = layer_gradients(reference, x, upstream)

    assert y.dtype == COMPUTE[policy]
    assert all(v.dtype == "float32" for v in layer.weights)
    assert all(g.dtype == np.float32 for g in grads)  # dx: the input's dtype; variables: theirs
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(tf.cast(y, tf.float32)), y32, rtol=0.05, atol=0.05
    )
    for g, g32 in zip(grads, grads32):
        assert np.all(np.isfinite(g))
        assert np.linalg.norm(g - g32) <= GRADIENT_RTOL[policy] * np.linalg.norm(g32)


def test_dense_backward_returns_gradients_in_its_inputs_dtypes():
    x, upstream = inputs()
    layer = Dense(M, dtype=keras.DTypePolicy("mixed_bfloat16"))
    layer.build(x.shape)
    x16, w16, b16 = (
        tf.cast(x, tf.bfloat16),
        tf.cast(layer.kernel, tf.bfloat16),
        tf.cast(layer.bias, tf.bfloat16),
    )
    with tf.GradientTape() as tape:
        tape.watch([x16, w16, b16])
        s = kbn.nn.dense._dense_op(x16, w16, b16)
        loss = tf.reduce_sum(tf.cast(s, tf.float32) * upstream)
    assert [g.dtype for g in tape.gradient(loss, [x16, w16, b16])] == [tf.bfloat16] * 3


@pytest.mark.parametrize("policy", MIXED)
def test_batch_norm_keeps_its_statistics_and_moving_averages_in_float32(policy):
    # Inputs as the layer receives them, 16-bit numbers, with an offset: summed in 16 bits
    # their mean would be off by a few 1e-3 (bfloat16's spacing at 2560 is 16), in float32
    # it is exact to float32's rounding.
    rng = np.random.default_rng(0)
    x = tf.cast(10.0 + rng.normal(size=(256, 8)), COMPUTE[policy])
    exact = keras.ops.convert_to_numpy(tf.cast(x, tf.float64))
    layer = BatchNorm(momentum=0.0, dtype=keras.DTypePolicy(policy))  # moving = the last batch's
    y = layer(x, training=True)
    assert layer.moving_mean.dtype == layer.moving_variance.dtype == "float32"
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer.moving_mean), exact.mean(axis=0), rtol=1e-6
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer.moving_variance), exact.var(axis=0), rtol=1e-5
    )
    # The normalised output, from float32 statistics, has mean 0 and variance 1 per feature.
    y = keras.ops.convert_to_numpy(tf.cast(y, tf.float32))
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=0.02)
    np.testing.assert_allclose(y.var(axis=0), 1.0, atol=0.03)


def test_batch_norm_backward_sums_in_float32():
    # dx = inv_std * (g - mean(g) - x_hat * mean(g * x_hat)): with a gradient g of 4 give or
    # take 0.1, dx is a small difference beside large sums, which bfloat16 (spacing 8 at
    # 1024) would drown. Inputs and gradients are bfloat16 numbers, as in a mixed net, so
    # the float32 layer on the same numbers is the reference.
    rng = np.random.default_rng(1)
    as_bfloat16 = lambda a: keras.ops.convert_to_numpy(tf.cast(tf.cast(a, tf.bfloat16), tf.float32))
    x = as_bfloat16(rng.normal(size=(256, 8)))
    upstream = as_bfloat16(4.0 + 0.1 * rng.normal(size=(256, 8)))
    reference, layer = BatchNorm(), BatchNorm(dtype=keras.DTypePolicy("mixed_bfloat16"))
    _, (dx32, *_) = layer_gradients(reference, x, upstream)
    _, (dx, *_) = layer_gradients(layer, x, upstream)
    assert np.linalg.norm(dx - dx32) <= 0.01 * np.linalg.norm(dx32)


@pytest.mark.parametrize("policy", MIXED)
def test_a_mixed_model_keeps_float32_inputs_logits_loss_and_penalty(policy):
    model = build_mlp([8, 8], NUM_CLASSES, adapt=DATA.train.x, lam=1e-3, precision=policy, seed=0)
    assert precision.model_precision(model) == policy
    assert split_fixed_stages(model) is not None  # kbn's loop still centres the data once
    assert model.get_layer("center").compute_dtype == "float32"
    assert model.get_layer("dense1").compute_dtype == COMPUTE[policy].name
    assert model.get_layer("batch_norm2").compute_dtype == COMPUTE[policy].name
    assert all(v.dtype == "float32" for v in model.weights)
    x = tf.constant(DATA.train.x[:16], tf.float32)
    logits = model(x, training=True)
    loss = model.compute_loss(x=x, y=DATA.train.y[:16], y_pred=logits, training=True)
    assert logits.dtype == loss.dtype == tf.float32
    assert [penalty.dtype for penalty in model.losses] == [tf.float32] * 3


def test_a_precision_cannot_go_with_float64_nor_be_unknown():
    with pytest.raises(kbn.KbnError, match="dtype='float64'"):
        build_mlp([8], NUM_CLASSES, input_shape=(4,), dtype="float64", precision="mixed_bfloat16")
    with pytest.raises(kbn.KbnError, match="precision must be one of"):
        build_mlp([8], NUM_CLASSES, input_shape=(4,), precision="bfloat16")


@pytest.mark.parametrize("policy", MIXED)
def test_the_gradient_checker_checks_a_mixed_model_in_float64(policy):
    model = build_mlp([6], NUM_CLASSES, adapt=DATA.train.x[:20], lam=1e-2, seed=0, precision=policy)
    checks = kbn.check_gradients(model, DATA.train.x[:10], DATA.train.y[:10])
    assert max(c.rel_error for c in checks) < 1e-6
    assert precision.model_precision(model) == policy  # the model itself is left as it was


@pytest.mark.parametrize("policy", MIXED)
def test_a_training_run_in_16_bits_learns_and_float16_scales_its_loss(tmp_path, policy):
    model = build_mlp([16], NUM_CLASSES, adapt=DATA.train.x, precision=policy, seed=0)
    before = [keras.ops.convert_to_numpy(v).copy() for v in model.trainable_variables]
    config = TrainConfig(
        eta=0.05, epochs=3, batch_size=16, logdir=str(tmp_path), verbose=0, precision=policy
    )
    loops = LoopCache()
    result = train(model, DATA, config, loops=loops)
    scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (policy == "mixed_float16")
    assert loops.get(model).stages is not None
    assert not result.diverged and np.all(np.isfinite(result.history["loss"]))
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert all(v.dtype == "float32" for v in model.weights)
    after = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    assert all(np.all(np.isfinite(a)) and not np.array_equal(a, b) for a, b in zip(after, before))
    if scaled:  # the dynamic scale started at 2^15 and stays a finite power of two
        scale = float(keras.ops.convert_to_numpy(model.optimizer.dynamic_scale))
        assert np.isfinite(scale) and scale >= 1 and np.log2(scale) == int(np.log2(scale))


def test_the_loss_scale_skips_a_step_with_non_finite_gradients():
    model = build_mlp([8], NUM_CLASSES, adapt=DATA.train.x, precision="mixed_float16", seed=0)
    optimizer = keras.optimizers.LossScaleOptimizer(kbn.optim.sgd.SGD(0.1, momentum=0.9))
    variables = model.trainable_variables
    optimizer.build(variables)
    before = [keras.ops.convert_to_numpy(v).copy() for v in variables]
    scale = float(keras.ops.convert_to_numpy(optimizer.dynamic_scale))
    optimizer.apply([tf.fill(v.shape, np.inf) for v in variables], variables)
    assert all(np.array_equal(keras.ops.convert_to_numpy(v), b) for v, b in zip(variables, before))
    assert float(keras.ops.convert_to_numpy(optimizer.dynamic_scale)) == scale / 2


def test_a_model_and_config_that_disagree_on_precision_is_a_user_error(tmp_path):
    model = build_mlp([8], NUM_CLASSES, adapt=DATA.train.x, precision="mixed_bfloat16", seed=0)
    with pytest.raises(kbn.KbnError, match="computes in mixed_bfloat16"):
        train(model, DATA, TrainConfig(epochs=1, logdir=str(tmp_path), verbose=0))


PREDICT_IN_A_FRESH_PROCESS = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras
    import kbn  # registers kbn's layers

    model = keras.saving.load_model(sys.argv[1])
    policies = sorted({layer.dtype_policy.name for layer in model.layers})
    np.save(sys.argv[3], keras.ops.convert_to_numpy(model(np.load(sys.argv[2]), training=False)))
    print(",".join(policies))
    """
)


@pytest.mark.slow
def test_a_saved_bfloat16_model_predicts_the_same_in_a_fresh_process(tmp_path):
    model = build_mlp([16], NUM_CLASSES, adapt=DATA.train.x, precision="mixed_bfloat16", seed=0)
    train(
        model,
        DATA,
        TrainConfig(
            eta=0.05,
            epochs=2,
            batch_size=16,
            logdir=str(tmp_path),
            verbose=0,
            precision="mixed_bfloat16",
            save=str(tmp_path / "m.keras"),
        ),
    )
    x = DATA.val.x.astype("float32")
    np.save(tmp_path / "x.npy", x)
    fresh = subprocess.run(
        [
            sys.executable,
            "-c",
            PREDICT_IN_A_FRESH_PROCESS,
            str(tmp_path / "m.keras"),
            str(tmp_path / "x.npy"),
            str(tmp_path / "y.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert "mixed_bfloat16" in fresh.stdout.split()[-1].split(",")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)


def test_bfloat16_is_detected_from_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(precision, "gpu_capabilities", lambda: [])
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"sse2", "avx2", "avx512f", "avx512_bf16"})
    assert precision.supported("mixed_bfloat16") and precision.best_available() == "mixed_bfloat16"
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"sse2", "amx_tile", "amx_bf16"})
    assert precision.best_available() == "mixed_bfloat16"


def test_without_native_bfloat16_the_best_is_float32(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"sse2", "avx2", "avx512f"})
    monkeypatch.setattr(precision, "gpu_capabilities", lambda: [(7, 5)])  # Turing: float16 only
    assert not precision.supported("mixed_bfloat16") and precision.best_available() == "float32"
    assert precision.supported("mixed_float16") and precision.supported("float32")
    monkeypatch.setattr(precision, "gpu_capabilities", lambda: [(8, 0)])  # Ampere
    assert precision.best_available() == "mixed_bfloat16"


def test_cpu_flags_are_read_from_proc_cpuinfo_and_empty_without_it(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nflags\t\t: fpu sse2 avx512_bf16 amx_bf16\n\nprocessor\t: 1\n"
    )
    assert precision.cpu_flags(cpuinfo) == {"fpu", "sse2", "avx512_bf16", "amx_bf16"}
    assert precision.cpu_flags(tmp_path / "missing") == set()


def run_main(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def npz(tmp_path):
    x, y = synthetic.make_images(160, seed=0, num_classes=NUM_CLASSES)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x, y_train=y)
    return path


def test_kbn_train_precision_builds_and_trains_a_mixed_model(tmp_path, npz):
    status, out, err = run_main(
        [
            "train",
            "--data",
            f"npz:{npz}",
            "--val-size",
            "40",
            "--hidden",
            "8",
            "--epochs",
            "2",
            "--precision",
            "mixed_bfloat16",
            "--logdir",
            str(tmp_path),
            "--run-name",
            "r",
            "--save",
            str(tmp_path / "m.keras"),
            "--json",
        ]
    )
    assert status == 0, err
    figures = json.loads(out.strip().splitlines()[-1])
    assert np.isfinite(figures["train_loss"])
    saved = keras.saving.load_model(tmp_path / "m.keras")
    assert precision.model_precision(saved) == "mixed_bfloat16"
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["config"]["precision"] == "mixed_bfloat16"


@pytest.mark.parametrize(
    "flags, detected, expected",
    [
        ([], "mixed_bfloat16", "mixed_bfloat16"),
        ([], "float32", "float32"),
        (["--precision", "float32"], "mixed_bfloat16", "float32"),
    ],
)
def test_the_cifar10_mlp_preset_picks_the_detected_precision_unless_told(
    tmp_path, npz, monkeypatch, flags, detected, expected
):
    monkeypatch.setattr(precision, "best_available", lambda: detected)
    built = {}

    def record(model, dataset, config):
        built.update(model=precision.model_precision(model), config=config.precision)
        raise KeyboardInterrupt  # the settings are all this test needs: stop before training

    monkeypatch.setattr(kbn.training.trainer, "train", record)
    status, out, err = run_main(
        [
            "train",
            "--data",
            f"npz:{npz}",
            "--preset",
            "cifar10-mlp",
            "--pca",
            "0",  # these images have fewer values than the preset's components
            "--val-size",
            "40",
            "--logdir",
            str(tmp_path),
            *flags,
        ]
    )
    assert status == 130 and built == {"model": expected, "config": expected}
    assert (f"precision: {expected}" in out) == (
        not flags
    )  # the notice: one line, only when detected
