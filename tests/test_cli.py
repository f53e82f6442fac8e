"""Tests for kbn.cli: `kbn train`, `kbn evaluate` and `kbn gradcheck` on a tiny synthetic npz.

Almost everything calls `kbn.cli.main(argv)` in this process; a few tests start a fresh
`python -m kbn` to see what a user sees: the help, a clean one-line error, and a saved model
evaluated by a process that did not train it.
"""

import argparse
import contextlib
import dataclasses
import importlib.metadata
import io
import json
import math
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import synthetic

import kbn
from kbn.cli import COMMANDS, build_parser, main
from kbn.cli.network import MODEL_OPTIONS
from kbn.training.config import TrainConfig, setting

NUM_TRAIN = 300  # the npz pool: NUM_TRAIN - VAL_SIZE train, VAL_SIZE val
NUM_TEST = 100
VAL_SIZE = 50
NUM_CLASSES = 3
CHANCE = 1 / NUM_CLASSES
# Tiny runs: two epochs of a one-hidden-layer net of width 8.
TINY = ["--epochs", "2", "--batch-size", "32", "--hidden", "8", "--val-size", str(VAL_SIZE)]
TRAIN_FIGURES = (
    "train_acc",
    "val_acc",
    "test_acc",
    "train_loss",
    "val_loss",
    "epochs_run",
    "seconds_per_epoch",
    "run_dir",
    "model_path",
)


def make_images(n, seed, num_classes=NUM_CLASSES, shape=(4, 4, 1)):
    return synthetic.make_images(n, seed, num_classes, shape)


def write_npz(path, num_classes=NUM_CLASSES, shape=(4, 4, 1), test=True):
    x_train, y_train = make_images(NUM_TRAIN, 0, num_classes, shape)
    arrays = {"x_train": x_train, "y_train": y_train}
    if test:
        arrays["x_test"], arrays["y_test"] = make_images(NUM_TEST, 1, num_classes, shape)
    np.savez(path, **arrays)
    return path


def write_flat_npz(path):
    """Feature vectors of shape (N, 16), not images."""
    x, y = make_images(NUM_TRAIN, 0)
    np.savez(path, x_train=x.reshape(NUM_TRAIN, -1), y_train=y)
    return path


def write_bad_data(root):
    """Data sources each broken in one way, for BAD_INPUTS; {placeholder: path}."""
    from PIL import Image

    root.mkdir()
    x, y = make_images(20, 0)
    paths = {}

    def png(path, image=x[0, ..., 0]):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)

    def npz(name, **arrays):
        paths[name] = root / f"{name}.npz"
        np.savez(paths[name], **arrays)

    nan_x = x.astype(np.float32)
    nan_x[3, 1, 2, 0] = np.nan
    npz("nan_data", x_train=nan_x, y_train=y)
    inf_x = x.astype(np.float64)
    inf_x[7, 0, 0, 0] = -np.inf
    npz("inf_data", x_train=inf_x, y_train=y)
    npz("count_data", x_train=x, y_train=y[:-1])
    out_of_range = y.copy()
    out_of_range[4] = 5
    npz("label_range_data", x_train=x, y_train=out_of_range, class_names=np.array(["a", "b", "c"]))
    float_labels = y.astype(np.float64)
    float_labels[2] = 1.7
    npz("float_label_data", x_train=x, y_train=float_labels)

    paths["empty_classes"] = root / "empty_classes"  # class folders, no images
    for name in ("a", "b"):
        (paths["empty_classes"] / name).mkdir(parents=True)
    (paths["empty_classes"] / "a" / "notes.txt").write_text("not an image\n")
    paths["no_classes"] = root / "no_classes"  # no class folders at all
    paths["no_classes"].mkdir()
    png(paths["no_classes"] / "0.png")
    paths["corrupt"] = root / "corrupt"  # class a readable, class b's image garbage
    png(paths["corrupt"] / "a" / "0.png")
    png(paths["corrupt"] / "a" / "1.png")
    (paths["corrupt"] / "b").mkdir()
    (paths["corrupt"] / "b" / "0.png").write_bytes(b"\x89PNG garbage, not an image" * 4)
    return paths


