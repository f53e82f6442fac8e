"""Tests for kbn.training.presets: every preset is a valid set of load_data / build_mlp /
TrainConfig settings, `report` is the report's network (batch norm without gamma and
beta) and protocol, and unknown names fail clearly."""

import contextlib
import inspect
import io

import keras
import numpy as np
import pytest
import synthetic

from kbn import BatchNorm, KbnError, TrainConfig, build_mlp
from kbn.cli import build_parser, main
from kbn.cli.network import model_settings
from kbn.training.presets import PRESETS, get_preset

IMAGES = np.random.default_rng(0).integers(0, 256, (20, 8, 8, 3)).astype("uint8")


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_builds_a_model_and_a_valid_config(name):
    preset = get_preset(name)
    assert preset.name == name and preset.description
    TrainConfig(**preset.train).check()
    # Images of 16 x 16 x 3 = 768 values: enough for cifar10-mlp's 400 principal components.
    x = np.random.default_rng(0).integers(0, 256, (20, 16, 16, 3)).astype("uint8")
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


def test_report_preset_builds_batch_norm_without_gamma_and_beta():
    preset = get_preset("report")
    model = build_mlp(num_classes=10, adapt=IMAGES, **preset.model)
    norms = [layer for layer in model.layers if isinstance(layer, BatchNorm)]
    assert [n.name for n in norms] == ["batch_norm1", "batch_norm2"]
    for norm in norms:  # the report's plain normalisation: nothing to learn
        assert (norm.center, norm.scale, norm.trainable_weights) == (False, False, [])
        assert [w.name for w in norm.non_trainable_weights] == ["moving_mean", "moving_variance"]
    # The trained weights are the report's W and b: kernels, and the logits' bias (the hidden
    # layers' b is cancelled by the normalisation, so kbn leaves it out).
    assert sorted(w.path for w in model.trainable_weights) == [
        "dense1/kernel",
        "dense2/kernel",
        "dense3/bias",
        "dense3/kernel",
    ]


def test_kbn_train_with_the_report_preset_trains_the_seeds_network(tmp_path):
    x, y = synthetic.make_images(240, seed=0, shape=(8, 8, 3))
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        status = main(
            [
                "train",
                "--data",
                f"npz:{tmp_path / 'd.npz'}",
                "--preset",
                "report",
                "--train-size",
                "200",
                "--val-size",
                "40",
                "--epochs",
                "1",
                "--logdir",
                str(tmp_path),
                "--save",
                str(tmp_path / "m.keras"),
                "--json",
            ]
        )
    assert status == 0, out.getvalue()
    model = keras.models.load_model(tmp_path / "m.keras")
    preset = get_preset("report")
    norms = [layer for layer in model.layers if isinstance(layer, BatchNorm)]
    assert len(norms) == len(preset.model["hidden"]) == 2
    assert all((n.center, n.scale, n.trainable_weights) == (False, False, []) for n in norms)
    dense = [layer for layer in model.layers if type(layer).__name__ == "Dense"]
    assert [layer.units for layer in dense] == [50, 30, 3]
    assert all(layer.lam == preset.model["lam"] for layer in dense)


def test_cifar10_mlp_preset_holds_out_5k_images_and_whitens_and_augments_the_rest():
    preset = get_preset("cifar10-mlp")
    assert preset.data["val_size"] == 5000 and "train_size" not in preset.data  # the rest trains
    assert preset.model["batch_norm"] and preset.model["flip"] and preset.model["translate"] > 0
    assert preset.model["whiten"] > 0 and preset.train["precision"] == "auto"
    assert preset.model["test_time_flip"]  # averages over the flips it trains with


@pytest.mark.parametrize("name", PRESETS)
def test_kbn_train_preset_builds_the_network_build_mlp_builds_from_the_preset(name):
    argv = ["train", "--data", "cifar10", "--preset", name]
    parser = build_parser()
    parser.parse_args(argv).apply_preset(name)  # as `kbn.cli.main` does
    settings = model_settings(parser.parse_args(argv))
    wanted = dict(get_preset(name).model)
    assert {key: settings[key] for key in wanted} == wanted
    # What a preset leaves out is build_mlp's default, whatever the command line's own is.
    defaults = {key: p.default for key, p in inspect.signature(build_mlp).parameters.items()}
    for key, value in settings.items():
        if key not in wanted:
            assert value == defaults[key], key


def test_presets_cannot_be_changed_in_place():
    with pytest.raises(TypeError):
        get_preset("cifar10-mlp").model["hidden"] = [1]


def test_unknown_preset_raises_kbn_error_naming_the_known_ones():
    with pytest.raises(KbnError, match="unknown preset 'resnet'; known: report, cifar10-mlp"):
        get_preset("resnet")
