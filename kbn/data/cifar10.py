"""`cifar10`: the official python batches of CIFAR-10 (`cifar-10-batches-py/`).

`data_batch_1..5` (50,000 images, the pool) and `test_batch` (10,000), 32x32 RGB, 10
classes named by `batches.meta` when it is there. Read from `data_dir`, `$KBN_DATA_DIR`,
the Keras cache, else a Keras download (see `kbn.data.fetch`). The batches are pickles:
they are read with an unpickler that rebuilds numpy arrays and nothing else.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from kbn.data.fetch import find_folder, keras_datasets_dir, keras_download, one_line
from kbn.errors import KbnError

CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"


def load(
    data_dir: Path | None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], tuple[str, ...]]:
    """CIFAR-10 from the first folder that holds its six batches, else from Keras.

    Args:
        data_dir: the `cifar-10-batches-py` folder (or a folder above it holding one);
            None searches `$KBN_DATA_DIR` and the Keras cache, then downloads.

    Returns:
        `((x, y), (x_test, y_test), class names)`: x uint8 of shape (N, 32, 32, 3), y of
        shape (N,).
    """
    files = TRAIN_BATCHES + (TEST_BATCH,)
    keras_datasets = keras_datasets_dir()
    folder = find_folder(
        "cifar10",
        files,
        data_dir,
        FOLDER,
        # Keras 3 extracts into `cifar-10-batches-py-target/`, older versions did not.
        elsewhere=[keras_datasets / "cifar-10-batches-py-target" / FOLDER, keras_datasets / FOLDER],
    )
    if folder is None:
        (x, y), (x_test, y_test) = keras_download("cifar10", FOLDER, files)
        pool = (_channels_last(x), np.asarray(y).reshape(-1))
        test = (_channels_last(x_test), np.asarray(y_test).reshape(-1))
        return pool, test, CLASSES
    batches = [_read_batch(folder / name) for name in TRAIN_BATCHES]
    pool = (np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches]))
    test = _read_batch(folder / TEST_BATCH)
    return pool, test, _class_names(folder / "batches.meta")


def _channels_last(x) -> np.ndarray:
    # Keras gives (N, 3, 32, 32) when its image_data_format is channels_first.
    x = np.asarray(x)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.shape[1] == 3 else x


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR-10 batches without letting a tampered file run code.

    The official batches need only the numpy globals to rebuild their arrays (Keras's
    own loader allows the same set; numpy < 2 and >= 2 spell `multiarray` differently).
    `_codecs.encode` is how Python 3 writes bytes in a protocol-2 pickle, so batches
    re-pickled by Python 3 read too; it only turns a str into bytes.
    """

    ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("_codecs", "encode"),
        }
    )

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
        raise KbnError(f"{path}: not a readable CIFAR-10 python batch ({one_line(e)})") from None
    if not isinstance(batch, dict):
        raise KbnError(
            f"{path}: not a CIFAR-10 python batch: expected a dict, got {type(batch).__name__}"
        )
    return batch


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
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
    return x, np.asarray(batch[b"labels"])


def _class_names(meta: Path) -> tuple[str, ...]:
    if not meta.exists():
        return CLASSES
    names = _unpickle(meta).get(b"label_names")
    if names is None:
        return CLASSES
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
