"""Tests for kbn.optim.schedules: the triangular cycle's values, its config and
serialization, and the learning rate each kbn schedule name gives."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kbn.optim.schedules import SCHEDULES, Cosine, Exponential, Triangular, learning_rate

ETA_MIN = 0.01
ETA_MAX = 0.11
STEP_SIZE = 10
STEPS_PER_EPOCH = 10


def value(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step)))


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, ETA_MIN),
        (STEP_SIZE // 2, 0.06),  # half way up
        (STEP_SIZE, ETA_MAX),  # the top
        (STEP_SIZE * 3 // 2, 0.06),  # half way down
        (2 * STEP_SIZE, ETA_MIN),  # one full cycle
        (2 * STEP_SIZE + 2, 0.03),  # the second cycle repeats the first
        (3 * STEP_SIZE, ETA_MAX),
    ],
)
def test_triangular_rises_and_falls_linearly_between_eta_min_and_eta_max(step, expected):
    schedule = Triangular(ETA_MIN, ETA_MAX, STEP_SIZE)
    assert value(schedule, step) == pytest.approx(expected, rel=1e-6)


def test_triangular_accepts_a_tensor_step_counter():
    schedule = Triangular(ETA_MIN, ETA_MAX, STEP_SIZE)
    steps = keras.ops.convert_to_tensor(np.array([0, 5, 10, 15, 20], "int64"))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(schedule(steps)), [0.01, 0.06, 0.11, 0.06, 0.01], rtol=1e-6
    )


def test_triangular_with_equal_bounds_is_constant():
    schedule = Triangular(0.05, 0.05, 3)
    assert [value(schedule, t) for t in range(7)] == pytest.approx([0.05] * 7, rel=1e-7)


def test_triangular_config_round_trip_gives_the_same_schedule():
    schedule = Triangular(ETA_MIN, ETA_MAX, STEP_SIZE)
    config = schedule.get_config()
    assert config == {"eta_min": ETA_MIN, "eta_max": ETA_MAX, "step_size": STEP_SIZE}
    clone = Triangular.from_config(config)
    assert clone.get_config() == config
    assert [value(clone, t) for t in range(0, 31, 5)] == [
        value(schedule, t) for t in range(0, 31, 5)
    ]


def test_triangular_survives_keras_serialization():
    schedule = Triangular(ETA_MIN, ETA_MAX, STEP_SIZE)
    serialized = keras.saving.serialize_keras_object(schedule)
    clone = keras.saving.deserialize_keras_object(serialized)
    assert type(clone) is Triangular
    assert clone.get_config() == schedule.get_config()
    assert value(clone, 15) == pytest.approx(0.06, rel=1e-6)


def test_an_optimizer_with_a_triangular_schedule_survives_serialization():
    optimizer = keras.optimizers.SGD(Triangular(ETA_MIN, ETA_MAX, STEP_SIZE), momentum=0.9)
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    rate = clone.get_config()["learning_rate"]
    assert rate["registered_name"] == "kbn>Triangular"
    assert rate["config"] == {"eta_min": ETA_MIN, "eta_max": ETA_MAX, "step_size": STEP_SIZE}
    assert float(clone.learning_rate) == pytest.approx(ETA_MIN, rel=1e-6)  # at step 0


@pytest.mark.parametrize(
    "eta_min, eta_max, step_size, match",
    [
        (0.0, 0.1, 10, "eta_min"),
        (-0.01, 0.1, 10, "eta_min"),
        (0.2, 0.1, 10, "eta_min <= eta_max"),
        (0.01, 0.1, 0, "step_size"),
        (0.01, 0.1, -5, "step_size"),
    ],
)
def test_triangular_rejects_invalid_arguments(eta_min, eta_max, step_size, match):
    with pytest.raises(ValueError, match=match):
        Triangular(eta_min, eta_max, step_size)


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.1),
        (STEPS_PER_EPOCH - 1, 0.1),  # the whole first epoch runs at eta
        (STEPS_PER_EPOCH, 0.05),  # one decay per epoch, at its first step
        (2 * STEPS_PER_EPOCH - 1, 0.05),
        (3 * STEPS_PER_EPOCH, 0.0125),
    ],
)
def test_exp_schedule_decays_once_per_epoch_in_a_staircase(step, expected):
    schedule = learning_rate("exp", eta=0.1, steps_per_epoch=STEPS_PER_EPOCH, decay=0.5)
    assert value(schedule, step) == pytest.approx(expected, rel=1e-6)


def test_constant_schedule_is_the_plain_float():
    rate = learning_rate("constant", eta=0.0864, steps_per_epoch=STEPS_PER_EPOCH)
    assert isinstance(rate, float)
    assert rate == 0.0864


def test_cyclic_schedule_defaults_to_a_tenth_of_eta_and_a_two_epoch_half_cycle():
    schedule = learning_rate("cyclic", eta=0.1, steps_per_epoch=STEPS_PER_EPOCH)
    assert isinstance(schedule, Triangular)
    assert schedule.get_config() == {
        "eta_min": 0.01,
        "eta_max": 0.1,
        "step_size": 2 * STEPS_PER_EPOCH,
    }
    assert value(schedule, 0) == pytest.approx(0.01, rel=1e-6)
    assert value(schedule, 2 * STEPS_PER_EPOCH) == pytest.approx(0.1, rel=1e-6)


def test_cyclic_schedule_takes_explicit_bounds_and_step_size():
    schedule = learning_rate(
        "cyclic", eta=0.2, steps_per_epoch=STEPS_PER_EPOCH, eta_min=0.02, step_size=4
    )
    assert schedule.get_config() == {"eta_min": 0.02, "eta_max": 0.2, "step_size": 4}
    assert value(schedule, 2) == pytest.approx(0.11, rel=1e-6)


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.1),  # starts at eta
        (15, 0.01 + 0.09 * 0.5),  # half way through the run: half way down
        (30, 0.01),  # ends at eta_min
        (40, 0.01),  # and stays there
    ],
)
def test_cosine_schedule_falls_along_half_a_cosine_over_the_run(step, expected):
    schedule = learning_rate(
        "cosine", eta=0.1, eta_min=0.01, steps_per_epoch=STEPS_PER_EPOCH, epochs=3
    )
    assert value(schedule, step) == pytest.approx(expected, rel=1e-5)


def test_cosine_schedule_ends_at_zero_by_default_and_needs_the_run_length():
    schedule = learning_rate("cosine", eta=0.1, steps_per_epoch=STEPS_PER_EPOCH, epochs=2)
    assert value(schedule, 5) == pytest.approx(0.05 * (1 + np.cos(np.pi / 4)), rel=1e-5)
    assert value(schedule, 20) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="cosine schedule needs the run's number of epochs"):
        learning_rate("cosine", eta=0.1, steps_per_epoch=STEPS_PER_EPOCH)


def test_learning_rate_names_every_schedule_and_rejects_an_unknown_one():
    for name in SCHEDULES:
        learning_rate(name, eta=0.1, steps_per_epoch=STEPS_PER_EPOCH, epochs=1)
    with pytest.raises(
        ValueError, match="schedule must be one of exp, cyclic, cosine, constant.*'step'"
    ):
        learning_rate("step", eta=0.1, steps_per_epoch=STEPS_PER_EPOCH)


@pytest.mark.parametrize(
    "schedule, other",
    [
        (Exponential(0.1, 0.5, 10), Exponential(0.3, 0.9, 5)),
        (Triangular(0.01, 0.1, 10), Triangular(0.02, 0.4, 4)),
        (Cosine(0.1, 0.0, 20), Cosine(0.5, 0.1, 8)),
    ],
    ids=["exp", "cyclic", "cosine"],
)
def test_assign_gives_a_traced_schedule_the_new_numbers(schedule, other):
    traced = tf.function(lambda step: schedule(step))
    steps = [0, 3, 7, 12, 30]
    expected = [value(other, t) for t in steps]
    schedule.assign(other)
    assert schedule.get_config() == other.get_config()
    assert [float(traced(tf.constant(t))) for t in steps] == pytest.approx(expected, rel=1e-6)


def test_assign_refuses_another_kind_of_schedule():
    with pytest.raises(TypeError, match="cannot assign a Cosine to a Exponential"):
        Exponential(0.1, 0.5, 10).assign(Cosine(0.1, 0.0, 20))


def test_exponential_equals_keras_staircase_exponential_decay():
    ours = Exponential(0.0864, 0.8, 100)
    keras_decay = keras.optimizers.schedules.ExponentialDecay(0.0864, 100, 0.8, staircase=True)
    for step in (0, 99, 100, 1234, 1999):
        assert value(ours, step) == pytest.approx(value(keras_decay, step), rel=1e-6)


@pytest.mark.parametrize(
    "schedule", [Exponential(0.1, 0.5, 10), Cosine(0.1, 0.01, 20)], ids=["exp", "cosine"]
)
def test_schedules_survive_keras_serialization(schedule):
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert type(clone) is type(schedule) and clone.get_config() == schedule.get_config()
    assert value(clone, 7) == pytest.approx(value(schedule, 7), rel=1e-6)
