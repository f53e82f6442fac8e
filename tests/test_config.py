"""Tests for kbn.training.config: TrainConfig's fields carry what `kbn train` and `check` need."""

import dataclasses

import pytest

from kbn.errors import KbnError
from kbn.training.config import TrainConfig, setting, setting_error

FIELDS = {field.name: field for field in dataclasses.fields(TrainConfig)}


@pytest.mark.parametrize("name", FIELDS)
def test_every_field_says_what_it_does_and_whether_it_is_a_flag(name):
    meta = FIELDS[name].metadata
    assert meta["help"] and isinstance(meta["cli"], bool)


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("eta", 0.0, "eta must be positive, got 0.0"),
        ("batch_size", 0, "batch size must be a positive integer, got 0"),
        ("schedule", "step", "schedule must be one of exp, cyclic, cosine, constant, got 'step'"),
        ("strategy", "ring", "strategy must be one of default, mirrored, multi-worker, got 'ring'"),
        ("save", "m.h5", "the model file must end in .keras, got m.h5"),
    ],
)
def test_setting_error_names_the_setting_and_the_value(name, value, message):
    assert setting_error(FIELDS[name], value) == message
    with pytest.raises(
        KbnError,
        match="^"
        + message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")
        + "$",
    ):
        TrainConfig(**{name: value}).check()


@pytest.mark.parametrize("name", ["eta_min", "step_size", "replicas", "run_name", "save"])
def test_unset_optional_settings_are_valid(name):
    assert FIELDS[name].default is None
    assert setting_error(FIELDS[name], None) is None


def test_checks_across_settings_stay_in_validate():
    TrainConfig(eta=0.1, eta_min=0.1).check()
    with pytest.raises(KbnError, match=r"eta_min must be in \(0, eta\], got 0.2"):
        TrainConfig(eta=0.1, eta_min=0.2).check()
    with pytest.raises(KbnError, match="--resume needs --run-name"):
        TrainConfig(resume=True).check()


def test_a_field_declared_with_setting_is_validated_without_more_code():
    @dataclasses.dataclass
    class Later(TrainConfig):
        warmup: int = setting(
            0,
            "warm-up epochs",
            check=lambda v: v >= 0,
            error="warmup must be 0 or more, got {value}",
        )

    Later(warmup=3).check()
    with pytest.raises(KbnError, match="warmup must be 0 or more, got -1"):
        Later(warmup=-1).check()


@pytest.mark.parametrize(
    "freq, epochs, expected",
    [(1, 3, {1, 2, 3}), (2, 5, {2, 4, 5}), ((1, 3, 9), 5, {1, 3, 5}), (4, 0, set())],
)
def test_validation_epochs_are_those_validation_freq_names_and_the_last(freq, epochs, expected):
    assert TrainConfig(validation_freq=freq, epochs=epochs).validation_epochs() == expected


def test_the_old_name_validate_still_checks_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="check"), pytest.raises(KbnError, match="eta"):
        TrainConfig(eta=0).validate()