def run_main(argv):
    """(exit status, stdout, stderr) of `main(argv)` in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


def fresh_env():
    """The user's environment: without the TF_CPP_MIN_LOG_LEVEL that conftest sets, so the
    fresh process goes through kbn's own silencing of TensorFlow's start-up notices."""
    return {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The npz data sets and the model files, shared by the module's tests."""
    root = tmp_path_factory.mktemp("cli")
    paths = {
        "root": root,
        "data": write_npz(root / "data.npz"),
        "shape_data": write_npz(root / "shape.npz", shape=(6, 6, 1)),
        "classes_data": write_npz(root / "classes.npz", num_classes=6),
        "no_test_data": write_npz(root / "no_test.npz", test=False),
        "flat_data": write_flat_npz(root / "flat.npz"),
        "text_model": root / "x.keras",
        "model": root / "m.keras",
        "truncated_model": root / "truncated.keras",
        "a_file": root / "a_file",
    }
    paths["text_model"].write_text("not a model\n")
    paths["a_file"].write_text("a file, not a folder\n")
    paths.update(write_bad_data(root / "bad"))
    return paths


@pytest.fixture(scope="module")
def trained(files):
    """One `kbn train --save --json` run: its exit status, figures and stdout."""
    logdir = files["root"] / "logs"
    status, stdout, stderr = run_main(
        [
            "train",
            "--data",
            f"npz:{files['data']}",
            *TINY,
            "--logdir",
            logdir,
            "--run-name",
            "tiny",
            "--save",
            files["model"],
            "--json",
        ]
    )
    assert status == 0, stderr
    files["truncated_model"].write_bytes(files["model"].read_bytes()[:100])
    return {"figures": last_json(stdout), "stdout": stdout, "logdir": logdir}


# --- kbn train -----------------------------------------------------------------------------


def test_train_json_reports_the_design_figures(trained, files):
    figures = trained["figures"]
    assert set(TRAIN_FIGURES) <= set(figures)
    for key in ("train_acc", "val_acc", "test_acc"):
        assert isinstance(figures[key], float)
        assert CHANCE + 0.2 < figures[key] <= 1.0, (key, figures[key])
    for key in ("train_loss", "val_loss"):
        assert math.isfinite(figures[key]) and figures[key] > 0
    assert figures["epochs_run"] == 2
    assert figures["seconds_per_epoch"] > 0
    assert pathlib.Path(figures["model_path"]) == files["model"]
    assert files["model"].is_file()


def test_train_json_run_dir_holds_the_summary(trained):
    figures = trained["figures"]
    run_dir = pathlib.Path(figures["run_dir"])
    assert run_dir == trained["logdir"] / "tiny"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["finished"] is True
    assert summary["epochs_run"] == figures["epochs_run"]
    for key in ("train_acc", "val_acc", "test_acc"):
        assert summary["final"][key] == pytest.approx(figures[key], abs=1e-12)


def test_train_json_is_the_only_stdout(trained):
    # With --json there is no progress bar: scripts read one JSON object.
    assert len(trained["stdout"].strip().splitlines()) == 1


def test_train_without_json_prints_a_readable_summary(files, tmp_path):
    status, stdout, stderr = run_main(
        ["train", "--data", f"npz:{files['data']}", *TINY, "--epochs", "1", "--logdir", tmp_path]
    )
    assert status == 0, stderr
    assert "val_acc" in stdout
    assert f"tensorboard --logdir {tmp_path}" in stdout
    with pytest.raises(ValueError):
        json.loads(stdout.strip().splitlines()[-1])


def test_train_without_batch_norm_small_init_and_three_hidden_layers_runs(files, tmp_path):
    status, stdout, stderr = run_main(
        [
            "train",
            "--data",
            f"npz:{files['data']}",
            *TINY,
            "--no-batch-norm",
            "--init",
            "small",
            "--hidden",
            "8,8,8",
            "--logdir",
            tmp_path,
            "--save",
            tmp_path / "m.keras",
            "--json",
        ]
    )
    assert status == 0, stderr
    figures = last_json(stdout)
    assert figures["epochs_run"] == 2
    for key in ("train_acc", "val_acc", "test_acc", "train_loss", "val_loss"):
        assert isinstance(figures[key], float) and math.isfinite(figures[key])
    for key in ("train_acc", "val_acc", "test_acc"):
        assert 0.0 <= figures[key] <= 1.0
    import keras

    # What the three flags change: the saved network's layers and initialiser.
    model = keras.models.load_model(tmp_path / "m.keras")
    names = [type(layer).__name__ for layer in model.layers]
    assert "BatchNorm" not in names
    dense = [layer for layer in model.layers if type(layer).__name__ == "Dense"]
    assert [layer.units for layer in dense] == [8, 8, 8, NUM_CLASSES]
    assert all(layer.use_bias for layer in dense)  # without BN every Dense has its bias
    for layer in dense:
        init = layer.get_config()["kernel_initializer"]
        assert init["class_name"] == "RandomNormal" and init["config"]["stddev"] == 1e-4


