"""Tests for kbn.training.callbacks: the divergence guard's stopping rule, the periodic
gradient check, the epoch timer, and TensorBoard curves that reach disk at every
epoch end."""

import math
import time
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from kbn import build_mlp
from kbn.training.callbacks import DivergenceGuard, EpochTensorBoard, EpochTimer, GradientCheck

NUM_SAMPLES = 20
NUM_CLASSES = 3


def fake_model():
    return types.SimpleNamespace(stop_training=False)


def run_guard(guard, losses):
    """Feed `losses` as epoch ends; return the epoch index it stopped at, or None."""
    model = fake_model()
    guard.set_model(model)
    for epoch, loss in enumerate(losses):
        guard.on_epoch_end(epoch, {"loss": loss, "accuracy": 0.5})
        if model.stop_training:
            return epoch
    return None


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_divergence_guard_stops_on_a_non_finite_cost(bad):
    guard = DivergenceGuard(3.0)
    assert run_guard(guard, [2.0, 1.5, bad, 1.0]) == 2
    assert guard.reason == f"training cost became {bad} at epoch 3"


def test_divergence_guard_stops_on_a_non_finite_first_epoch():
    guard = DivergenceGuard(3.0)
    assert run_guard(guard, [float("nan")]) == 0
    assert "nan at epoch 1" in guard.reason


def test_divergence_guard_stops_when_the_cost_exceeds_factor_times_the_first_epochs():
    guard = DivergenceGuard(3.0)
    assert run_guard(guard, [2.0, 1.0, 4.0, 6.5, 1.0]) == 3
    assert guard.first_loss == 2.0
    assert guard.reason == "training cost 6.5 at epoch 4 exceeds 3x the first epoch's 2"


def test_divergence_guard_lets_a_cost_just_below_the_factor_run_on():
    guard = DivergenceGuard(3.0)
    assert run_guard(guard, [2.0, 5.8, 5.99, 6.0, 1.0]) is None  # 2.9x, 2.995x, exactly 3x
    assert guard.reason is None


def test_divergence_guard_uses_the_factor_it_is_given():
    assert run_guard(DivergenceGuard(1.5), [2.0, 3.1]) == 1
    assert run_guard(DivergenceGuard(10.0), [2.0, 19.0]) is None


def test_divergence_guard_compares_with_a_resumed_runs_first_loss():
    guard = DivergenceGuard(3.0, first_loss=1.0)
    # Resumed at a later epoch: its own first cost (2.5) is not the reference.
    assert run_guard(guard, [2.5, 3.5]) == 1
    assert guard.first_loss == 1.0
    assert "exceeds 3x the first epoch's 1" in guard.reason


def test_divergence_guard_ignores_epochs_without_a_loss():
    guard = DivergenceGuard(3.0)
    assert run_guard(guard, [None, 2.0, 5.0]) is None
    assert guard.first_loss == 2.0


@pytest.fixture
def tiny_model():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(NUM_SAMPLES, 4, 4, 1)).astype("uint8")
    y = rng.integers(0, NUM_CLASSES, size=NUM_SAMPLES).astype("int64")
    model = build_mlp([6], NUM_CLASSES, adapt=x, seed=0)
    return model, x, y


def test_gradient_check_adds_a_small_relative_error_to_the_epoch_logs(tiny_model):
    model, x, y = tiny_model
    before = [w.copy() for w in model.get_weights()]
    check = GradientCheck(x, y, every=1, max_entries=30)
    check.set_model(model)
    logs = {"loss": 1.0}
    check.on_epoch_end(0, logs)
    assert set(logs) == {"loss", "grad_rel_error"}
    assert 0 <= logs["grad_rel_error"] < 1e-6
    for w, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(w, b)  # the check leaves the model alone


def test_gradient_check_runs_only_every_nth_epoch(tiny_model, monkeypatch):
    model, x, y = tiny_model
    calls = []
    monkeypatch.setattr(
        "kbn.training.callbacks.gradient_check.check_gradients",
        lambda model, x, y, **kwargs: (
            calls.append(kwargs["seed"])
            or [types.SimpleNamespace(rel_error=3e-9), types.SimpleNamespace(rel_error=7e-9)]
        ),
    )
    check = GradientCheck(x, y, every=2)
    check.set_model(model)
    added = []
    for epoch in range(5):
        logs = {"loss": 1.0}
        check.on_epoch_end(epoch, logs)
        added.append(logs.get("grad_rel_error"))
    assert added == [None, 7e-9, None, 7e-9, None]  # epochs 2 and 4, the largest error
    assert calls == [1, 3]  # a fresh draw of entries each time


def test_gradient_check_every_two_adds_nothing_at_the_first_epoch(tiny_model):
    model, x, y = tiny_model
    check = GradientCheck(x, y, every=2, max_entries=30)
    check.set_model(model)
    logs = {"loss": 1.0}
    check.on_epoch_end(0, logs)
    assert logs == {"loss": 1.0}


def test_epoch_timer_records_one_positive_duration_per_epoch():
    timer = EpochTimer()
    for epoch, pause in enumerate([0.02, 0.0, 0.05]):
        timer.on_epoch_begin(epoch)
        time.sleep(pause)
        timer.on_epoch_end(epoch, {})
    assert len(timer.seconds) == 3
    assert all(s > 0 for s in timer.seconds)
    assert 0.02 <= timer.seconds[0] < 1.0
    assert timer.seconds[1] < timer.seconds[0] <= timer.seconds[2]
    assert timer.seconds[2] >= 0.05


def test_epoch_timer_times_every_epoch_of_a_fit(tiny_model):
    model, x, y = tiny_model
    timer = EpochTimer()
    model.fit(x, y, epochs=3, batch_size=10, callbacks=[timer], verbose=0)
    assert len(timer.seconds) == 3
    assert all(0 < s < 30 for s in timer.seconds)


def tensorboard_losses(folder):
    accumulator = EventAccumulator(
        str(folder), size_guidance={"tensors": 0}, purge_orphaned_data=False
    )
    accumulator.Reload()
    if "epoch_loss" not in accumulator.Tags()["tensors"]:
        return []
    return [
        (event.step, float(tf.make_ndarray(event.tensor_proto)))
        for event in accumulator.Tensors("epoch_loss")
    ]


class _ReadBack(keras.callbacks.Callback):
    """Reads the TensorBoard files at each epoch end, as a killed run would leave them."""

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = log_dir
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(
            (
                [s for s, _ in tensorboard_losses(self.log_dir / "train")],
                [s for s, _ in tensorboard_losses(self.log_dir / "validation")],
            )
        )


def test_epoch_tensorboard_puts_each_epoch_on_disk_before_the_run_ends(tiny_model, tmp_path):
    model, x, y = tiny_model
    board = EpochTensorBoard(tmp_path)
    probe = _ReadBack(tmp_path)
    history = model.fit(
        x, y, epochs=3, batch_size=10, validation_data=(x, y), callbacks=[board, probe], verbose=0
    )
    assert probe.seen == [([0], [0]), ([0, 1], [0, 1]), ([0, 1, 2], [0, 1, 2])]
    train = tensorboard_losses(tmp_path / "train")
    assert [s for s, _ in train] == [0, 1, 2]
    np.testing.assert_allclose([v for _, v in train], history.history["loss"], rtol=1e-6)
    assert not math.isnan(sum(history.history["loss"]))
