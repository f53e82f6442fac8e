"""Data sources -> `Dataset`: one registry keyed by a data SPEC string.

SPEC             what it reads                                            splits
---------------  -------------------------------------------------------  ----------------------
`fashion_mnist`  the four idx .gz files (`train-images-idx3-ubyte.gz`,    60k pool, 10k test
                 ...) from `data_dir`, `$KBN_DATA_DIR[/fashion-mnist]`,
                 /usr/share/datasets/fashion-mnist (Debian's
                 `dataset-fashion-mnist`), the Keras cache, else a
                 Keras download; the embedded default
`cifar10`        the official python batches (`cifar-10-batches-py/`      50k pool, 10k test
                 `data_batch_1..5`, `test_batch`) from `data_dir`,
                 `$KBN_DATA_DIR`, the Keras cache, else a Keras download
`folder:PATH`    one sub-folder of images per class (class = sorted       all of it is the pool;
                 sub-folder name), all of one size, RGB or gray;          no test
                 decoded once, then read from a cache
`npz:PATH`       arrays `x_train`, `y_train`, optional `x_test`,          as named
                 `y_test` and `class_names`

`load_pool(spec)` reads a source and checks it; `load_data(spec, ...)` shuffles the pool
with `seed` and cuts it into `train_size` training and `val_size` validation examples (the
report's protocol: 10,000 and 10,000), keeping the source's own test split or the whole
pool of `test_spec`. Images stay raw pixels (uint8 for image sources): the model owns its
preprocessing, so a saved model takes pixels exactly as a source yields them.

Bad input (a missing file, a corrupt image, labels that are not class indices) raises
`KbnError` with one line naming the source, what was received and what was expected.

>>> ds = load_data("fashion_mnist", train_size=10_000, val_size=10_000, seed=0)
>>> ds.train.x.shape, ds.val.x.shape, ds.test.x.shape, ds.num_classes
((10000, 28, 28, 1), (10000, 28, 28, 1), (10000, 28, 28, 1), 10)
"""

from __future__ import annotations

import concurrent.futures
import gzip
import hashlib
import math
import operator
import os
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from kbn.errors import KbnError
from kbn.fileio import atomic_path

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)

FASHION_MNIST_FILES = {
    "train_x": "train-images-idx3-ubyte.gz",
    "train_y": "train-labels-idx1-ubyte.gz",
    "test_x": "t10k-images-idx3-ubyte.gz",
    "test_y": "t10k-labels-idx1-ubyte.gz",
}
# Debian's `dataset-fashion-mnist`; a module constant so tests can point it elsewhere.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# PIL modes that hold one intensity per pixel (alpha, if any, is dropped).
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})

# Bump when the layout of the decoded-folder cache changes, so old files miss.
FOLDER_CACHE_VERSION = 1

# idx type codes (the third header byte), all big-endian on disk.
IDX_DTYPES = {
    0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}


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
    """

    name: str
    train: Split
    val: Split
    test: Split | None
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, `x.shape[1:]`, e.g. (28, 28, 1)."""
        return tuple(self.train.x.shape[1:])


# A loader takes the SPEC's PATH (None for named sources) and the `data_dir`, and returns
# (pool, test or None, class names or None when the source has none).
Loader = Callable[[str | None, Path | None], tuple[Split, Split | None, tuple[str, ...] | None]]


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
    val = _take(pool, order[train_size:train_size + val_size])
    return Dataset(name=spec, train=train, val=val, test=test, class_names=class_names)


def load_pool(
    spec: str, data_dir: str | os.PathLike | None = None
) -> tuple[Split, Split | None, tuple[str, ...]]:
    """Read and check a data SPEC's pool and test split, before any shuffle or cut.

    Args:
        spec: a data SPEC (see the module docstring).
        data_dir: where to look first for the files of `fashion_mnist` and `cifar10`.

    Returns:
        `(pool, test, class_names)`: test is None when the source has no test split.
    """
    key, path = _parse_spec(spec)
    data_dir = None if data_dir is None else Path(data_dir).expanduser()
    pool, test, class_names = _REGISTRY[key](path, data_dir)
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
    source: str, pool: Split, test: Split | None, class_names: tuple[str, ...] | None
) -> tuple[Split, Split | None, tuple[str, ...]]:
    """Check a loader's splits and labels; return them with int64 labels and class names."""
    pool = _checked_split(source, "pool", pool)
    test = None if test is None else _checked_split(source, "test", test)
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