def test_train_model_options_reach_the_network_under_their_new_names(files, tmp_path):
    status, _, stderr = run_main(
        [
            "train",
            "--data",
            f"npz:{files['data']}",
            *TINY,
            "--epochs",
            "0",
            "--lam",
            "0.01",
            "--bn-momentum",
            "0.5",
            "--no-gamma-beta",
            "--init",
            "xavier",
            "--logdir",
            tmp_path,
            "--save",
            tmp_path / "m.keras",
            "--json",
        ]
    )
    assert status == 0, stderr
    import keras

    model = keras.models.load_model(
        tmp_path / "m.keras", compile=False
    )  # 0 epochs: no optimizer state
    dense = [layer for layer in model.layers if type(layer).__name__ == "Dense"]
    assert [layer.lam for layer in dense] == [0.01, 0.01]
    assert dense[0].get_config()["kernel_initializer"]["class_name"] == "GlorotNormal"
    batch_norm = model.get_layer("batch_norm1")
    assert batch_norm.momentum == 0.5
    assert (batch_norm.center, batch_norm.scale) == (False, False)


def test_train_with_every_regulariser_from_flags_records_them(files, tmp_path):
    status, stdout, stderr = run_main(
        [
            "train",
            "--data",
            f"npz:{files['data']}",
            *TINY,
            "--dropout",
            "0.2",
            "--flip",
            "--no-gamma-beta",
            "--translate",
            "0.25",
            "--whiten",
            "0.05",
            "--pca",
            "6",
            "--label-smoothing",
            "0.1",
            "--mixup",
            "0.2",
            "--schedule",
            "cosine",
            "--logdir",
            tmp_path,
            "--run-name",
            "reg",
            "--save",
            tmp_path / "reg.keras",
            "--json",
        ]
    )
    assert status == 0, stderr
    summary = json.loads((tmp_path / "reg" / "summary.json").read_text())
    assert summary["config"]["label_smoothing"] == 0.1
    assert summary["config"]["mixup"] == 0.2
    assert summary["config"]["schedule"] == "cosine"
    assert summary["history"]["learning_rate"][0] == pytest.approx(
        summary["config"]["eta"], rel=1e-6
    )
    import keras

    model = keras.models.load_model(tmp_path / "reg.keras")
    layers = [type(layer).__name__ for layer in model.layers]
    assert layers[:8] == [
        "InputLayer",
        "Flatten",
        "Centering",
        "Whitening",
        "Reshape",
        "RandomFlip",
        "RandomTranslation",
        "Flatten",
    ]
    assert model.get_layer("whiten").epsilon == 0.05
    assert model.get_layer("pca").components == 6
    assert model.get_layer("dense1").kernel.shape[0] == 6
    assert layers.count("Dropout") == 1
    batch_norm = next(layer for layer in model.layers if type(layer).__name__ == "BatchNorm")
    assert (batch_norm.center, batch_norm.scale, batch_norm.trainable_weights) == (False, False, [])


def test_train_validation_freq_validates_the_listed_epochs_and_the_last(files, tmp_path):
    status, _, stderr = run_main(
        [
            "train",
            "--data",
            f"npz:{files['data']}",
            *TINY,
            "--epochs",
            "4",
            "--validation-freq",
            "1,2",
            "--logdir",
            tmp_path,
            "--run-name",
            "v",
            "--json",
        ]
    )
    assert status == 0, stderr
    summary = json.loads((tmp_path / "v" / "summary.json").read_text())
    assert summary["config"]["validation_freq"] == [1, 2]
    assert [v is not None for v in summary["history"]["val_loss"]] == [True, True, False, True]


def test_preset_sets_the_defaults_and_flags_given_override_them(files, tmp_path):
    from kbn.training.presets import get_preset

    preset = get_preset("cifar10-mlp")
    status, stdout, stderr = run_main(
        [
            "train",
            "--data",
            f"npz:{files['data']}",
            "--preset",
            "cifar10-mlp",
            "--epochs",
            "1",
            "--hidden",
            "8",
            "--val-size",
            str(VAL_SIZE),
            "--no-flip",
            "--pca",
            "6",
            "--logdir",
            tmp_path,
            "--run-name",
            "preset",
            "--save",
            tmp_path / "preset.keras",
            "--json",
        ]
    )
    assert status == 0, stderr
    config = json.loads((tmp_path / "preset" / "summary.json").read_text())["config"]
    for key in ("eta", "schedule", "batch_size"):
        assert config[key] == preset.train[key], key
    assert config["epochs"] == 1  # given on the command line
    import keras

    model = keras.models.load_model(tmp_path / "preset.keras")
    names = [type(layer).__name__ for layer in model.layers]
    assert "RandomFlip" not in names  # --no-flip wins over the preset's flips
    assert model.get_layer("pca").components == 6  # so does --pca, on these small images
    assert ("RandomTranslation" in names) is bool(preset.model["translate"])
    assert ("Whitening" in names) is bool(preset.model["whiten"])
    assert [layer.units for layer in model.layers if type(layer).__name__ == "Dense"] == [
        8,
        NUM_CLASSES,
    ]
    dense = next(layer for layer in model.layers if type(layer).__name__ == "Dense")
    assert dense.lam == preset.model["lam"]
    assert last_json(stdout)["epochs_run"] == 1


