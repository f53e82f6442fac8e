"""Load a saved kbn model and measure it on the splits of a data set."""

import pathlib
import zipfile

import keras
import numpy as np

import kbn.layers  # noqa: F401  (registers Dense and BatchNorm for loading)
from kbn.errors import KbnError

SPLITS = ("train", "val", "test")


def load_model(path):
    """The Keras model saved at `path` (a `.keras` file), or a clear KbnError.

    Raises:
        KbnError: the file is missing, truncated, or not a Keras model.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise KbnError(f"model file {path} does not exist")
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise KbnError(f"{path} is not a .keras model file (a zip archive saved by kbn train --save)")
    try:
        return keras.saving.load_model(path)
    except Exception as exc:  # Keras raises many types for damaged archives
        raise KbnError(f"cannot load the model in {path}: {type(exc).__name__}: {exc}") from exc


def evaluate(model, dataset, split="test", batch_size=1000):
    """Accuracy and loss of `model` on one split of `dataset`, or on all.

    Args:
        model: a compiled Keras classifier (`build_mlp` or a loaded model).
        dataset: a `kbn.Dataset`.
        split: `train`, `val`, `test`, or `all` (every non-empty split).
        batch_size: examples per evaluation step.

    Returns:
        dict: `splits` {name: {accuracy, loss, n}} and, for the whole
        request, `accuracy`, `loss` and `n` (weighted over the splits).

    Raises:
        KbnError: the split is missing, or the data does not fit the model
            (another input shape or more classes than the model's outputs).
    """
    names = [s for s in SPLITS if _split(dataset, s) is not None] if split == "all" else [split]
    if split != "all" and _split(dataset, split) is None:
        raise KbnError(f"{dataset.name} has no {split} split")
    _check_fits(model, dataset)
    results = {}
    for name in names:
        part = _split(dataset, name)
        loss, accuracy = model.evaluate(part.x, part.y, batch_size=batch_size, verbose=0)
        results[name] = {"accuracy": float(accuracy), "loss": float(loss), "n": len(part)}
    n = sum(r["n"] for r in results.values())
    return {
        "splits": results,
        "accuracy": sum(r["accuracy"] * r["n"] for r in results.values()) / n,
        "loss": sum(r["loss"] * r["n"] for r in results.values()) / n,
        "n": n,
    }


def _split(dataset, name):
    part = getattr(dataset, name, None)
    return part if part is not None and len(part) else None


def _check_fits(model, dataset):
    expected = tuple(model.input_shape[1:])
    if tuple(dataset.input_shape) != expected:
        raise KbnError(
            f"the model takes inputs of shape {expected} but {dataset.name} has {tuple(dataset.input_shape)}"
        )
    outputs = model.output_shape[-1]
    labels = max(int(np.max(s.y)) + 1 for s in (dataset.train, dataset.val, dataset.test)
                 if s is not None and len(s))
    if max(labels, dataset.num_classes) > outputs:
        raise KbnError(
            f"the model has {outputs} classes but {dataset.name} has {dataset.num_classes}"
        )
