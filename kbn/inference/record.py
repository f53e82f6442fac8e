"""The training record a `.keras` file carries: what `kbn train` knew when it saved the model.

A saved model holds its network and weights but not how it was trained. `kbn train
--save` adds the run's record to the archive's `metadata.json` (Keras's own file of
facts about the save: its version and date) under the key `kbn_training`, so that the
record travels with the model when it is copied or renamed, and a later model card
(`kbn evaluate --card`) reads the training settings from the model itself:

    M.keras (a zip archive)
        config.json, model.weights.h5    Keras's: the network and its weights
        metadata.json                    Keras's keys, and kbn_training:
            settings       the run's TrainConfig, as summary.json records it
            data           {spec, test_spec, seed, train, val, test, class_names}
            started, epochs_run, seconds, seconds_per_epoch, diverged, stopped_early
            machine, versions (`environment()`)

Keras loads the file as before: it reads only its own keys of metadata.json.
"""

import importlib.metadata
import json
import os
import pathlib
import platform
import shutil
import zipfile
from typing import Any

from kbn.errors import KbnError
from kbn.fileio import atomic_path

METADATA = "metadata.json"
KEY = "kbn_training"
LIBRARIES = ("kbn-keras", "keras", "tensorflow", "numpy")


def environment() -> dict[str, Any]:
    """The machine this process runs on and the versions of the libraries it runs.

    Returns:
        {"machine": {"platform", "processor", "cpus", "gpus": [device names]},
        "versions": {"python", "kbn-keras", "keras", "tensorflow", "numpy"}}; a
        library that is not installed has the version None.
    """
    import tensorflow as tf

    gpus = [
        tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
        for gpu in tf.config.list_physical_devices("GPU")
    ]
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cpus": os.cpu_count(),
            "gpus": gpus,
        },
        "versions": versions,
    }


def store_record(model_path: str | os.PathLike, record: dict[str, Any]) -> pathlib.Path:
    """Put `record` into the `.keras` archive at `model_path`, replacing any earlier one.

    The archive is rewritten beside the file and renamed over it: a reader sees the
    model without the record or with it, never a torn file.

    Args:
        model_path: a `.keras` file written by `model.save`.
        record: a JSON-serializable dict (see the module's docstring).

    Returns:
        The path, as a `pathlib.Path`.
    """
    path = pathlib.Path(model_path)
    with (
        atomic_path(path) as tmp,
        zipfile.ZipFile(path) as source,
        zipfile.ZipFile(tmp, "w") as target,
    ):
        for info in source.infolist():
            if info.filename == METADATA:
                metadata = json.loads(source.read(info))
                metadata[KEY] = record
                target.writestr(info, json.dumps(metadata, indent=2))
            else:
                with source.open(info) as src, target.open(info, "w") as dst:
                    shutil.copyfileobj(src, dst)
    return path


def read_record(model_path: str | os.PathLike) -> dict[str, Any] | None:
    """The training record stored in the `.keras` file at `model_path`, or None.

    None for a model saved without one (by `model.save`, or by kbn before 0.2).

    Raises:
        KbnError: the file is not a zip archive.
    """
    try:
        with zipfile.ZipFile(model_path) as archive:
            metadata = json.loads(archive.read(METADATA))
    except KeyError:
        return None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise KbnError(f"cannot read the metadata of {model_path}: {exc}") from exc
    record = metadata.get(KEY) if isinstance(metadata, dict) else None
    return record if isinstance(record, dict) else None


def recorded_cut(record: dict[str, Any] | None, spec: str) -> dict[str, Any] | None:
    """`kbn.load_data`'s arguments that split `spec` as the recorded run did.

    The same SPEC, sizes and seed give the same splits, so a model's own splits are
    `kbn.load_data(spec, **recorded_cut(read_record(path), spec))`'s, its test split
    from the run's `test_spec` too.

    Args:
        record: a training record (`read_record`), or None.
        spec: the data SPEC to load.

    Returns:
        {"train_size": int, "val_size": int, "seed": int, "test_spec": str or None},
        or None when there is no record, it is of another SPEC, or it lacks a size or
        the seed.
    """
    data = (record or {}).get("data") or {}
    if data.get("spec") != spec or not all(
        isinstance(data.get(k), int) for k in ("train", "val", "seed")
    ):
        return None
    return {
        "train_size": data["train"],
        "val_size": data["val"],
        "seed": data["seed"],
        "test_spec": data.get("test_spec"),
    }


def validation_held_out(record: dict[str, Any] | None, data: dict[str, Any]) -> bool:
    """Whether data's validation split holds none of the recorded run's training examples.

    `kbn.load_data` cuts one permutation per seed: training examples first, then the
    validation ones. The same SPEC and seed with a training split at least as large
    as the run's put every example the model learnt from before the validation split;
    another seed, or a smaller training split, may put some inside it.

    Args:
        record: a training record (`read_record`), or None (nothing is known).
        data: the data's description (`Dataset.describe()`).
    """
    trained = (record or {}).get("data") or {}
    return (
        trained.get("spec") == data.get("spec")
        and trained.get("seed") is not None
        and trained.get("seed") == data.get("seed")
        and isinstance(trained.get("train"), int)
        and data.get("train", -1) >= trained["train"]
    )