# --- kbn evaluate --------------------------------------------------------------------------


def test_evaluate_test_split_equals_the_train_runs_test_acc(trained, files):
    status, stdout, stderr = run_main(
        [
            "evaluate",
            files["model"],
            "--data",
            f"npz:{files['data']}",
            "--split",
            "test",
            "--val-size",
            VAL_SIZE,
            "--json",
        ]
    )
    assert status == 0, stderr
    result = last_json(stdout)
    assert result["n"] == NUM_TEST
    assert list(result["splits"]) == ["test"]
    assert result["accuracy"] == pytest.approx(trained["figures"]["test_acc"], abs=1e-6)
    assert math.isfinite(result["loss"])


def test_evaluate_test_split_needs_no_val_size(trained, files):
    status, stdout, stderr = run_main(
        ["evaluate", files["model"], "--data", f"npz:{files['data']}", "--split", "test", "--json"]
    )
    assert status == 0, stderr
    result = last_json(stdout)
    assert result["n"] == NUM_TEST
    assert result["accuracy"] == pytest.approx(trained["figures"]["test_acc"], abs=1e-6)


def test_evaluate_all_gives_every_split_and_sums_n(trained, files):
    status, stdout, stderr = run_main(
        [
            "evaluate",
            files["model"],
            "--data",
            f"npz:{files['data']}",
            "--split",
            "all",
            "--val-size",
            VAL_SIZE,
            "--json",
        ]
    )
    assert status == 0, stderr
    result = last_json(stdout)
    splits = result["splits"]
    assert list(splits) == ["train", "val", "test"]
    assert [splits[s]["n"] for s in splits] == [NUM_TRAIN - VAL_SIZE, VAL_SIZE, NUM_TEST]
    assert result["n"] == sum(s["n"] for s in splits.values()) == NUM_TRAIN + NUM_TEST
    weighted = sum(s["accuracy"] * s["n"] for s in splits.values()) / result["n"]
    assert result["accuracy"] == pytest.approx(weighted, abs=1e-9)
    # Same seed, same cut: the splits are the ones the train command measured.
    for name in ("train", "val", "test"):
        assert splits[name]["accuracy"] == pytest.approx(
            trained["figures"][f"{name}_acc"], abs=1e-6
        )


def test_evaluate_without_json_prints_one_line_per_split(trained, files):
    status, stdout, stderr = run_main(
        [
            "evaluate",
            files["model"],
            "--data",
            f"npz:{files['data']}",
            "--split",
            "all",
            "--val-size",
            VAL_SIZE,
        ]
    )
    assert status == 0, stderr
    lines = stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["train", "val", "test"]
    assert all("accuracy" in line and "loss" in line for line in lines)


@pytest.mark.slow
def test_evaluate_saved_model_in_a_fresh_process(trained, files):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kbn",
            "evaluate",
            str(files["model"]),
            "--data",
            f"npz:{files['data']}",
            "--split",
            "test",
            "--val-size",
            str(VAL_SIZE),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=fresh_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    evaluated = last_json(result.stdout)
    assert evaluated["n"] == NUM_TEST
    assert evaluated["accuracy"] == pytest.approx(trained["figures"]["test_acc"], abs=1e-6)


# --- kbn gradcheck -------------------------------------------------------------------------

GRADCHECK = ["gradcheck", "--dim", "10", "--batch-sizes", "4,6", "--hidden", "8"]


