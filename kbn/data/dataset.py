"""`load_data`: a data SPEC -> `Dataset`, with the SPEC registry, the shuffle and cut, and
the checks that every source's arrays go through.

A source module (`kbn.data.fashion_mnist`, `.cifar10`, `.folder`, `.npz`) only reads its
files: its `load` returns `((x, y), (x_test, y_test) or None, class names or None)` as
stored. Everything a source could get wrong is checked here, once, for all of them:
label shapes, dtypes and ranges, example counts, NaNs, an empty pool.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kbn.data import cifar10, fashion_mnist, folder, npz
from kbn.errors import KbnError

Arrays = tuple[np.ndarray, np.ndarray]  # (x, y) as a source stored them


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a data set: examples and their class indices.

    Args:
        x: raw examples of shape (N, ...): uint8 pixels of shape (N, H, W, C) for image
            sources (C = 1 for gray, 3 for RGB); an npz source keeps its own dtype and shape.
        y: int64 class indices of shape (N,), each in [0, num_classes).
    """

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True, eq=False)
class Dataset:
    """Training, validation and test splits of one data SPEC, with its class names.

    Args:
        name: the SPEC it came from, e.g. `"fashion_mnist"` or `"folder:images/train"`.
        train: the training split, x of shape (N_train, ...).
        val: the validation split (0 examples when `val_size=0`).
        test: the test split, or None when the source has none.
        class_names: one name per class; label `i` is `class_names[i]`.
        seed: the seed of the shuffle that cut train and val from the pool (`load_data`'s),
            None when unknown (a Dataset made by hand).
        test_spec: the SPEC the test split came from when it is not `name` (`load_data`'s
            `test_spec`), else None.
    """

    name: str
    train: Split
    val: Split
    test: Split | None
    class_names: tuple[str, ...]
    seed: int | None = None
    test_spec: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, `x.shape[1:]`, e.g. (28, 28, 1)."""
        return tuple(self.train.x.shape[1:])

    def describe(self) -> dict:
        """What a run and a model card record of the data: {"spec", "test_spec", "seed" (the
        split's; None when unknown), "train", "val", "test" (example counts, None for no test
        split), "input_shape", "class_names"}."""
        return {
            "spec": self.name,
            "test_spec": self.test_spec,
            "seed": self.seed,
            "train": len(self.train),
            "val": len(self.val),
            "test": None if self.test is None else len(self.test),
            "input_shape": list(self.input_shape),
            "class_names": list(self.class_names),
        }


def load_data(
    spec: str,
    *,
    train_size: int | None = None,
    val_size: int = 5000,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    test_spec: str | None = None,
) -> Dataset:
    """Load a data SPEC and cut its shuffled pool into training and validation splits.

    The pool is permuted with `np.random.default_rng(seed).permutation`; the first
    `train_size` examples are the training split and the next `val_size` the validation
    split, so one seed always gives the same, disjoint splits.

    Args:
        spec: a data SPEC: `fashion_mnist`, `cifar10`, `folder:PATH` or `npz:PATH`.
        train_size: number of training examples; None takes all of the pool that the
            validation split leaves.
        val_size: number of validation examples, 0 or more.
        seed: seed of the shuffle.
        data_dir: where to look first for the files of `fashion_mnist` and `cifar10`.
        test_spec: a second SPEC whose whole pool replaces the test split (e.g. a
            `folder:` of test images); its class names must match `spec`'s.

    Returns:
        A `Dataset` named `spec`.
    """
    train_size, val_size = _checked_sizes(train_size, val_size)
    pool, test, class_names = load_pool(spec, data_dir)
    if test_spec is not None:
        test = _test_pool(test_spec, data_dir, spec, pool, class_names)

    n = len(pool)
    if train_size is None:
        if val_size >= n:
            raise KbnError(
                f"{spec}: val_size={val_size} leaves no training examples: "
                f"the pool has only {n} examples"
            )
        train_size = n - val_size
    elif train_size + val_size > n:
        raise KbnError(
            f"{spec}: train_size={train_size} + val_size={val_size} = "
            f"{train_size + val_size} examples, but the pool has only {n}"
        )

    order = np.random.default_rng(seed).permutation(n)
    train = _take(pool, order[:train_size])
    val = _take(pool, order[train_size : train_size + val_size])
    return Dataset(
        name=spec,
        train=train,
        val=val,
        test=test,
        class_names=class_names,
        seed=seed,
        test_spec=test_spec,
    )


def load_pool(
    spec: str, data_dir: str | os.PathLike | None = None
) -> tuple[Split, Split | None, tuple[str, ...]]:
    """Read and check a data SPEC's pool and test split, before any shuffle or cut.

    Args:
        spec: a data SPEC (see `kbn.data`).
        data_dir: where to look first for the files of `fashion_mnist` and `cifar10`.

    Returns:
        `(pool, test, class_names)`: test is None when the source has no test split.
    """
    key, path = _parse_spec(spec)
    data_dir = None if data_dir is None else Path(data_dir).expanduser()
    pool, test, class_names = _REGISTRY[key](path if key.endswith(":") else data_dir)
    return _validated(spec, pool, test, class_names)


def _checked_sizes(train_size, val_size) -> tuple[int | None, int]:
    try:
        if train_size is not None:
            train_size = operator.index(train_size)
        val_size = operator.index(val_size)
    except TypeError:
        raise KbnError(
            f"train_size and val_size must be whole numbers, "
            f"got train_size={train_size!r}, val_size={val_size!r}"
        ) from None
    if train_size is not None and train_size <= 0:
        raise KbnError(f"train_size must be a positive number of examples, got {train_size}")
    if val_size < 0:
        raise KbnError(f"val_size must be 0 or more, got {val_size}")
    return train_size, val_size


def _take(split: Split, index: np.ndarray) -> Split:
    return Split(x=split.x[index], y=split.y[index])


def _test_pool(test_spec, data_dir, spec, pool, class_names) -> Split:
    test, _, test_names = load_pool(test_spec, data_dir)
    if test_names != class_names:
        raise KbnError(
            f"test data {test_spec} has classes {list(test_names)} but {spec} has "
            f"{list(class_names)}: they must be the same, in the same order"
        )
    if test.x.shape[1:] != pool.x.shape[1:]:
        raise KbnError(
            f"test data {test_spec} has examples of shape {test.x.shape[1:]} but {spec} "
            f"has {pool.x.shape[1:]}: they must match"
        )
    return test


# --- SPEC registry -----------------------------------------------------------------------

# The SPEC registry: key -> the source's loader. A named source's loader (`fashion_mnist`)
# takes the `data_dir`, where to look first for its files; a prefixed one's (`npz:`) takes
# the SPEC's PATH. Each returns (pool, test or None, class names or None when the source
# has none), pool and test as (x, y) arrays, unchecked. The argument's type depends on
# the key (`Path | None` for a named source, `str` for a prefixed one): hence `...`.
Loaded = tuple[Arrays, Arrays | None, tuple[str, ...] | None]
Loader = Callable[..., Loaded]

_REGISTRY: dict[str, Loader] = {
    "fashion_mnist": fashion_mnist.load,
    "cifar10": cifar10.load,
    "folder:": folder.load,
    "npz:": npz.load,
}


def _parse_spec(spec: str) -> tuple[str, str | None]:
    """Split `spec` into its registry key (`"folder:"` for prefixed ones) and its PATH."""
    if not isinstance(spec, str):
        raise KbnError(f"a data SPEC must be a string, got {spec!r}; expected one of {_known()}")
    prefix, colon, path = spec.partition(":")
    key = prefix + colon
    if key not in _REGISTRY:
        raise KbnError(f"unknown data SPEC {spec!r}; expected one of {_known()}")
    if colon and not path:
        raise KbnError(f"data SPEC {spec!r} needs a path after the colon, e.g. {key}PATH")
    return key, path or None


def _known() -> str:
    return ", ".join(key + "PATH" if key.endswith(":") else key for key in _REGISTRY)


# --- validation: one place, every source, every split ------------------------------------


def _validated(
    source: str,
    stored_pool: Arrays,
    stored_test: Arrays | None,
    class_names: tuple[str, ...] | None,
) -> tuple[Split, Split | None, tuple[str, ...]]:
    """Check a loader's splits and labels; return them with int64 labels and class names."""
    pool = _checked_split(source, "pool", *stored_pool)
    test = None if stored_test is None else _checked_split(source, "test", *stored_test)
    if len(pool) == 0:
        raise KbnError(f"{source}: the pool is empty: expected at least one example")

    splits = {"pool": pool} if test is None else {"pool": pool, "test": test}
    if class_names is None:
        # Without names, the classes are the labels seen: only negatives can be wrong.
        top = max(int(s.y.max()) for s in splits.values() if len(s))
        class_names = tuple(str(i) for i in range(max(top + 1, 0)))
    for name, split in splits.items():
        _check_label_range(source, name, split.y, len(class_names))
    return pool, test, tuple(class_names)


