"""Tests for kbn.loop: the chunks cover every example once per epoch in a new order each
epoch, a resumed stream starts at its epoch, and the compiled loops give Keras's numbers."""


import keras
import numpy as np
import pytest

from kbn.loop import EpochChunks, compiled_evaluation, compiled_loop, evaluate, train_function
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


def test_compiled_evaluation_gives_keras_evaluate_numbers():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (57, 6)).astype("uint8")
    y = rng.integers(0, 3, 57)
    model = build_mlp([8], 3, adapt=x, l2=0.01, seed=0)
    loss, accuracy = model.evaluate(x, y, batch_size=10, verbose=0)
    ours = evaluate(compiled_evaluation(model), model, x, y, 10)
    assert ours["loss"] == pytest.approx(loss, rel=1e-6)
    assert ours["accuracy"] == pytest.approx(accuracy, abs=1e-7)


def test_a_compiled_chunk_takes_the_same_steps_as_keras_train_step():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (20, 6)).astype("uint8")
    y = rng.integers(0, 3, 20)
    ours, reference = (build_mlp([8], 3, adapt=x, seed=0) for _ in range(2))
    for model in (ours, reference):
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss=model.loss,
                      metrics=["accuracy"])
    chunk = np.arange(20).reshape(4, 5)
    run = train_function(compiled_loop(ours), x, y)
    logs = run(iter([chunk]))
    for idx in chunk:
        reference.train_on_batch(x[idx], y[idx])
    for a, b in zip(ours.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert ours.optimizer.iterations.numpy() == 4
    assert set(logs) >= {"loss", "accuracy"}