@pytest.mark.parametrize(
    "extra, params",
    [
        ([], ["W1", "gamma1", "beta1", "W2", "b2"]),
        (["--no-batch-norm"], ["W1", "b1", "W2", "b2"]),
    ],
    ids=["batch-norm", "no-batch-norm"],
)
def test_gradcheck_json_rows_cover_every_batch_size_and_weight(extra, params):
    status, stdout, stderr = run_main([*GRADCHECK, *extra, "--json"])
    assert status == 0, stderr
    result = last_json(stdout)
    rows = result["rows"]
    assert all({"batch_size", "param", "rel_error"} <= set(row) for row in rows)
    assert [(r["batch_size"], r["param"]) for r in rows] == [(n, p) for n in (4, 6) for p in params]
    assert result["max_rel_error"] == max(r["rel_error"] for r in rows)
    assert result["max_rel_error"] < 1e-6
    assert result["max_rel_error_autodiff"] < 1e-12


def test_gradcheck_without_json_prints_the_markdown_table():
    status, stdout, stderr = run_main(
        ["gradcheck", "--dim", "4", "--batch-sizes", "3", "--hidden", "4", "--no-batch-norm"]
    )
    assert status == 0, stderr
    lines = stdout.splitlines()
    header = next(line for line in lines if line.startswith("| Batch size"))
    assert "Relative Error W1" in header
    assert lines[lines.index(header) + 1].startswith("|---")
    assert any(line.startswith("| 3 |") for line in lines)


# --- bad input: one `error:` line on stderr, exit status 2 --------------------------------

TRAIN = ["train", "--data", "npz:{data}", *TINY, "--logdir", "{root}/bad-logs", "--json"]
EVALUATE = ["evaluate", "{model}", "--val-size", str(VAL_SIZE), "--data"]