def _checked_split(source: str, name: str, split: Split) -> Split:
    x, y = np.asarray(split.x), np.asarray(split.y)
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


# --- fashion_mnist: idx files ------------------------------------------------------------


def _load_fashion_mnist(path, data_dir):
    folder = _find_folder_with(
        "fashion_mnist", FASHION_MNIST_FILES.values(), data_dir, fashion_mnist_search_path(),
        subfolder="fashion-mnist",
    )
    if folder is None:
        return _download_fashion_mnist()
    files = {key: folder / name for key, name in FASHION_MNIST_FILES.items()}
    # idx images are (N, 28, 28); the trailing axis makes them (N, 28, 28, 1) like RGB ones.
    pool = Split(_read_idx(files["train_x"], 3)[..., None], _read_idx(files["train_y"], 1))
    test = Split(_read_idx(files["test_x"], 3)[..., None], _read_idx(files["test_y"], 1))
    return pool, test, FASHION_MNIST_CLASSES


def fashion_mnist_search_path() -> list[Path]:
    """Folders searched, in order, for the Fashion-MNIST idx files when no data_dir is given."""
    folders = []
    if os.environ.get("KBN_DATA_DIR"):
        kbn_data = Path(os.environ["KBN_DATA_DIR"]).expanduser()
        folders += [kbn_data / "fashion-mnist", kbn_data]
    return folders + [FASHION_MNIST_SYSTEM_DIR, _keras_home() / "datasets" / "fashion-mnist"]


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read a gzipped idx file: a native-endian array of the shape its header gives.

    The header is two zero bytes, a type code, the number of dimensions, then each
    dimension as a big-endian uint32; the data follows, big-endian, row-major.
    """
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise KbnError(f"{path}: not a readable gzip idx file ({_one_line(e)})") from None
    if len(raw) < 4:
        raise KbnError(f"{path}: truncated idx file: {len(raw)} bytes, shorter than the header")
    zeros, code, dims = struct.unpack(">HBB", raw[:4])
    if zeros != 0 or code not in IDX_DTYPES:
        raise KbnError(f"{path}: not an idx file: bad magic number 0x{raw[:4].hex()}")
    if dims != ndim:
        raise KbnError(f"{path}: expected a {ndim}-d idx file, the header says {dims}-d")
    start = 4 + 4 * dims
    if len(raw) < start:
        raise KbnError(f"{path}: truncated idx file: the header is cut short")
    shape = struct.unpack(f">{dims}I", raw[4:start])
    dtype = IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) - start != expected:
        raise KbnError(
            f"{path}: truncated or corrupt idx file: the header says shape {shape} "
            f"({expected} bytes of data) but the file holds {len(raw) - start}"
        )
    return np.frombuffer(raw, dtype, offset=start).reshape(shape).astype(dtype.newbyteorder("="))


def _download_fashion_mnist():
    try:
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    except Exception as e:  # offline, proxy, disk full: whatever it is, say where to put the files
        files = FASHION_MNIST_FILES.values()
        raise KbnError(_download_failed("fashion_mnist", "fashion-mnist", files, e)) from None
    pool = Split(np.asarray(x_train)[..., None], np.asarray(y_train))
    test = Split(np.asarray(x_test)[..., None], np.asarray(y_test))
    return pool, test, FASHION_MNIST_CLASSES


# --- cifar10: python pickled batches -----------------------------------------------------


def _load_cifar10(path, data_dir):
    folder = _find_folder_with(
        "cifar10", CIFAR10_TRAIN_BATCHES + (CIFAR10_TEST_BATCH,), data_dir, cifar10_search_path(),
        subfolder=CIFAR10_FOLDER,
    )
    if folder is None:
        return _download_cifar10()
    batches = [_read_cifar_batch(folder / name) for name in CIFAR10_TRAIN_BATCHES]
    pool = Split(np.concatenate([b.x for b in batches]), np.concatenate([b.y for b in batches]))
    test = _read_cifar_batch(folder / CIFAR10_TEST_BATCH)
    return pool, test, _cifar10_class_names(folder / "batches.meta")


def cifar10_search_path() -> list[Path]:
    """Folders searched, in order, for the CIFAR-10 batches when no data_dir is given."""
    folders = []
    if os.environ.get("KBN_DATA_DIR"):
        kbn_data = Path(os.environ["KBN_DATA_DIR"]).expanduser()
        folders += [kbn_data / CIFAR10_FOLDER, kbn_data]
    keras_datasets = _keras_home() / "datasets"
    # Keras 3 extracts into `cifar-10-batches-py-target/`, older versions did not.
    return folders + [
        keras_datasets / "cifar-10-batches-py-target" / CIFAR10_FOLDER,
        keras_datasets / CIFAR10_FOLDER,
    ]


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR-10 batches without letting a tampered file run code.

    The official batches need only the numpy globals to rebuild their arrays (Keras's
    own loader allows the same set; numpy < 2 and >= 2 spell `multiarray` differently).
    `_codecs.encode` is how Python 3 writes bytes in a protocol-2 pickle, so batches
    re-pickled by Python 3 read too; it only turns a str into bytes.
    """

    ALLOWED = frozenset({
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("_codecs", "encode"),
    })

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except Exception as e:  # a corrupt pickle can raise almost anything
        raise KbnError(f"{path}: not a readable CIFAR-10 python batch ({_one_line(e)})") from None
    if not isinstance(batch, dict):
        raise KbnError(
            f"{path}: not a CIFAR-10 python batch: expected a dict, got {type(batch).__name__}"
        )
    return batch


