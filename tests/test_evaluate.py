"""Tests for kbn.inference.evaluate: load_model's errors and evaluate's figures against a hand
count, on a tiny synthetic data set and a model trained for two epochs."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import synthetic

from kbn.data import Dataset, Split, load_data
from kbn.errors import KbnError
from kbn.inference.evaluate import evaluate, load_model
from kbn.nn.builder import build_mlp
from kbn.training import TrainConfig, train

NUM_TRAIN = 300  # the pool: NUM_TRAIN - VAL_SIZE train, VAL_SIZE val
NUM_TEST = 100
VAL_SIZE = 50
NUM_CLASSES = 3
IMAGE_SHAPE = (4, 4, 1)


def make_images(n, seed, num_classes=NUM_CLASSES, shape=IMAGE_SHAPE):
    return synthetic.make_images(n, seed, num_classes, shape)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(model, dataset, saved model path): two epochs of a width-8 net, saved as .keras."""
    root = tmp_path_factory.mktemp("evaluate")
    x_train, y_train = make_images(NUM_TRAIN, 0)
    x_test, y_test = make_images(NUM_TEST, 1)
    np.savez(root / "data.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    dataset = load_data(f"npz:{root / 'data.npz'}", val_size=VAL_SIZE, seed=0)
    model = build_mlp([8], NUM_CLASSES, adapt=dataset.train.x, seed=0)
    config = TrainConfig(
        epochs=2,
        batch_size=32,
        logdir=str(root / "logs"),
        run_name="tiny",
        save=str(root / "m.keras"),
        verbose=0,
    )
    result = train(model, dataset, config)
    return model, dataset, result.model_path


def hand_figures(model, split):
    """(accuracy, mean cross-entropy, correct count) from the model's logits, by hand."""
    logits = np.asarray(model.predict(split.x, verbose=0), np.float64)  # (N, K)
    correct = int(np.sum(np.argmax(logits, axis=1) == split.y))
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # (N, K)
    loss = -float(np.mean(log_probs[np.arange(len(split)), split.y]))
    return correct / len(split), loss, correct


def with_test(dataset, x, y, class_names=None):
    """`dataset` with (x, y) as its test split (and, if given, other class names)."""
    return dataclasses.replace(
        dataset,
        test=Split(x, np.asarray(y, np.int64)),
        class_names=class_names or dataset.class_names,
    )


# --- load_model ----------------------------------------------------------------------------


def test_load_model_gives_back_the_saved_model(trained, tmp_path):
    model, dataset, path = trained
    loaded = load_model(str(path))
    x = dataset.test.x[:20]
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )


def test_load_model_of_a_missing_file_names_the_path(tmp_path):
    path = tmp_path / "missing.keras"
    with pytest.raises(KbnError, match="does not exist") as info:
        load_model(path)
    assert str(path) in str(info.value)


def damage_text(data):
    return b"not a model, just text\n"


def damage_first_100_bytes(data):
    return data[:100]


def damage_cut_tail(data):
    return data[:-10]


def damage_zeroed_middle(data):
    # The zip directory at the end survives, so it still looks like a zip archive.
    return data[:200] + bytes(len(data) - 600) + data[-400:]


@pytest.mark.parametrize(
    "damage",
    [damage_text, damage_first_100_bytes, damage_cut_tail, damage_zeroed_middle],
    ids=["not-a-zip", "truncated-to-100-bytes", "tail-cut-off", "zeroed-middle"],
)
def test_load_model_of_a_damaged_file_raises_kbn_error_naming_the_path(damage, trained, tmp_path):
    path = tmp_path / "damaged.keras"
    path.write_bytes(damage(trained[2].read_bytes()))
    with pytest.raises(KbnError) as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_load_model_of_a_zip_that_is_not_a_keras_model_raises_kbn_error(tmp_path):
    path = tmp_path / "arrays.keras"
    with open(path, "wb") as f:
        np.savez(f, x=np.zeros(3))  # an .npz is a zip archive too
    with pytest.raises(KbnError) as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_load_model_wants_the_keras_suffix(trained, tmp_path):
    path = tmp_path / "model.zip"
    shutil.copy(trained[2], path)
    with pytest.raises(KbnError, match=".keras") as info:
        load_model(path)
    assert str(path) in str(info.value)