BAD_INPUTS = [
    pytest.param(["train", "--data", "no_such_source"], "unknown data SPEC", id="unknown-spec"),
    pytest.param(
        ["train", "--data", "npz:{root}/missing.npz"],
        "missing.npz does not exist",
        id="missing-npz",
    ),
    pytest.param([*TRAIN, "--eta", "0"], "--eta", id="eta-zero"),
    pytest.param([*TRAIN, "--eta", "-1"], "--eta", id="eta-negative"),
    pytest.param([*TRAIN, "--eta", "abc"], "'abc'", id="eta-not-a-number"),
    pytest.param([*TRAIN, "--lam", "-1"], "--lam", id="lam-negative"),
    pytest.param([*TRAIN, "--hidden", "50,x"], "'50,x'", id="hidden-not-integers"),
    pytest.param([*TRAIN, "--hidden", "0"], "--hidden", id="hidden-zero"),
    pytest.param([*TRAIN, "--batch-size", "0"], "--batch-size", id="batch-size-zero"),
    pytest.param([*TRAIN, "--epochs", "-1"], "--epochs", id="epochs-negative"),
    pytest.param(
        [*TRAIN, "--train-size", str(NUM_TRAIN)],
        f"the pool has only {NUM_TRAIN}",
        id="train-plus-val-beyond-pool",
    ),
    pytest.param(
        ["evaluate", "{root}/missing.keras", "--data", "npz:{data}"],
        "missing.keras does not exist",
        id="evaluate-missing-model",
    ),
    pytest.param(
        ["evaluate", "{text_model}", "--data", "npz:{data}"],
        "x.keras is not a .keras model",
        id="evaluate-text-file",
    ),
    pytest.param(
        ["evaluate", "{truncated_model}", "--data", "npz:{data}"],
        "truncated.keras",
        id="evaluate-truncated-model",
    ),
    pytest.param([*EVALUATE, "npz:{shape_data}"], "(6, 6, 1)", id="evaluate-other-image-shape"),
    pytest.param([*EVALUATE, "npz:{classes_data}"], "3 classes", id="evaluate-more-classes"),
    pytest.param([*EVALUATE, "npz:{no_test_data}"], "no test split", id="evaluate-no-test-split"),
    pytest.param(["gradcheck", "--batch-sizes", "0"], "--batch-sizes", id="gradcheck-batch-zero"),
    pytest.param([*TRAIN, "--resume"], "resume", id="resume-without-run-name"),
    pytest.param([*TRAIN, "--preset", "resnet"], "--preset", id="unknown-preset"),
    pytest.param([*TRAIN, "--dropout", "1"], "--dropout", id="dropout-one"),
    pytest.param(
        [*TRAIN, "--label-smoothing", "-0.1"], "--label-smoothing", id="label-smoothing-negative"
    ),
    pytest.param([*TRAIN, "--mixup", "-1"], "--mixup", id="mixup-negative"),
    pytest.param([], "required", id="no-subcommand"),
    pytest.param([*TRAIN, "--save", "{root}/m.h5"], ".keras", id="save-not-keras"),
    pytest.param(
        ["gradcheck", "--batch-sizes", ""], "batch size", id="gradcheck-empty-batch-sizes"
    ),
    pytest.param(
        [*TRAIN, "--momentum", "1"], "momentum must be in [0, 1), got 1.0", id="momentum-one"
    ),
    pytest.param([*TRAIN, "--bn-momentum", "1"], "--bn-momentum", id="bn-momentum-one"),
    pytest.param([*TRAIN, "--strategy", "ring"], "--strategy", id="unknown-strategy"),
    pytest.param(
        [*TRAIN, "--validation-freq", "0"], "such as 1,3,10, got '0'", id="validation-freq-zero"
    ),
    pytest.param(
        [*TRAIN, "--validation-freq", "2,x"], "--validation-freq", id="validation-freq-not-epochs"
    ),
    pytest.param(
        ["tune", "--data", "npz:{data}", "--validation-freq", "1,,3"],
        "--validation-freq",
        id="tune-validation-freq-malformed",
    ),
    pytest.param(
        ["train", "--data", "npz:{flat_data}", "--val-size", "50", "--flip", "--epochs", "0"],
        "flip and translate augment images of shape (H, W, C)",
        id="flip-flat-vectors",
    ),
    pytest.param([*TRAIN, "--epochs", "1", "--eta", "1e300"], "eta", id="eta-beyond-float32"),
    pytest.param(
        ["tune", "--data", "npz:{data}", "--eta-range", "0.7:0.01"],
        "eta range",
        id="tune-eta-range-inverted",
    ),
    pytest.param(
        ["tune", "--data", "npz:{data}", "--lam-range", "0:0.1"],
        "lam range",
        id="tune-lam-range-not-positive",
    ),
    pytest.param(
        ["tune", "--data", "npz:{data}", "--eta-range", "0.1"],
        "LOW:HIGH",
        id="tune-range-malformed",
    ),
    pytest.param(
        ["tune", "--data", "npz:{data}", "--rounds", "0"], "rounds", id="tune-zero-rounds"
    ),
    pytest.param(
        ["tune", "--data", "npz:{data}", "--pruning", "hyperband"],
        "pruning must be one of",
        id="tune-unknown-pruning",
    ),
    pytest.param(
        ["tune", "--data", "npz:{data}", "--finalists", "0"],
        "finalists must be 1 to the number of trials",
        id="tune-zero-finalists",
    ),
    pytest.param(
        ["tune", "--data", "npz:{data}", "--finalists", "3", "--finalist-seeds", "11"],
        "finalist seeds must be 1 to 10",
        id="tune-too-many-finalist-seeds",
    ),
    pytest.param(
        ["train", "--data", "folder:{empty_classes}"],
        "holds no images",
        id="folder-class-folders-without-images",
    ),
    pytest.param(
        ["train", "--data", "folder:{no_classes}"],
        "no class sub-folders",
        id="folder-without-class-folders",
    ),
    pytest.param(
        ["train", "--data", "folder:{corrupt}", "--val-size", "0"],
        "cannot read image",
        id="folder-corrupt-image",
    ),
    pytest.param(["train", "--data", "npz:{nan_data}"], "NaN or infinite", id="npz-nan-in-data"),
    pytest.param(
        ["train", "--data", "npz:{inf_data}"], "NaN or infinite", id="npz-infinite-in-data"
    ),
    pytest.param(
        ["train", "--data", "npz:{count_data}"],
        "20 images but 19 labels",
        id="npz-labels-and-images-differ-in-count",
    ),
    pytest.param(
        ["train", "--data", "npz:{label_range_data}"],
        "label 5 is out of range",
        id="npz-label-out-of-range",
    ),
    pytest.param(
        ["train", "--data", "npz:{float_label_data}"],
        "whole class indices, found 1.7",
        id="npz-float-labels",
    ),
]


@pytest.mark.parametrize("argv, names", BAD_INPUTS)
def test_bad_input_prints_one_error_line_and_exits_2(argv, names, trained, files):
    argv = [arg.format(**files) for arg in argv]
    status, _, stderr = run_main(argv)
    lines = stderr.splitlines()
    assert status == 2, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    assert names in lines[0]


@pytest.mark.slow
def test_bad_input_in_a_fresh_process_is_one_line_without_traceback(files):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kbn",
            "evaluate",
            str(files["text_model"]),
            "--data",
            f"npz:{files['data']}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=fresh_env(),
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "x.keras" in lines[0]
    assert result.stdout == ""


# --- a valid command that fails while running: one `error:` line, exit status 1 ----------

