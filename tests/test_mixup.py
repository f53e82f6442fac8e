"""Tests for MixUp (kbn.training.mixup): the weight's law, the mixed batch and loss, and
training with it through `kbn.train`, with fixed stages or on raw inputs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kbn
import kbn.training.loop
from kbn import Dataset, KbnError, Split, build_mlp
from kbn.nn.builder import compile_model
from kbn.training import TrainConfig, train
from kbn.training.mixup import mix, mixed_loss, mixup_weight
from tests.synthetic import make_images

NUM_CLASSES = 3


def dataset():
    return Dataset(
        name="synthetic",
        train=Split(*make_images(240, seed=0, num_classes=NUM_CLASSES)),
        val=Split(*make_images(60, seed=1, num_classes=NUM_CLASSES)),
        test=Split(*make_images(60, seed=2, num_classes=NUM_CLASSES)),
        class_names=("a", "b", "c"),
    )


DATA = dataset()


def config(tmp_path, name, **overrides):
    settings = dict(
        eta=0.05,
        epochs=3,
        batch_size=32,
        seed=0,
        logdir=str(tmp_path),
        verbose=0,
        plot_curves=False,
    )
    return TrainConfig(**{**settings, **overrides, "run_name": name})


def weights(alpha, n, seed=0, epoch=0):
    return np.array([float(mixup_weight(alpha, seed, epoch, b)) for b in range(n)])


def test_the_mixing_weight_follows_beta_alpha_alpha():
    for alpha in (0.2, 1.0):
        w = weights(alpha, 2000)
        assert np.all((w >= 0) & (w <= 1))
        # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)); 2000 draws hold both to a few %.
        assert w.mean() == pytest.approx(0.5, abs=0.03)
        assert w.var() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.1)

    # Small alpha mixes little: twice as many weights within 0.1 of 0 or 1 as uniform ones.
    def near_the_ends(w):
        return np.mean(np.minimum(w, 1 - w) < 0.1)

    assert near_the_ends(weights(1.0, 2000)) == pytest.approx(0.2, abs=0.03)
    assert near_the_ends(weights(0.2, 2000)) > 0.35


def test_the_mixing_weight_is_a_function_of_seed_epoch_and_batch():
    assert np.array_equal(weights(0.4, 5), weights(0.4, 5))
    assert len(set(weights(0.4, 5))) == 5
    assert not np.array_equal(weights(0.4, 5, seed=1), weights(0.4, 5))
    assert not np.array_equal(weights(0.4, 5, epoch=1), weights(0.4, 5))


def test_mix_pairs_each_example_with_its_mirror_in_the_batch():
    x = np.arange(12, dtype=np.uint8).reshape(3, 4)
    mixed = mix(tf.constant(x), tf.constant(0.25))
    assert mixed.dtype == tf.float32
    np.testing.assert_allclose(mixed, 0.25 * x + 0.75 * x[::-1])


def test_the_mixed_loss_is_the_loss_against_the_mixed_smoothed_labels_with_the_penalty_once():
    model = build_mlp([8], NUM_CLASSES, adapt=DATA.train.x, lam=0.01, seed=0)
    epsilon, w = 0.1, 0.3
    compile_model(model, keras.optimizers.SGD(0.1), label_smoothing=epsilon)
    x, y = DATA.train.x[:16], DATA.train.y[:16]
    y_pred = model(x)
    loss = float(mixed_loss(model, x, tf.constant(y), y_pred, tf.constant(w)))
    one_hot = np.eye(NUM_CLASSES)
    target = w * one_hot[y] + (1 - w) * one_hot[y[::-1]]
    target = (1 - epsilon) * target + epsilon / NUM_CLASSES
    log_p = tf.nn.log_softmax(y_pred).numpy()
    expected = -np.mean(np.sum(target * log_p, axis=1)) + float(sum(model.losses))
    assert float(sum(model.losses)) > 0.01  # the penalty is there to be counted
    assert loss == pytest.approx(expected, rel=1e-5)


def test_training_with_mixup_is_reproducible_and_differs_from_training_without(tmp_path):
    def run(name, **overrides):
        model = build_mlp([16], NUM_CLASSES, adapt=DATA.train.x, seed=0)
        return train(model, DATA, config(tmp_path, name, **overrides)).history["loss"]

    mixed = run("mixed", mixup=0.4)
    assert run("again", mixup=0.4) == mixed
    assert not np.allclose(run("plain"), mixed, rtol=1e-3)
    assert np.all(np.isfinite(mixed))


def test_mixup_on_raw_inputs_trains_as_after_the_fixed_stages(tmp_path, monkeypatch):
    # Centring is affine and the weights sum to 1: mixing the pixels then centring them
    # is centring then mixing, so the model without fixed stages learns the same numbers.
    def run(name):
        model = build_mlp([16], NUM_CLASSES, adapt=DATA.train.x, seed=0)
        return train(model, DATA, config(tmp_path, name, mixup=0.4)).history

    split = run("split")
    monkeypatch.setattr(kbn.training.loop, "split_fixed_stages", lambda model: None)
    whole = run("whole")
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(split[key], whole[key], rtol=1e-4, err_msg=key)


def test_mixup_refuses_a_model_with_its_own_train_step(tmp_path):
    class Custom(keras.Model):
        def train_step(self, data):
            return super().train_step(data)

    inputs = keras.Input((4, 4, 1))
    outputs = keras.layers.Dense(NUM_CLASSES)(keras.layers.Flatten()(inputs))
    model = Custom(inputs, outputs)
    with pytest.raises(KbnError, match="mixup cannot change Custom's own train_step"):
        train(model, DATA, config(tmp_path, "custom", mixup=0.2))


def test_mixup_must_be_zero_or_a_positive_alpha():
    with pytest.raises(KbnError, match="mixup must be 0 .none. or an alpha > 0, got -0.1"):
        TrainConfig(mixup=-0.1).check()