def _read_cifar_batch(path: Path) -> Split:
    """One batch file: x uint8 of shape (N, 32, 32, 3), y of shape (N,)."""
    batch = _unpickle(path)
    if b"data" not in batch or b"labels" not in batch:
        raise KbnError(f"{path}: not a CIFAR-10 python batch: expected keys b'data' and b'labels'")
    data = np.asarray(batch[b"data"])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.dtype != np.uint8:
        raise KbnError(
            f"{path}: expected b'data' as uint8 of shape (N, 3072), "
            f"got {data.dtype} of shape {data.shape}"
        )
    # Rows hold the red, green, then blue 32x32 planes: (N, C, H, W) -> (N, H, W, C).
    x = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return Split(x, np.asarray(batch[b"labels"]))


def _cifar10_class_names(meta: Path) -> tuple[str, ...]:
    if not meta.exists():
        return CIFAR10_CLASSES
    names = _unpickle(meta).get(b"label_names")
    if names is None:
        return CIFAR10_CLASSES
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def _download_cifar10():
    try:
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as e:  # offline, proxy, disk full: whatever it is, say where to put the files
        files = CIFAR10_TRAIN_BATCHES + (CIFAR10_TEST_BATCH,)
        raise KbnError(_download_failed("cifar10", CIFAR10_FOLDER, files, e)) from None

    def channels_last(x):
        # Keras gives (N, 3, 32, 32) when its image_data_format is channels_first.
        x = np.asarray(x)
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.shape[1] == 3 else x

    pool = Split(channels_last(x_train), np.asarray(y_train).reshape(-1))
    test = Split(channels_last(x_test), np.asarray(y_test).reshape(-1))
    return pool, test, CIFAR10_CLASSES


# --- finding and downloading the named data sets -----------------------------------------


def _find_folder_with(source, names, data_dir, search_path, subfolder) -> Path | None:
    """The first folder holding all of `names`: in `data_dir` (or its `subfolder`) if given,
    else along `search_path`; None when the search path has none (time to download)."""
    names = tuple(names)

    def has_all(folder: Path) -> bool:
        return all((folder / name).is_file() for name in names)

    if data_dir is not None:
        for folder in (data_dir, data_dir / subfolder):
            if has_all(folder):
                return folder
        raise KbnError(
            f"{source}: data_dir {data_dir} does not hold {', '.join(names)} "
            f"(looked in {data_dir} and {data_dir / subfolder})"
        )
    return next((folder for folder in search_path if has_all(folder)), None)


def _keras_home() -> Path:
    # The same rule as Keras: $KERAS_HOME, else ~/.keras, else /tmp/.keras.
    if "KERAS_HOME" in os.environ:
        return Path(os.environ["KERAS_HOME"])
    home = os.path.expanduser("~")
    return Path(home if os.access(home, os.W_OK) else "/tmp") / ".keras"


def _download_failed(source: str, folder: str, files, error: Exception) -> str:
    return (
        f"could not download {source} ({type(error).__name__}: {_one_line(error)}); "
        f"put {', '.join(files)} in a folder named {folder} and pass that folder (or the "
        f"one above it) with --data-dir, or set $KBN_DATA_DIR to the folder above it"
    )