FAILURES = [
    pytest.param([*TRAIN, "--logdir", "{a_file}"], "a_file", id="logdir-is-a-file"),
    pytest.param(
        [*TRAIN, "--epochs", "0", "--save", "{a_file}/m.keras"], "a_file", id="save-under-a-file"
    ),
]


@pytest.mark.parametrize("argv, names", FAILURES)
def test_failure_while_running_prints_one_error_line_and_exits_1(argv, names, files):
    argv = [arg.format(**files) for arg in argv]
    status, _, stderr = run_main(argv)
    lines = stderr.splitlines()
    assert status == 1, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and names in lines[0]


def test_kbn_error_raised_once_training_began_exits_1(files, tmp_path, monkeypatch):
    import kbn.training.trainer

    def train(model, dataset, config):
        raise kbn.KbnError("the run folder vanished mid-run")

    monkeypatch.setattr(kbn.training.trainer, "train", train)
    status, _, stderr = run_main(
        ["train", "--data", f"npz:{files['data']}", *TINY, "--logdir", tmp_path]
    )
    assert (status, stderr) == (1, "error: the run folder vanished mid-run\n")


# --- kbn --version, python -m kbn, --help ---------------------------------------------------


def test_version_prints_the_one_version_of_the_package():
    status, stdout, _ = run_main(["--version"])
    assert status == 0
    assert stdout == f"kbn {kbn.__version__}\n"
    # pyproject.toml reads it from kbn.__version__: the installed metadata agrees.
    assert importlib.metadata.version("kbn-keras") == kbn.__version__


