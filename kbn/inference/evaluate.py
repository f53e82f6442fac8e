"""Load a saved kbn model and measure it on the splits of a data set.

`evaluate` gives, per split and over the whole request, the accuracy, the
loss, the number of examples, the confusion matrix (rows: true class,
columns: predicted class) and the accuracy of each class (the diagonal over
the row sums), with the class names.
"""

import os
import pathlib
import warnings
import zipfile
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

import kbn.nn  # noqa: F401  (registers Dense and BatchNorm for loading)
from kbn.data import Dataset, Split
from kbn.errors import KbnError
from kbn.nn.builder import class_names as model_class_names

SPLITS = ("train", "val", "test")


def load_model(path: str | os.PathLike) -> keras.Model:
    """The Keras model saved at `path` (a `.keras` file), or a clear KbnError.

    Raises:
        KbnError: the file is missing, truncated, or not a Keras model.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise KbnError(f"model file {path} does not exist")
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise KbnError(
            f"{path} is not a .keras model file (a zip archive saved by kbn train --save)"
        )
    try:
        with warnings.catch_warnings():
            # A model saved before its first step (`--epochs 0`) has no optimizer slots;
            # Keras warns that it skips them, and evaluating needs none.
            warnings.filterwarnings("ignore", "Skipping variable loading for optimizer")
            return keras.saving.load_model(path)
    except Exception as exc:  # Keras raises many types for damaged archives
        raise KbnError(f"cannot load the model in {path}: {type(exc).__name__}: {exc}") from exc


def evaluate(
    model: keras.Model, dataset: Dataset, split: str = "test", batch_size: int = 1000
) -> dict[str, Any]:
    """Accuracy and loss of `model` on one split of `dataset`, or on all.

    Args:
        model: a compiled Keras classifier (`build_mlp` or a loaded model).
        dataset: a `kbn.Dataset`.
        split: `train`, `val`, `test`, or `all` (every non-empty split).
        batch_size: examples per evaluation step.

    Returns:
        dict: `class_names` (K strings, the model's own, else the data
        set's), `splits` {name: {accuracy, loss, n, per_class, confusion}}
        and, for the whole request, `accuracy`, `loss` and `n` (weighted by
        n over the splits), `per_class` and `confusion` (summed over the
        splits). `confusion` is a K x K list of lists of counts, row `i`
        the examples of true class `i`, column `j` those predicted as `j`;
        `per_class` maps each class name to its accuracy (None for a class
        with no example).

    Raises:
        KbnError: the split is missing, or the data does not fit the model
            (another input shape, more classes than the model's outputs, or
            class names other than the ones the model was trained on).
    """
    names = [s for s in SPLITS if _split(dataset, s) is not None] if split == "all" else [split]
    if split != "all" and _split(dataset, split) is None:
        hint = (
            ": give a SPEC of test images with --test-data (load_data(test_spec=...))"
            if split == "test"
            else ""
        )
        raise KbnError(f"{dataset.name} has no {split} split{hint}")
    _check_fits(model, dataset)
    classes = _class_names(model, dataset)
    results, total = {}, np.zeros((len(classes), len(classes)), np.int64)
    for name in names:
        part = _split(dataset, name)
        loss, accuracy = model.evaluate(part.x, part.y, batch_size=batch_size, verbose=0)
        matrix = confusion_matrix(model, part, len(classes), batch_size)
        total += matrix
        results[name] = {
            "accuracy": float(accuracy),
            "loss": float(loss),
            "n": len(part),
            "per_class": per_class_accuracy(matrix, classes),
            "confusion": matrix.tolist(),
        }
    n = sum(r["n"] for r in results.values())
    return {
        "class_names": classes,
        "splits": results,
        "accuracy": sum(r["accuracy"] * r["n"] for r in results.values()) / n,
        "loss": sum(r["loss"] * r["n"] for r in results.values()) / n,
        "n": n,
        "per_class": per_class_accuracy(total, classes),
        "confusion": total.tolist(),
    }


def confusion_matrix(
    model: keras.Model, split: Split, num_classes: int, batch_size: int = 1000
) -> np.ndarray:
    """Counts of (true class, predicted class) pairs of `model` on `split`.

    Args:
        model: a Keras classifier from inputs (N, ...) to logits (N, K).
        split: a `kbn.Split` with labels y of shape (N,).
        num_classes: K.
        batch_size: examples per prediction step.

    Returns:
        int64 array of shape (K, K): entry [i, j] counts the examples of
        true class i that the model puts in class j (the argmax of its
        logits); row sums are the class counts, the trace the hits.
    """
    logits = model.predict(split.x, batch_size=batch_size, verbose=0)  # (N, K)
    predicted = np.argmax(logits, axis=1)  # (N,)
    counts = np.bincount(
        np.asarray(split.y, np.int64) * num_classes + predicted, minlength=num_classes * num_classes
    )
    return counts.reshape(num_classes, num_classes)


def per_class_accuracy(
    confusion: np.ndarray, class_names: Sequence[str]
) -> dict[str, float | None]:
    """{class name: accuracy on that class's examples}, None where it has none.

    Args:
        confusion: counts of shape (K, K), rows the true classes.
        class_names: K strings.
    """
    confusion = np.asarray(confusion)
    rows = confusion.sum(axis=1)  # (K,)
    return {
        name: (float(confusion[i, i] / rows[i]) if rows[i] else None)
        for i, name in enumerate(class_names)
    }


def _class_names(model, dataset):
    """The model's class names; the data set's for a model saved without them."""
    num_classes = model.output_shape[-1]
    names = model_class_names(model)
    digits = [str(i) for i in range(num_classes)]
    data = list(dataset.class_names)
    if names == digits:  # no names in the model: the data set's, when it names every class
        return data if len(data) == num_classes else digits
    # A data set named only by digits (an .npz) cannot contradict the model's names.
    if data != digits[: len(data)] and data != names[: len(data)]:
        raise KbnError(
            f"the model's classes are {names} but {dataset.name}'s are {data}: "
            f"label i must mean the same class in both"
        )
    return names


def _split(dataset, name):
    part = getattr(dataset, name, None)
    return part if part is not None and len(part) else None


def _check_fits(model, dataset):
    expected = tuple(model.input_shape[1:])
    if tuple(dataset.input_shape) != expected:
        raise KbnError(
            f"the model takes inputs of shape {expected} but {dataset.name} has "
            f"{tuple(dataset.input_shape)}"
        )
    outputs = model.output_shape[-1]
    labels = max(
        int(np.max(s.y)) + 1
        for s in (dataset.train, dataset.val, dataset.test)
        if s is not None and len(s)
    )
    if max(labels, dataset.num_classes) > outputs:
        raise KbnError(
            f"the model has {outputs} classes but {dataset.name} has {dataset.num_classes}"
        )