def _one_line(error: Exception, limit: int = 200) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- folder:PATH: one sub-folder of images per class ---------------------------------------


def _load_folder(path, data_dir):
    root = Path(path).expanduser()
    source = f"folder:{path}"
    class_names, files, labels = _list_image_folder(source, root)
    cache = _folder_cache_file(root, files)
    x = _read_folder_cache(cache, len(files))
    if x is None:
        x = _decode_images(source, [root / rel for rel, _, _ in files])
        _write_folder_cache(cache, x)
    return Split(x, labels), None, class_names


def _list_image_folder(source: str, root: Path):
    """Class names, (relative path, size, mtime_ns) of each image, and labels of shape (N,)."""
    if not root.exists():
        raise KbnError(
            f"{source}: {root} does not exist: expected a folder with one sub-folder "
            f"of images per class"
        )
    if not root.is_dir():
        raise KbnError(
            f"{source}: {root} is not a folder: expected one sub-folder of images per class"
        )
    with os.scandir(root) as entries:
        class_names = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    if not class_names:
        raise KbnError(
            f"{source}: {root} has no class sub-folders: expected one sub-folder of images "
            f"per class, e.g. {root / 'cat' / '0001.png'}"
        )
    files, labels = [], []
    for label, name in enumerate(class_names):
        images = sorted(_image_files(os.path.join(root, name), name))
        if not images:
            raise KbnError(
                f"{source}: class folder {root / name} holds no images: "
                f"expected files ending in {', '.join(sorted(IMAGE_EXTENSIONS))}"
            )
        files += images
        labels += [label] * len(images)
    return tuple(class_names), files, np.array(labels, dtype=np.int64)


def _image_files(folder: str, relative: str):
    """(relative path, size, mtime_ns) of every image under `folder`, hidden ones skipped.

    `relative` is `folder`'s path relative to the root, with "/" separators. Plain strings,
    not `Path`s: pathlib's parsing would cost more than the listing on 50,000 files.
    """
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                yield from _image_files(entry.path, f"{relative}/{entry.name}")
            elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                stat = entry.stat()
                yield f"{relative}/{entry.name}", stat.st_size, stat.st_mtime_ns


def _decode_images(source: str, paths: list[Path]) -> np.ndarray:
    """Decode images of one size into x uint8 of shape (N, H, W, C), C = 1 if all are gray.

    A mix of gray and colour images comes out RGB, the gray ones copied into all three
    channels (what PIL's `convert("RGB")` does).
    """
    first = _decode_image(source, paths[0])
    height, width = first.shape[:2]
    x = np.empty((len(paths), height, width, 3), dtype=np.uint8)  # (N, H, W, 3)
    gray = np.zeros(len(paths), dtype=bool)

    def store(i: int, image: np.ndarray) -> None:
        if image.ndim == 2:
            x[i, :, :, 0] = image
            gray[i] = True
        else:
            x[i] = image

    store(0, first)

    def decode_range(start: int, stop: int) -> None:
        for i in range(start, stop):
            image = _decode_image(source, paths[i])
            if image.shape[:2] != (height, width):
                raise KbnError(
                    f"{source}: {paths[i]} is {image.shape[1]}x{image.shape[0]} pixels but "
                    f"{paths[0]} is {width}x{height}: all images must have one size"
                )
            store(i, image)

    # Decoding is mostly C code that drops the GIL; chunks keep the per-task overhead small.
    workers = min(32, (os.cpu_count() or 1) + 4)
    chunk = max(1, min(512, math.ceil(len(paths) / (4 * workers))))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = [
            pool.submit(decode_range, start, min(start + chunk, len(paths)))
            for start in range(1, len(paths), chunk)
        ]
        try:
            for future in concurrent.futures.as_completed(futures):
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()  # stop decoding thousands of images after the first bad one
            raise

    if gray.all():
        return np.ascontiguousarray(x[..., :1])
    x[gray, :, :, 1:] = x[gray, :, :, :1]
    return x


def _decode_image(source: str, path: Path) -> np.ndarray:
    """One image: uint8 of shape (H, W) if gray, else (H, W, 3)."""
    from PIL import Image  # imported here: only folder sources need Pillow

    try:
        with Image.open(path) as image:
            if image.mode in GRAY_MODES:
                return np.asarray(image if image.mode == "L" else image.convert("L"))
            return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    except Exception as e:  # PIL raises many types for a corrupt file; all mean "unreadable"
        raise KbnError(f"{source}: cannot read image {path} ({_one_line(e)})") from None