@pytest.mark.slow
def test_python_dash_m_kbn_is_the_kbn_command():
    result = subprocess.run(
        [sys.executable, "-m", "kbn", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env=fresh_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("usage: kbn ")
    for command in COMMANDS:
        assert re.search(rf"^    {command}\b", result.stdout, re.MULTILINE), command


def test_top_level_help_says_what_kbn_is_for_and_its_exit_statuses():
    status, stdout, _ = run_main(["--help"])
    assert status == 0
    text = " ".join(stdout.split())
    assert "trains k-layer fully connected networks with batch normalization" in text
    assert "thin argparse front" not in text
    assert "exit status: 0 done; 1 the command was valid but running it failed" in text
    assert "2 the command is wrong" in text


def subcommands():
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("command", list(COMMANDS))
def test_subcommand_help_shows_every_default_and_examples(command):
    from kbn.cli.parser import shown_default

    parser = subcommands()[command]
    status, stdout, _ = run_main([command, "--help"])
    assert status == 0
    text = " ".join(stdout.split())
    assert "examples: kbn " + command in text
    shown = 0
    for action in parser._actions:
        default = shown_default(action)
        if action.option_strings and default:
            assert f"(default: {default})" in text, (action.option_strings, default)
            shown += 1
    assert shown or command in ("export", "runs")  # nothing there has a default to show


def test_train_help_shows_the_defaults_users_asked_for():
    text = " ".join(run_main(["train", "--help"])[1].split())
    for flag, default in [
        ("--eta ETA", "0.0864"),
        ("--epochs N", "20"),
        ("--momentum MOMENTUM", "0.9"),
        ("--batch-size N", "100"),
        ("--init {he,xavier,small}", "he"),
        ("--hidden W1,W2,...", "50,30"),
        ("--flip, --no-flip", "--no-flip"),
    ]:
        after = text[text.index(flag + " ") :]  # the option's line, not the usage's "[--eta ETA]"
        assert re.search(r"\(default: ([^)]*)\)", after).group(1) == default, flag


# --- options generated from TrainConfig, build_mlp and SearchConfig -------------------------


def train_parser():
    return subcommands()["train"]


def test_train_offers_every_command_line_field_of_train_config():
    parser = train_parser()
    dests = {a.dest: a for a in parser._actions}
    args = parser.parse_args(["--data", "x"])
    for field in dataclasses.fields(TrainConfig):
        if field.metadata["cli"]:
            assert f"--{field.name.replace('_', '-')}" in dests[field.name].option_strings
            assert getattr(args, field.name) == getattr(TrainConfig(), field.name), field.name
        else:
            assert field.name not in dests, field.name
    assert {f.name for f in dataclasses.fields(TrainConfig) if not f.metadata["cli"]} == {
        "optimizer",
        "verbose",
    }


def test_train_config_field_added_later_becomes_a_checked_flag():
    from kbn.cli.options import add_config_options
    from kbn.cli.parser import Parser

    @dataclasses.dataclass
    class Later(TrainConfig):
        precision: str = setting("float32", "compute dtype", choices=("float32", "mixed"))
        warmup: int = setting(
            0,
            "warm-up epochs",
            check=lambda v: v >= 0,
            error="warmup must be 0 or more, got {value}",
        )

    parser = Parser(prog="kbn train")
    add_config_options(parser, Later)
    args = parser.parse_args(["--precision", "mixed", "--warmup", "2", "--eta", "0.5"])
    assert (args.precision, args.warmup, args.eta) == ("mixed", 2, 0.5)
    for bad, message in [
        (["--warmup", "-1"], "warmup must be 0 or more, got -1"),
        (["--precision", "half"], "invalid choice: 'half'"),
    ]:
        with pytest.raises(Exception, match=re.escape(message)):
            parser.parse_args(bad)


def test_train_config_flags_reject_values_with_the_configs_own_message():
    status, _, stderr = run_main(["train", "--data", "x", "--decay", "1.5"])
    assert status == 2
    assert stderr == "error: kbn train: argument --decay: decay must be in (0, 1], got 1.5\n"


def test_model_options_are_build_mlps_arguments_under_one_name_each():
    import inspect

    from kbn.nn.builder import build_mlp

    arguments = inspect.signature(build_mlp).parameters
    for name, option in MODEL_OPTIONS.items():
        assert set(option.get("to", (name,))) <= set(arguments), name
    dests = {a.dest for a in train_parser()._actions}
    assert {"lam", "bn_momentum", "momentum"} <= dests
    assert not {"l2", "alpha", "no_batch_norm"} & dests  # one name per concept


def test_tune_offers_every_search_config_field_but_seed_and_verbose():
    from tuning.search import SearchConfig

    parser = subcommands()["tune"]
    dests = {a.dest for a in parser._actions}
    args = parser.parse_args(["--data", "x"])
    for field in dataclasses.fields(SearchConfig):
        if field.name != "verbose":
            assert field.name in dests, field.name
            assert getattr(args, field.name) == getattr(SearchConfig(), field.name), field.name


def test_tune_flags_reach_the_search_config(monkeypatch, files, tmp_path):
    import tuning.search

    seen = {}

    def search(dataset, config):
        seen["config"] = config
        return None  # as a worker does: nothing to report

    monkeypatch.setattr(tuning.search, "search", search)
    status, _, stderr = run_main(
        [
            "tune",
            "--data",
            f"npz:{files['data']}",
            "--val-size",
            VAL_SIZE,
            "--rounds",
            "2",
            "--trials",
            "4",
            "--eta-range",
            "0.1:0.2",
            "--directory",
            tmp_path,
            "--architecture",
            "--seed",
            "3",
            "--pruning",
            "median",
            "--validation-freq",
            "1,3",
            "--backup-interval",
            "0",
            "--json",
        ]
    )
    assert status == 0, stderr
    config = seen["config"]
    assert (config.rounds, config.trials, config.eta_range, config.pruning) == (
        2,
        4,
        (0.1, 0.2),
        "median",
    )
    assert (config.validation_freq, config.backup_interval) == ((1, 3), 0.0)
    assert (config.architecture, config.seed, config.verbose, config.directory) == (
        True,
        3,
        0,
        str(tmp_path),
    )


def test_every_preset_setting_is_a_train_option():
    from kbn.training.presets import PRESETS

    dests = {a.dest for a in train_parser()._actions}
    targets = {t for name, o in MODEL_OPTIONS.items() for t in o.get("to", (name,))}
    for preset in PRESETS.values():
        assert set(preset.data) | set(preset.train) <= dests, preset.name
        assert set(preset.model) <= targets, preset.name


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_help_example_is_a_valid_command_line(command):
    import shlex

    parser = build_parser()
    for line in COMMANDS[command].EXAMPLES:
        argv = shlex.split(line)
        assert argv[:2] == ["kbn", command], line
        args = parser.parse_args(argv[1:])
        assert args.func is COMMANDS[command].run, line


def test_readme_command_line_names_only_flags_that_exist():
    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    block = readme.split("## Command line\n\n```\n", 1)[1].split("```", 1)[0]
    commands = subcommands()
    command, checked = None, 0
    for line in block.splitlines():
        match = re.match(r"kbn (\w+)", line)
        if match:
            command = match.group(1) if match.group(1) in commands else None
        if command is None:
            continue
        known = {flag for action in commands[command]._actions for flag in action.option_strings}
        for flag in re.findall(r"--[a-z][a-z-]*", line):
            assert flag in known, (command, flag)
            checked += 1
    assert checked > 50
