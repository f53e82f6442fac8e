"""Tests for kbn.loop: the chunks cover every example once per epoch in a new order each
epoch, a resumed stream starts at its epoch, a model splits after its fixed input stages
only where that is safe, and the compiled loops give Keras's numbers either way."""


import keras
import numpy as np
import pytest

from kbn.loop import EpochChunks, Loops, split_fixed_stages
from kbn.model import build_mlp

N, BATCH, STEPS = 23, 5, 2  # 4 full batches in 2 chunks, then a batch of 3


def epochs_of(chunks, count):
    """The index chunks of the first `count` epochs, one list per epoch."""
    stream = iter(chunks.dataset())
    return [[next(stream).numpy() for _ in range(chunks.per_epoch)] for _ in range(count)]


def test_each_epoch_is_full_chunks_of_batches_then_the_short_batch():
    chunks = EpochChunks(N, BATCH, STEPS, seed=0)
    assert chunks.per_epoch == 3
    for epoch in epochs_of(chunks, 2):
        assert [c.shape for c in epoch] == [(2, 5), (2, 5), (1, 3)]
        assert sorted(np.concatenate([c.ravel() for c in epoch])) == list(range(N))


def test_the_order_is_new_each_epoch_and_the_same_for_the_same_seed():
    first, second = epochs_of(EpochChunks(N, BATCH, STEPS, seed=0), 2)
    again = epochs_of(EpochChunks(N, BATCH, STEPS, seed=0), 1)[0]
    other = epochs_of(EpochChunks(N, BATCH, STEPS, seed=1), 1)[0]
    flat = [np.concatenate([c.ravel() for c in e]) for e in (first, second, again, other)]
    assert not np.array_equal(flat[0], flat[1])
    np.testing.assert_array_equal(flat[0], flat[2])
    assert not np.array_equal(flat[0], flat[3])


def test_a_stream_started_at_a_later_epoch_continues_the_uninterrupted_one():
    whole = epochs_of(EpochChunks(N, BATCH, STEPS, seed=0), 3)
    resumed = EpochChunks(N, BATCH, STEPS, seed=0)
    resumed.first_epoch.assign(2)
    for a, b in zip(epochs_of(resumed, 1)[0], whole[2]):
        np.testing.assert_array_equal(a, b)


# --- fixed input stages -------------------------------------------------------------------


def pixels(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 4, 4, 3)).astype("uint8"), rng.integers(0, 3, n)


def test_build_mlp_splits_after_flatten_and_centering_into_models_sharing_its_layers():
    x, _ = pixels(12)
    model = build_mlp([8], 3, adapt=x, seed=0)
    stages, trunk = split_fixed_stages(model)
    assert [layer.name for layer in stages.layers] == ["pixels", "flatten", "center"]
    assert [layer.name for layer in trunk.layers][1:] == ["dense1", "batch_norm1", "relu1", "dense2"]
    assert trunk.get_layer("dense1") is model.get_layer("dense1")
    np.testing.assert_allclose(trunk(stages(x)), model(x), rtol=1e-6)


def test_a_model_starting_with_augmentation_or_using_its_input_later_is_not_split():
    x, _ = pixels(12)
    assert split_fixed_stages(build_mlp([8], 3, adapt=x, flip=True, seed=0)) is None
    inputs = keras.Input((6,))
    flat = keras.layers.Rescaling(0.5)(inputs)
    skip = keras.layers.Concatenate()([keras.layers.Dense(3)(flat), inputs])
    assert split_fixed_stages(keras.Model(inputs, keras.layers.Dense(2)(skip))) is None


def test_a_model_with_its_own_train_step_is_not_split():
    class Custom(keras.Model):
        def train_step(self, data):
            return super().train_step(data)

    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(2)(keras.layers.Rescaling(0.5)(inputs))
    assert split_fixed_stages(keras.Model(inputs, outputs)) is not None
    assert split_fixed_stages(Custom(inputs, outputs)) is None


def test_inputs_go_through_the_fixed_stages_or_stay_raw():
    x, _ = pixels(10)
    model = build_mlp([8], 3, adapt=x, seed=0)
    expected = (x.reshape(10, -1) / 255 - (x.reshape(10, -1) / 255).mean(axis=0)).astype("float32")
    np.testing.assert_allclose(Loops(model).inputs(x), expected, atol=1e-6)
    augmented = build_mlp([8], 3, adapt=x, flip=True, seed=0)
    np.testing.assert_array_equal(Loops(augmented).inputs(x), x)


# --- the compiled loops give Keras's numbers ----------------------------------------------


@pytest.mark.parametrize("flip", [False, True], ids=["split", "whole model"])
def test_compiled_evaluation_gives_keras_evaluate_numbers(flip):
    x, y = pixels(57)
    model = build_mlp([8], 3, adapt=x, l2=0.01, flip=flip, seed=0)
    loss, accuracy = model.evaluate(x, y, batch_size=10, verbose=0)
    loops = Loops(model)
    assert (loops.stages is None) == flip
    ours = loops.evaluate(loops.inputs(x), y, 10)
    assert ours["loss"] == pytest.approx(loss, rel=1e-6)
    assert ours["accuracy"] == pytest.approx(accuracy, abs=1e-7)


@pytest.mark.parametrize("flip", [False, True], ids=["split", "whole model"])
def test_a_compiled_chunk_takes_the_same_steps_as_keras_train_step(flip):
    x, y = pixels(20, seed=1)
    ours, reference = (build_mlp([8], 3, adapt=x, l2=0.01, flip=flip, seed=0) for _ in range(2))
    for model in (ours, reference):
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss=model.loss,
                      metrics=["accuracy"])
    chunk = np.arange(20).reshape(4, 5)
    loops = Loops(ours)
    run = loops.train_function(loops.inputs(x), y)
    logs = run(iter([chunk]))
    steps = [reference.train_on_batch(x[idx], y[idx], return_dict=True) for idx in chunk]
    for a, b in zip(ours.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert ours.optimizer.iterations.numpy() == 4
    # The logs are the means over the chunk's equal batches; train_on_batch gives each one's.
    for name in ("loss", "accuracy"):
        assert float(logs[name]) == pytest.approx(np.mean([s[name] for s in steps]), rel=1e-5)
