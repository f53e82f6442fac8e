"""Tests for kbn.training.loop: the batches cover every example once per epoch in a new order each
epoch, the same for a resumed run and split evenly among replicas, a model splits after its fixed
input stages only where that is safe, and the compiled loops give Keras's numbers either way."""

import keras
import numpy as np
import pytest

from kbn.nn.builder import build_mlp
from kbn.training.loop import TrainingLoop, Validation
from kbn.training.order import EpochOrder
from kbn.training.stages import split_fixed_stages

N, BATCH = 23, 5  # 4 full batches, then a batch of 3


def epoch_batches(order_of, epoch, replica=0, replicas=1):
    """The index batches of one epoch, as NumPy arrays."""
    order = order_of.order(epoch)
    return [order_of.batch(order, b, replica, replicas).numpy() for b in range(order_of.steps)]


def test_each_epoch_is_full_batches_then_the_short_batch_covering_every_example_once():
    order_of = EpochOrder(N, BATCH, seed=0)
    assert order_of.steps == 5
    for epoch in range(2):
        batches = epoch_batches(order_of, epoch)
        assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
        assert sorted(np.concatenate(batches)) == list(range(N))


def test_the_order_is_new_each_epoch_and_the_same_for_the_same_seed_and_epoch():
    first, second = (np.concatenate(epoch_batches(EpochOrder(N, BATCH, seed=0), e)) for e in (0, 1))
    again = np.concatenate(epoch_batches(EpochOrder(N, BATCH, seed=0), 0))
    other = np.concatenate(epoch_batches(EpochOrder(N, BATCH, seed=1), 0))
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, again)  # a resumed run's epoch is the same epoch
    assert not np.array_equal(first, other)


def test_replicas_split_each_batch_into_its_parts_in_order():
    order_of = EpochOrder(N, BATCH, seed=0)
    whole = epoch_batches(order_of, 0)
    parts = [epoch_batches(order_of, 0, r, 2) for r in range(2)]
    for b, batch in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([parts[0][b], parts[1][b]]), batch)
        assert abs(len(parts[0][b]) - len(parts[1][b])) <= 1


# --- fixed input stages -------------------------------------------------------------------


def pixels(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 4, 4, 3)).astype("uint8"), rng.integers(0, 3, n)


def test_build_mlp_splits_after_flatten_and_centering_into_models_sharing_its_layers():
    x, _ = pixels(12)
    model = build_mlp([8], 3, adapt=x, seed=0)
    stages, trunk = split_fixed_stages(model)
    assert [layer.name for layer in stages.layers] == ["pixels", "flatten", "center"]
    assert [layer.name for layer in trunk.layers][1:] == [
        "dense1",
        "batch_norm1",
        "relu1",
        "dense2",
    ]
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
    np.testing.assert_allclose(TrainingLoop(model).inputs(x), expected, atol=1e-6)
    augmented = build_mlp([8], 3, adapt=x, flip=True, seed=0)
    np.testing.assert_array_equal(TrainingLoop(augmented).inputs(x), x)


def test_a_read_only_splits_stage_output_is_kept_while_the_stages_weights_stay():
    x, _ = pixels(10)
    model = build_mlp([8], 3, adapt=x, seed=0)
    loop = TrainingLoop(model)
    frozen = x.view()
    frozen.flags.writeable = False
    first = loop.inputs(frozen)
    assert loop.inputs(frozen) is first  # the next run skips the stages
    assert loop.inputs(x) is not loop.inputs(x)  # a writable array may change between runs
    np.testing.assert_array_equal(loop.inputs(x), first)
    centering = next(layer for layer in model.layers if layer.weights)
    mean = centering.weights[0]
    mean.assign(mean.numpy() + 1.0)  # the stages changed: computed again
    again = loop.inputs(frozen)
    assert again is not first
    np.testing.assert_allclose(again, first.numpy() - 1.0, atol=1e-6)


# --- the compiled loops give Keras's numbers ----------------------------------------------


@pytest.mark.parametrize("flip", [False, True], ids=["split", "whole model"])
def test_compiled_evaluation_gives_keras_evaluate_numbers(flip):
    x, y = pixels(57)
    model = build_mlp([8], 3, adapt=x, lam=0.01, flip=flip, seed=0)
    loss, accuracy = model.evaluate(x, y, batch_size=10, verbose=0)
    loops = TrainingLoop(model)
    assert (loops.stages is None) == flip
    ours = loops.evaluate(loops.inputs(x), y, 10)
    assert ours["loss"] == pytest.approx(loss, rel=1e-6)
    assert ours["accuracy"] == pytest.approx(accuracy, abs=1e-7)


@pytest.mark.parametrize("flip", [False, True], ids=["split", "whole model"])
def test_a_compiled_chunk_takes_the_same_steps_as_keras_train_step(flip):
    x, y = pixels(20, seed=1)
    ours, reference = (build_mlp([8], 3, adapt=x, lam=0.01, flip=flip, seed=0) for _ in range(2))
    for model in (ours, reference):
        model.compile(
            optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss=model.loss, metrics=["accuracy"]
        )
    order_of = EpochOrder(20, 5, seed=3)
    chunk = np.stack(epoch_batches(order_of, 0))  # (4, 5): the epoch's batches
    loops = TrainingLoop(ours)
    run = loops.train_function(loops.inputs(x), y, order_of, first_epoch=0, steps_per_execution=4)
    logs = run(None)
    steps = [reference.train_on_batch(x[idx], y[idx], return_dict=True) for idx in chunk]
    for a, b in zip(ours.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert ours.optimizer.iterations.numpy() == 4
    # The logs are the means over the chunk's equal batches; train_on_batch gives each one's.
    for name in ("loss", "accuracy"):
        assert float(logs[name]) == pytest.approx(np.mean([s[name] for s in steps]), rel=1e-5)


def test_the_train_function_validates_after_the_epochs_it_is_given_and_no_other():
    x, y = pixels(20, seed=2)
    model = build_mlp([8], 3, adapt=x, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=model.loss, metrics=["accuracy"])
    loops = TrainingLoop(model)
    x_in = loops.inputs(x)
    validation = Validation(x_in[:10], y[:10], epochs=frozenset({2, 3}), batch_size=4)
    # Two calls per epoch (5 mini-batches of 4, 3 per call), from epoch 1 (a resumed run).
    run = loops.train_function(
        x_in,
        y,
        EpochOrder(20, 4, seed=0),
        first_epoch=1,
        steps_per_execution=3,
        validation=validation,
    )
    logs = [run(None) for _ in range(4)]  # epochs 2 and 3 (1-based), two calls each
    assert [sorted(k for k in entry if k.startswith("val_")) for entry in logs] == [
        [],
        ["val_accuracy", "val_loss"],
        [],
        ["val_accuracy", "val_loss"],
    ]
    expected = loops.evaluate(x_in[:10], y[:10], 4)
    assert logs[3]["val_loss"] == pytest.approx(expected["loss"], rel=1e-6)