def _checked_split(source: str, name: str, x, y) -> Split:
    x, y = np.asarray(x), np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]  # Keras's own data sets store labels as (N, 1).
    if y.ndim != 1:
        raise KbnError(f"{source}: {name} labels must have shape (N,), got shape {y.shape}")
    if x.ndim < 2:
        raise KbnError(
            f"{source}: {name} examples must have shape (N, ...) with at least one "
            f"feature dimension, got shape {x.shape}"
        )
    if len(x) != len(y):
        raise KbnError(f"{source}: {name} split has {len(x)} images but {len(y)} labels")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise KbnError(f"{source}: {name} examples must be numbers, got dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.inexact):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        if bad:
            raise KbnError(
                f"{source}: {name} examples hold {bad} NaN or infinite values: "
                f"expected finite numbers"
            )
    return Split(x=x, y=_int_labels(source, name, y))


def _int_labels(source: str, name: str, y: np.ndarray) -> np.ndarray:
    """Labels as int64 class indices; float labels must be whole numbers."""
    if np.issubdtype(y.dtype, np.integer):
        return y.astype(np.int64, copy=False)
    if not np.issubdtype(y.dtype, np.floating):
        raise KbnError(
            f"{source}: {name} labels must be integer class indices, got dtype {y.dtype}"
        )
    # Keras would silently truncate a label of 1.7 to class 1: refuse it instead.
    fractional = ~np.isfinite(y) | (y != np.round(y))
    if fractional.any():
        raise KbnError(
            f"{source}: {name} labels must be whole class indices, "
            f"found {y[fractional][0].item()!r} (dtype {y.dtype})"
        )
    return y.astype(np.int64)


def _check_label_range(source: str, name: str, y: np.ndarray, num_classes: int) -> None:
    negative = y < 0
    if negative.any():
        raise KbnError(
            f"{source}: {name} label {int(y[negative][0])} is negative: "
            f"expected class indices from 0"
        )
    too_big = y >= num_classes
    if too_big.any():
        raise KbnError(
            f"{source}: {name} label {int(y[too_big][0])} is out of range: expected class "
            f"indices 0..{num_classes - 1} for {num_classes} classes"
        )