# The decoded arrays of a folder are cached so that a second load skips the decoding. The
# file name holds a hash of the folder's path (to find and drop stale entries) and of its
# contents (every image's relative path, size and mtime_ns), so any change misses.


def cache_dir() -> Path:
    """Where kbn caches decoded data.

    $KBN_CACHE_DIR, else $XDG_CACHE_HOME/kbn, else ~/.cache/kbn.
    """
    if os.environ.get("KBN_CACHE_DIR"):
        return Path(os.environ["KBN_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "kbn"
    return Path.home() / ".cache" / "kbn"


def _folder_cache_file(root: Path, files) -> Path:
    import PIL

    where = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    # Another Pillow may bundle another JPEG decoder, whose pixels can differ slightly.
    version = f"kbn folder cache v{FOLDER_CACHE_VERSION}, Pillow {PIL.__version__}\n"
    contents = hashlib.sha256(version.encode())
    for rel, size, mtime_ns in files:
        contents.update(f"{rel}\0{size}\0{mtime_ns}\n".encode())
    return cache_dir() / f"folder-{where}-{contents.hexdigest()[:32]}.npz"


def _read_folder_cache(path: Path, count: int) -> np.ndarray | None:
    """The cached x uint8 of shape (count, H, W, C), or None on a miss or an unreadable file."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            x = archive["x"]
    except Exception:  # missing, truncated or corrupt: all are a miss, decode again
        return None
    if x.dtype != np.uint8 or x.ndim != 4 or len(x) != count:
        return None
    return x


def _write_folder_cache(path: Path, x: np.ndarray) -> None:
    """Write atomically and drop this folder's stale entries; a cache that cannot be
    written is skipped, never an error."""
    try:
        with atomic_path(path) as tmp:
            np.savez(tmp, x=x)  # uncompressed: loading it back is a plain read
        prefix = path.name.rsplit("-", 1)[0] + "-"
        for stale in path.parent.glob(prefix + "*.npz"):
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError:
        pass


# --- npz:PATH -----------------------------------------------------------------------------


def _load_npz(path, data_dir):
    file = Path(path).expanduser()
    source = f"npz:{path}"
    if not file.exists():
        raise KbnError(
            f"{source}: {file} does not exist: expected an .npz file with x_train and y_train"
        )
    if file.is_dir():
        raise KbnError(
            f"{source}: {file} is a folder: expected an .npz file "
            f"(use folder:{path} for a folder of images)"
        )
    try:
        archive = np.load(file, allow_pickle=False)
    except Exception as e:  # numpy raises ValueError, OSError, EOFError... for a bad file
        raise KbnError(f"{source}: {file} is not a valid .npz file ({_one_line(e)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise KbnError(
            f"{source}: {file} is a single .npy array, not an .npz archive "
            f"with x_train and y_train"
        )
    with archive:
        keys = set(archive.files)
        missing = [k for k in ("x_train", "y_train") if k not in keys]
        if missing:
            raise KbnError(
                f"{source}: {file} lacks {', '.join(missing)} "
                f"(it holds {', '.join(sorted(keys)) or 'nothing'}); "
                f"expected x_train, y_train and optionally x_test, y_test, class_names"
            )
        if ("x_test" in keys) != ("y_test" in keys):
            raise KbnError(
                f"{source}: {file} has only one of x_test and y_test: expected both or neither"
            )

        def array(key):
            try:
                return archive[key]
            except Exception as e:  # a corrupt member or an object array (pickles are refused)
                raise KbnError(
                    f"{source}: cannot read array {key} from {file} ({_one_line(e)})"
                ) from None

        pool = Split(array("x_train"), array("y_train"))
        test = Split(array("x_test"), array("y_test")) if "x_test" in keys else None
        names = _npz_class_names(source, array("class_names")) if "class_names" in keys else None
    return pool, test, names


def _npz_class_names(source: str, names: np.ndarray) -> tuple[str, ...]:
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise KbnError(
            f"{source}: class_names must be a 1-d array of strings, "
            f"got {names.dtype} of shape {names.shape}"
        )
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist())


_REGISTRY: dict[str, Loader] = {
    "fashion_mnist": _load_fashion_mnist,
    "cifar10": _load_cifar10,
    "folder:": _load_folder,
    "npz:": _load_npz,
}
