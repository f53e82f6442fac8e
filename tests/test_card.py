"""Tests for kbn.inference.card and kbn.inference.record: the model card `kbn train --save`
writes beside the model and `kbn evaluate --card` writes for any data, on a tiny synthetic
data set trained for two epochs through the command line, in process."""

import json
import math
import shutil

import keras
import numpy as np
import pytest
import synthetic

from kbn.cli import main
from kbn.data import load_data
from kbn.errors import KbnError
from kbn.inference.card import (
    NOT_RECORDED,
    card_path,
    confusion_path,
    model_card,
    standard_error,
    write_card,
)
from kbn.inference.evaluate import evaluate, load_model
from kbn.inference.record import (
    KEY,
    METADATA,
    read_record,
    recorded_cut,
    store_record,
    validation_held_out,
)
from kbn.nn.builder import build_mlp

NUM_TRAIN = 300  # the pool: NUM_TRAIN - VAL_SIZE train, VAL_SIZE val
NUM_TEST = 90
VAL_SIZE = 60
SEED = 3
EPOCHS = 2
BATCH_SIZE = 32
CLASS_NAMES = ("left", "right", "bottom")
IMAGE_SHAPE = (4, 4, 1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(model path, data SPEC, train's --json): `kbn train --save` on a tiny npz data set."""
    root = tmp_path_factory.mktemp("card")
    x, y = synthetic.make_images(NUM_TRAIN, 0, len(CLASS_NAMES), IMAGE_SHAPE)
    x_test, y_test = synthetic.make_images(NUM_TEST, 1, len(CLASS_NAMES), IMAGE_SHAPE)
    np.savez(
        root / "data.npz",
        x_train=x,
        y_train=y,
        x_test=x_test,
        y_test=y_test,
        class_names=np.array(CLASS_NAMES),
    )
    spec = f"npz:{root / 'data.npz'}"
    model_path = root / "tiny.keras"
    status, outcome, _ = cli(
        "train",
        "--data",
        spec,
        "--val-size",
        VAL_SIZE,
        "--seed",
        SEED,
        "--hidden",
        "8",
        "--epochs",
        EPOCHS,
        "--batch-size",
        BATCH_SIZE,
        "--logdir",
        root / "logs",
        "--run-name",
        "tiny",
        "--save",
        model_path,
        "--json",
    )
    assert status == 0
    return model_path, spec, outcome


def cli(*argv):
    """(exit status, the --json line parsed or None, stderr) of `kbn ARGV` run in process."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    lines = out.getvalue().strip().splitlines()
    parsed = json.loads(lines[-1]) if "--json" in argv and status == 0 else None
    return status, parsed, err.getvalue()


def table_after(text, heading):
    """The rows (lists of cells) of the first Markdown table after the line `heading`."""
    lines = text[text.index(heading + "\n") :].splitlines()[1:]
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def evaluate_json(model_path, spec, *extra):
    status, result, err = cli(
        "evaluate",
        model_path,
        "--data",
        spec,
        "--split",
        "all",
        "--val-size",
        VAL_SIZE,
        "--seed",
        SEED,
        *extra,
        "--json",
    )
    assert status == 0, err
    return result


def files_under(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*"))


# --- what kbn train --save writes ------------------------------------------------------------


def test_train_save_writes_the_card_and_its_confusion_png_beside_the_model(run):
    model_path, _, _ = run
    assert card_path(model_path) == model_path.with_name("tiny.card.md")
    assert confusion_path(card_path(model_path)) == model_path.with_name("tiny.card.confusion.png")
    text = card_path(model_path).read_text()
    assert text.startswith("# Model card: tiny.keras\n")
    assert "![confusion matrix](tiny.card.confusion.png)" in text
    assert confusion_path(card_path(model_path)).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_card_figures_are_those_of_kbn_evaluate_json(run):
    model_path, spec, _ = run
    result = evaluate_json(model_path, spec)
    text = card_path(model_path).read_text()
    names = {"training": "train", "validation": "val", "test": "test"}

    rows = table_after(text, "## Evaluation")
    assert [names[r[0]] for r in rows] == ["train", "val", "test"]
    for split, n, accuracy, error, loss in rows:
        expected = result["splits"][names[split]]
        assert int(n) == expected["n"]
        assert float(accuracy) == pytest.approx(expected["accuracy"], abs=5e-5)
        assert float(loss) == pytest.approx(expected["loss"], abs=5e-5)
        p, count = expected["accuracy"], expected["n"]
        assert float(error) == pytest.approx(math.sqrt(p * (1 - p) / count), abs=5e-5)

    per_class = table_after(text, "### Per class")
    assert [row[0] for row in per_class] == list(CLASS_NAMES) == result["class_names"]
    for i, row in enumerate(per_class):
        for j, split in enumerate(("train", "val", "test")):
            cell, n = row[1 + 2 * j], int(row[2 + 2 * j])
            expected = result["splits"][split]
            assert n == sum(expected["confusion"][i])
            accuracy, error = (float(part) for part in cell.split(" ± "))
            assert accuracy == pytest.approx(expected["per_class"][CLASS_NAMES[i]], abs=5e-5)
            assert error == pytest.approx(standard_error(accuracy, n), abs=1e-4)

    matrix = table_after(text, "### Confusion matrix (test split)")
    assert [[int(c) for c in row[1:]] for row in matrix] == result["splits"]["test"]["confusion"]


def test_card_records_the_data_the_settings_the_time_and_the_versions(run):
    model_path, spec, outcome = run
    text = card_path(model_path).read_text()
    data = dict(table_after(text, "## Training data"))
    assert data["SPEC"] == f"`{spec}`"
    assert data["split seed"] == str(SEED)
    assert data["examples"] == (
        f"{NUM_TRAIN - VAL_SIZE} training, {VAL_SIZE} validation, {NUM_TEST} test"
    )
    assert data["class names"] == ", ".join(CLASS_NAMES)
    settings = dict(table_after(text, "Settings (`kbn.TrainConfig`, as the run recorded them):"))
    assert settings["`epochs`"] == f"`{EPOCHS}`"
    assert settings["`batch_size`"] == f"`{BATCH_SIZE}`"
    assert settings["`seed`"] == f"`{SEED}`"
    timing = dict(table_after(text, "Time and machine:"))
    assert timing["epochs run"] == f"{EPOCHS} of {EPOCHS} (finished)"
    assert float(timing["training time"].removesuffix(" s")) > 0
    versions = {row[0]: row[1:] for row in table_after(text, "Versions:")}
    assert versions["keras"] == [keras.__version__, keras.__version__]
    assert text.count(NOT_RECORDED) == 1  # the introduction's, saying what it would mark


def test_card_caveats_name_the_input_size_the_preprocessing_and_the_classes(run):
    model_path, _, _ = run
    caveats = card_path(model_path).read_text().split("## Caveats and limits\n")[1]
    assert "4 × 4 × 1 raw values" in caveats
    assert "multiplies them by 1/255 and subtracts the mean of its training images" in caveats
    assert f"It knows 3 classes ({', '.join(CLASS_NAMES)})" in caveats
    assert "Measured on one split" in caveats and f"split seed {SEED}" in caveats
    assert "not known to be held out" not in caveats


def test_card_of_a_whitened_model_with_principal_components_lists_them_and_their_caveat(
    run, tmp_path
):
    _, spec, _ = run
    dataset = load_data(spec, val_size=VAL_SIZE, seed=SEED)
    model = build_mlp(
        [4], 3, adapt=dataset.train.x, whiten=0.1, pca=5, class_names=CLASS_NAMES, seed=0
    )
    path = tmp_path / "pca.keras"
    model.save(path)
    write_card(path, dataset)
    text = card_path(path).read_text()
    assert "pca (the 5 leading principal components of the training inputs)" in text
    caveats = text.split("## Caveats and limits\n")[1]
    assert "It whitens its inputs" in caveats
    assert "only through its 5 leading principal components" in caveats


def test_the_model_file_carries_its_training_record(run):
    model_path, spec, _ = run
    record = read_record(model_path)
    assert record["data"]["spec"] == spec and record["data"]["seed"] == SEED
    assert record["data"]["class_names"] == list(CLASS_NAMES)
    assert record["settings"]["epochs"] == EPOCHS and record["epochs_run"] == EPOCHS
    assert record["versions"]["keras"] == keras.__version__


# --- the record in the .keras file -------------------------------------------------------


def test_a_stored_record_leaves_the_model_loading_as_before(run, tmp_path):
    model_path, _, _ = run
    model = load_model(model_path)
    path = tmp_path / "again.keras"
    shutil.copy(model_path, path)
    store_record(path, {"note": "replaced"})
    import zipfile

    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        metadata = json.loads(archive.read(METADATA))
    assert sorted(names) == sorted(zipfile.ZipFile(model_path).namelist())
    assert metadata[KEY] == {"note": "replaced"} and "keras_version" in metadata
    x = np.zeros((2, *IMAGE_SHAPE), np.uint8)
    np.testing.assert_array_equal(
        load_model(path).predict(x, verbose=0), model.predict(x, verbose=0)
    )


def test_a_model_saved_by_keras_alone_has_no_record(tmp_path):
    model = build_mlp([4], 3, input_shape=IMAGE_SHAPE)
    model.save(tmp_path / "plain.keras")
    assert read_record(tmp_path / "plain.keras") is None


# --- kbn evaluate --card ---------------------------------------------------------------------


def test_evaluate_card_reads_the_training_record_from_a_copied_model(run, tmp_path):
    model_path, spec, _ = run
    copy = tmp_path / "copy.keras"
    shutil.copy(model_path, copy)
    card = tmp_path / "out" / "copy.md"
    result = evaluate_json(copy, spec, "--card", card)
    assert result["card"] == str(card)
    assert result["card_confusion_png"] == str(tmp_path / "out" / "copy.confusion.png")
    text = card.read_text()
    assert dict(table_after(text, "## Training data"))["split seed"] == str(SEED)
    evaluation = text.split("## Evaluation\n")[1].replace("copy.confusion", "tiny.card.confusion")
    assert evaluation == card_path(model_path).read_text().split("## Evaluation\n")[1]


def test_evaluate_card_of_a_model_without_a_record_says_not_recorded(run, tmp_path):
    model_path, spec, _ = run
    plain = tmp_path / "plain.keras"
    load_model(model_path).save(plain)
    card = tmp_path / "plain.md"
    evaluate_json(plain, spec, "--card", card)
    text = card.read_text()
    training = text.split("## Training\n")[1].split("## Evaluation data")[0]
    assert training.strip().startswith(f"Settings, time and machine: {NOT_RECORDED}.")
    assert "`eta`" not in text and "split seed | 3" not in training
    assert f"The data it trained on: {NOT_RECORDED}" in text
    assert "data whose SPEC was not recorded" in text


def test_evaluate_card_on_another_cut_says_the_validation_split_may_hold_training_examples(
    run, tmp_path
):
    model_path, spec, _ = run
    card = tmp_path / "val.md"
    status, _, err = cli(
        "evaluate", model_path, "--data", spec, "--split", "val", "--val-size", VAL_SIZE,
        "--seed", SEED + 1, "--card", card,
    )  # fmt: skip
    assert status == 0, err
    text = card.read_text()
    assert "The validation split is not known to be held out" in text
    assert "### Confusion matrix (validation split)" in text


def test_evaluate_without_sizes_or_seed_measures_the_models_own_validation_split(run):
    model_path, spec, trained = run
    status, result, err = cli("evaluate", model_path, "--data", spec, "--split", "val", "--json")
    assert status == 0, err
    assert result["n"] == VAL_SIZE  # not --val-size's 5000, nor the cut of seed 0
    assert result["accuracy"] == pytest.approx(trained["val_acc"], abs=1e-6)
    assert "note:" not in err


def test_evaluate_on_another_seed_notes_that_its_validation_split_may_hold_training_examples(
    run,
):
    model_path, spec, _ = run
    status, _, err = cli(
        "evaluate", model_path, "--data", spec, "--split", "val", "--seed", SEED + 1, "--json"
    )
    assert status == 0, err
    assert err.startswith(f"note: {model_path} was trained on another cut of its data")
    assert f"--seed {SEED})" in err and f"--seed {SEED + 1})" in err
    assert "may hold examples it learnt from" in err


def test_evaluate_takes_the_test_split_from_the_runs_test_data_unless_given(tmp_path):
    x, y = synthetic.make_images(NUM_TRAIN, 0, len(CLASS_NAMES), IMAGE_SHAPE)
    np.savez(tmp_path / "pool.npz", x_train=x, y_train=y, class_names=np.array(CLASS_NAMES))
    for name, (n, seed) in {"test.npz": (40, 1), "other.npz": (25, 2)}.items():
        x_test, y_test = synthetic.make_images(n, seed, len(CLASS_NAMES), IMAGE_SHAPE)
        np.savez(tmp_path / name, x_train=x_test, y_train=y_test, class_names=np.array(CLASS_NAMES))
    pool, model_path = f"npz:{tmp_path / 'pool.npz'}", tmp_path / "m.keras"
    status, trained, err = cli(
        "train", "--data", pool, "--test-data", f"npz:{tmp_path / 'test.npz'}",
        "--val-size", VAL_SIZE, "--hidden", "8", "--epochs", 1, "--batch-size", BATCH_SIZE,
        "--logdir", tmp_path / "logs", "--save", model_path, "--no-model-card", "--json",
    )  # fmt: skip
    assert status == 0, err
    status, result, err = cli("evaluate", model_path, "--data", pool, "--json")
    assert status == 0, err
    assert result["n"] == 40
    assert result["accuracy"] == pytest.approx(trained["test_acc"], abs=1e-6)
    other = f"npz:{tmp_path / 'other.npz'}"
    status, result, err = cli(
        "evaluate", model_path, "--data", pool, "--test-data", other, "--json"
    )
    assert status == 0, err
    assert result["n"] == 25


@pytest.mark.parametrize(
    "change, held_out",
    [
        ({}, True),
        ({"val": 10}, True),  # a smaller validation split after the same training one
        ({"train": NUM_TRAIN - VAL_SIZE - 20, "val": VAL_SIZE + 20}, False),
        ({"seed": SEED + 1}, False),
        ({"spec": "npz:other.npz"}, False),
    ],
)
def test_validation_held_out_only_after_the_recorded_training_split(change, held_out):
    recorded = {"spec": "npz:d.npz", "seed": SEED, "train": NUM_TRAIN - VAL_SIZE, "val": VAL_SIZE}
    assert validation_held_out({"data": recorded}, {**recorded, **change}) is held_out
    assert validation_held_out(None, recorded) is False  # nothing recorded: not known


def test_recorded_cut_gives_load_data_the_runs_sizes_and_seed(run):
    model_path, spec, _ = run
    cut = recorded_cut(read_record(model_path), spec)
    assert cut == {
        "train_size": NUM_TRAIN - VAL_SIZE,
        "val_size": VAL_SIZE,
        "seed": SEED,
        "test_spec": None,
    }
    assert validation_held_out(read_record(model_path), load_data(spec, **cut).describe())
    assert recorded_cut(read_record(model_path), "npz:elsewhere.npz") is None
    assert recorded_cut(None, spec) is None


def test_evaluate_card_of_the_test_split_alone_lists_only_it(run, tmp_path):
    model_path, spec, _ = run
    card = tmp_path / "test.md"
    status, _, err = cli("evaluate", model_path, "--data", spec, "--card", card)
    assert status == 0, err
    rows = table_after(card.read_text(), "## Evaluation")
    assert [row[0] for row in rows] == ["test"] and rows[0][1] == str(NUM_TEST)


def plain_keras_model(folder):
    model = keras.Sequential(
        [keras.Input(IMAGE_SHAPE), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    model.save(folder / "other.keras")
    return folder / "other.keras"


def text_file(folder):
    (folder / "notes.keras").write_text("not a model\n")
    return folder / "notes.keras"


def copied_model(folder, source):
    shutil.copy(source, folder / "m.keras")
    return folder / "m.keras"


@pytest.mark.parametrize(
    "case",
    ["not-kbns-model", "not-a-model-file", "card-over-the-model", "data-of-another-shape"],
)
def test_evaluate_card_of_bad_input_exits_2_with_one_error_line_and_writes_nothing(
    case, run, tmp_path
):
    model_path, spec, _ = run
    folder = tmp_path / "work"
    folder.mkdir()
    card = folder / "card.md"
    if case == "not-kbns-model":
        model = plain_keras_model(folder)
    elif case == "not-a-model-file":
        model = text_file(folder)
    else:
        model = copied_model(folder, model_path)
    if case == "card-over-the-model":
        card = model
    if case == "data-of-another-shape":
        x, y = synthetic.make_images(40, 2, 3, (6, 6, 1))
        np.savez(tmp_path / "big.npz", x_train=x, y_train=y)
        spec = f"npz:{tmp_path / 'big.npz'}"
    before = {p: p.read_bytes() for p in folder.iterdir()}
    status, _, err = cli("evaluate", model, "--data", spec, "--val-size", 10, "--card", card)
    assert status == 2
    [line] = err.strip().splitlines()
    assert line.startswith("error: ")
    assert {p: p.read_bytes() for p in folder.iterdir()} == before


def test_write_card_of_a_model_that_is_not_kbns_raises_kbn_error_naming_it(run, tmp_path):
    _, spec, _ = run
    path = plain_keras_model(tmp_path)
    dataset = load_data(spec, val_size=VAL_SIZE, seed=SEED)
    with pytest.raises(KbnError, match="is not a kbn model") as info:
        write_card(path, dataset)
    assert str(path) in str(info.value)
    assert files_under(tmp_path) == [path.relative_to(tmp_path)]


# --- the figures -------------------------------------------------------------------------


@pytest.mark.parametrize("p, n", [(0.5, 100), (0.9, 1000), (1.0, 7), (0.0, 3)])
def test_standard_error_is_the_binomials(p, n):
    assert standard_error(p, n) == pytest.approx(math.sqrt(p * (1 - p) / n))


def test_a_datasets_description_gives_the_spec_the_sizes_and_the_split_seed(run):
    _, spec, _ = run
    dataset = load_data(spec, val_size=VAL_SIZE, seed=SEED)
    assert dataset.describe() == {
        "spec": spec,
        "test_spec": None,
        "seed": SEED,
        "train": NUM_TRAIN - VAL_SIZE,
        "val": VAL_SIZE,
        "test": NUM_TEST,
        "input_shape": list(IMAGE_SHAPE),
        "class_names": list(CLASS_NAMES),
    }


def test_model_card_off_still_stores_the_record_but_writes_no_card(run, tmp_path):
    _, spec, _ = run
    model_path = tmp_path / "quiet.keras"
    status, _, err = cli(
        "train", "--data", spec, "--val-size", VAL_SIZE, "--hidden", "4", "--epochs", 1,
        "--logdir", tmp_path / "logs", "--save", model_path, "--no-model-card", "--json",
    )  # fmt: skip
    assert status == 0, err
    assert read_record(model_path)["settings"]["model_card"] is False
    assert not card_path(model_path).exists()
    assert not confusion_path(card_path(model_path)).exists()


def test_a_card_on_another_spec_says_where_the_model_was_trained(run, tmp_path):
    model_path, spec, _ = run
    x, y = synthetic.make_images(50, 5, len(CLASS_NAMES), IMAGE_SHAPE)
    np.savez(tmp_path / "new.npz", x_train=x, y_train=y, class_names=np.array(CLASS_NAMES))
    card = tmp_path / "new.md"
    status, _, err = cli(
        "evaluate", model_path, "--data", f"npz:{tmp_path / 'new.npz'}", "--split", "train",
        "--val-size", 0, "--card", card,
    )  # fmt: skip
    assert status == 0, err
    text = card.read_text()
    assert f"Trained on `{spec}` but measured on `npz:{tmp_path / 'new.npz'}`." in text
    assert "### Confusion matrix (training split)" in text
    assert "The training split is not known to be held out" in text


def test_a_card_of_a_diverged_run_says_so_and_keeps_the_recorded_epochs(run):
    model_path, spec, _ = run
    model = load_model(model_path)
    dataset = load_data(spec, val_size=VAL_SIZE, seed=SEED)
    training = {**read_record(model_path), "diverged": "loss 1e9 > 3 x epoch 1's", "epochs_run": 1}
    text = model_card(model, dataset, evaluate(model, dataset, "test"), training=training)
    assert "- The training run diverged: loss 1e9 > 3 x epoch 1's." in text
    timing = dict(table_after(text, "Time and machine:"))
    assert timing["epochs run"] == (
        f"1 of {EPOCHS} (stopped by the divergence guard: loss 1e9 > 3 x epoch 1's)"
    )