# --- evaluate ------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_evaluate_matches_a_hand_count_of_argmax_hits(split, trained):
    model, dataset, _ = trained
    part = getattr(dataset, split)
    accuracy, loss, _ = hand_figures(model, part)
    assert 0.5 < accuracy < 1.0  # learnt something, and a wrong count would show
    result = evaluate(model, dataset, split)
    assert list(result["splits"]) == [split]
    assert result["n"] == result["splits"][split]["n"] == len(part)
    assert result["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert result["splits"][split]["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert result["loss"] == pytest.approx(loss, rel=1e-4)


def test_evaluate_defaults_to_the_test_split(trained):
    model, dataset, _ = trained
    result = evaluate(model, dataset)
    assert list(result["splits"]) == ["test"]
    assert result["n"] == NUM_TEST


def test_evaluate_of_the_loaded_model_equals_the_trained_one(trained):
    model, dataset, path = trained
    expected = evaluate(model, dataset, "test")
    result = evaluate(load_model(path), dataset, "test")
    assert result["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-6)
    assert result["loss"] == pytest.approx(expected["loss"], rel=1e-5)


def test_evaluate_all_weights_accuracy_by_n(trained):
    model, dataset, _ = trained
    result = evaluate(model, dataset, "all")
    splits = result["splits"]
    assert list(splits) == ["train", "val", "test"]
    assert [s["n"] for s in splits.values()] == [NUM_TRAIN - VAL_SIZE, VAL_SIZE, NUM_TEST]
    assert result["n"] == NUM_TRAIN + NUM_TEST
    correct = sum(hand_figures(model, getattr(dataset, name))[2] for name in splits)
    assert result["accuracy"] == pytest.approx(correct / result["n"], abs=1e-6)
    # Weighted by n, not the plain mean of three accuracies (which differ here).
    accuracies = [s["accuracy"] for s in splits.values()]
    assert len(set(accuracies)) > 1
    plain_mean = float(np.mean(accuracies))
    assert result["accuracy"] != pytest.approx(plain_mean, abs=1e-6)
    weighted_loss = sum(s["loss"] * s["n"] for s in splits.values()) / result["n"]
    assert result["loss"] == pytest.approx(weighted_loss, rel=1e-9)


def test_evaluate_all_skips_empty_and_missing_splits(trained):
    model, dataset, _ = trained
    empty = Split(dataset.val.x[:0], dataset.val.y[:0])
    partial = dataclasses.replace(dataset, val=empty, test=None)
    result = evaluate(model, partial, "all")
    assert list(result["splits"]) == ["train"]
    assert result["n"] == len(dataset.train)


@pytest.mark.parametrize("split", ["test", "val"])
def test_evaluate_of_a_missing_split_raises_kbn_error(split, trained):
    model, dataset, _ = trained
    empty = Split(dataset.val.x[:0], dataset.val.y[:0])
    partial = dataclasses.replace(dataset, val=empty, test=None)
    with pytest.raises(KbnError, match=f"no {split} split"):
        evaluate(model, partial, split)


@pytest.mark.parametrize(
    "shape", [(6, 6, 1), (4, 4, 3), (16,)], ids=["larger-images", "rgb", "flat-same-size"]
)
def test_evaluate_on_another_input_shape_raises_kbn_error(shape, trained):
    model, dataset, _ = trained
    x, y = make_images(20, 2, shape=shape if len(shape) == 3 else IMAGE_SHAPE)
    other = Dataset(
        name="other",
        train=Split(x.reshape((20,) + shape), y),
        val=Split(x[:0].reshape((0,) + shape), y[:0]),
        test=None,
        class_names=dataset.class_names,
    )
    with pytest.raises(KbnError) as info:
        evaluate(model, other, "train")
    assert str(IMAGE_SHAPE) in str(info.value) and str(shape) in str(info.value)


def test_evaluate_on_labels_beyond_the_models_classes_raises_kbn_error(trained):
    model, dataset, _ = trained
    x, y = make_images(NUM_TEST, 3, num_classes=6)
    assert y.max() == 5
    other = with_test(dataset, x, y, class_names=tuple(str(i) for i in range(6)))
    with pytest.raises(KbnError, match=f"{NUM_CLASSES} classes"):
        evaluate(model, other, "test")


def test_evaluate_on_a_dataset_declaring_more_classes_raises_kbn_error(trained):
    model, dataset, _ = trained
    other = dataclasses.replace(dataset, class_names=tuple("abcdef"))
    with pytest.raises(KbnError, match=f"{NUM_CLASSES} classes"):
        evaluate(model, other, "test")


def test_evaluate_on_a_subset_of_the_models_classes_works(trained):
    model, dataset, _ = trained
    keep = dataset.test.y < 2
    other = with_test(dataset, dataset.test.x[keep], dataset.test.y[keep])
    other = dataclasses.replace(
        other,
        train=Split(dataset.train.x[dataset.train.y < 2], dataset.train.y[dataset.train.y < 2]),
        val=Split(dataset.val.x[:0], dataset.val.y[:0]),
        class_names=("0", "1"),
    )
    accuracy, _, _ = hand_figures(model, other.test)
    result = evaluate(model, other, "test")
    assert result["n"] == int(keep.sum())
    assert result["accuracy"] == pytest.approx(accuracy, abs=1e-6)


# --- per-class accuracy and the confusion matrix -------------------------------------------


def hand_confusion(model, split, num_classes=NUM_CLASSES):
    """Counts [true, predicted] by a loop over the examples."""
    predicted = np.argmax(model.predict(split.x, verbose=0), axis=1)
    counts = np.zeros((num_classes, num_classes), int)
    for true, guess in zip(split.y, predicted):
        counts[true, guess] += 1
    return counts


@pytest.mark.parametrize("split", ["val", "test"])
def test_confusion_rows_are_true_classes_and_columns_predicted_ones(split, trained):
    model, dataset, _ = trained
    part = getattr(dataset, split)
    counts = hand_confusion(model, part)
    assert (counts - np.diag(np.diag(counts))).sum() > 0  # mistakes, off the diagonal
    result = evaluate(model, dataset, split)
    assert result["confusion"] == counts.tolist() == result["splits"][split]["confusion"]
    assert list(np.sum(result["confusion"], axis=1)) == list(
        np.bincount(part.y, minlength=NUM_CLASSES)
    )
    assert np.trace(result["confusion"]) / result["n"] == pytest.approx(
        result["accuracy"], abs=1e-6
    )


def test_per_class_accuracy_is_each_classs_hits_over_its_examples(trained):
    model, dataset, _ = trained
    predicted = np.argmax(model.predict(dataset.test.x, verbose=0), axis=1)
    result = evaluate(model, dataset, "test")
    assert result["class_names"] == list(dataset.class_names)
    assert list(result["per_class"]) == list(dataset.class_names)
    for k, name in enumerate(dataset.class_names):
        mine = dataset.test.y == k
        assert result["per_class"][name] == pytest.approx(np.mean(predicted[mine] == k), abs=1e-12)


def test_all_sums_the_confusion_matrices_of_the_splits(trained):
    model, dataset, _ = trained
    result = evaluate(model, dataset, "all")
    total = sum(hand_confusion(model, getattr(dataset, s)) for s in ("train", "val", "test"))
    assert result["confusion"] == total.tolist()
    assert np.sum(result["confusion"]) == result["n"]


def test_a_class_without_examples_has_no_accuracy(trained):
    model, dataset, _ = trained
    keep = dataset.test.y < 2
    result = evaluate(model, with_test(dataset, dataset.test.x[keep], dataset.test.y[keep]), "test")
    assert result["per_class"]["2"] is None
    assert np.sum(result["confusion"][2]) == 0
    assert result["per_class"]["0"] is not None


def test_the_models_own_class_names_label_the_figures(trained, tmp_path):
    model, dataset, _ = trained
    named = named_copy(model, ("cat", "dog", "ship"), tmp_path)
    result = evaluate(named, dataset, "test")  # the data set's names are "0", "1", "2"
    assert result["class_names"] == ["cat", "dog", "ship"]
    assert list(result["per_class"]) == ["cat", "dog", "ship"]
    assert result["confusion"] == evaluate(model, dataset, "test")["confusion"]


def test_data_whose_class_names_differ_from_the_models_raises_kbn_error(trained, tmp_path):
    model, dataset, _ = trained
    named = named_copy(model, ("cat", "dog", "ship"), tmp_path)
    other = dataclasses.replace(dataset, class_names=("dog", "cat", "ship"))
    with pytest.raises(KbnError, match="cat") as info:
        evaluate(named, other, "test")
    assert "label i must mean the same class" in str(info.value)


def named_copy(model, names, tmp_path):
    """`model` with the same weights, built with class names."""
    from kbn.nn.builder import class_names

    copy = build_mlp([8], NUM_CLASSES, input_shape=IMAGE_SHAPE, class_names=names)
    copy.set_weights(model.get_weights())
    copy.save(tmp_path / "named.keras")
    loaded = load_model(tmp_path / "named.keras")
    assert class_names(loaded) == list(names)
    return loaded


def test_plot_confusion_writes_a_png_of_the_matrix(tmp_path):
    from PIL import Image

    from kbn.plots.figures import plot_confusion

    path = plot_confusion(
        [[5, 1, 0], [2, 3, 1], [0, 0, 0]],
        ["cat", "dog", "ship"],
        tmp_path / "sub" / "confusion.png",
        title="tiny",
    )
    assert path == tmp_path / "sub" / "confusion.png"
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 100


@pytest.mark.parametrize(
    "matrix, names",
    [([[1, 2], [3, 4]], ["a", "b", "c"]), ([[1, 2, 3]], ["a"]), ([[1, -1], [0, 1]], ["a", "b"])],
    ids=["names-mismatch", "not-square", "negative"],
)
def test_plot_confusion_of_a_bad_matrix_raises_kbn_error(matrix, names, tmp_path):
    from kbn.plots.figures import plot_confusion

    with pytest.raises(KbnError, match="K x K"):
        plot_confusion(matrix, names, tmp_path / "c.png", title="bad")
    assert not (tmp_path / "c.png").exists()


# --- kbn evaluate --------------------------------------------------------------------------


def test_cli_evaluate_json_has_per_class_confusion_and_the_png(trained, tmp_path, capsys):
    from kbn.cli import main

    model, dataset, path = trained
    png = tmp_path / "confusion.png"
    status = main(
        [
            "evaluate",
            str(path),
            "--data",
            f"npz:{path.parent / 'data.npz'}",
            "--confusion",
            str(png),
            "--json",
        ]
    )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["class_names"] == list(dataset.class_names)
    assert result["confusion"] == hand_confusion(model, dataset.test).tolist()
    assert set(result["per_class"]) == set(dataset.class_names)
    assert result["confusion_png"] == str(png) and png.stat().st_size > 0


def test_cli_evaluate_prints_the_per_class_accuracy_on_each_splits_line(trained, capsys):
    from kbn.cli import main

    model, dataset, path = trained
    status = main(["evaluate", str(path), "--data", f"npz:{path.parent / 'data.npz'}"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    [line] = captured.out.strip().splitlines()
    per_class = evaluate(model, dataset, "test")["per_class"]
    assert line.startswith("test: accuracy")
    assert line.endswith("per class: " + ", ".join(f"{c} {a:.4f}" for c, a in per_class.items()))
