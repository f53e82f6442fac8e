"""Tests for kbn.presets: every preset is a valid set of load_data / build_mlp /
TrainConfig settings, `report` is the report's protocol, and unknown names fail clearly."""

import numpy as np
import pytest

from kbn import KbnError, TrainConfig, build_mlp
from kbn.cli import build_parser
from kbn.presets import PRESETS, get_preset


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_builds_a_model_and_a_valid_config(name):
    preset = get_preset(name)
    assert preset.name == name and preset.description
    TrainConfig(**preset.train).validate()
    x = np.random.default_rng(0).integers(0, 256, (20, 8, 8, 3)).astype("uint8")
    model = build_mlp(num_classes=10, adapt=x, **preset.model)
    assert model(x[:2]).shape == (2, 10)
    assert set(preset.data) <= {"train_size", "val_size"}


def test_report_preset_is_the_reports_protocol_and_the_cli_defaults():
    preset = get_preset("report")
    defaults = TrainConfig()
    for key, value in preset.train.items():
        assert getattr(defaults, key) == value, key
    args = build_parser().parse_args(["train", "--data", "cifar10"])
    assert args.hidden == preset.model["hidden"] and args.lam == preset.model["lam"]
    assert preset.data == {"train_size": 10000, "val_size": 10000}


def test_cifar10_mlp_preset_trains_on_the_pool_with_every_regulariser():
    preset = get_preset("cifar10-mlp")
    assert preset.data["val_size"] <= 1000 and "train_size" not in preset.data  # the rest trains
    assert preset.model["batch_norm"] and preset.model["flip"] and preset.model["translate"] > 0
    assert preset.model["dropout"] > 0


def test_presets_cannot_be_changed_in_place():
    with pytest.raises(TypeError):
        get_preset("cifar10-mlp").model["hidden"] = [1]


def test_unknown_preset_raises_kbn_error_naming_the_known_ones():
    with pytest.raises(KbnError, match="unknown preset 'resnet'; known: report, cifar10-mlp"):
        get_preset("resnet")
