"""`fashion_mnist`: the four gzipped idx files of Fashion-MNIST.

60,000 training images (the pool) and 10,000 test images, 28x28 gray, 10 classes. Read
from `data_dir`, `$KBN_DATA_DIR[/fashion-mnist]`, /usr/share/datasets/fashion-mnist
(Debian's `dataset-fashion-mnist`), the Keras cache, else a Keras download (see
`kbn.data.fetch`).
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from kbn.data.fetch import find_folder, keras_datasets_dir, keras_download, one_line
from kbn.errors import KbnError

CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FILES = {
    "train_x": "train-images-idx3-ubyte.gz",
    "train_y": "train-labels-idx1-ubyte.gz",
    "test_x": "t10k-images-idx3-ubyte.gz",
    "test_y": "t10k-labels-idx1-ubyte.gz",
}
# The folder name looked for inside data_dir, $KBN_DATA_DIR and the Keras cache.
FOLDER = "fashion-mnist"
# Debian's `dataset-fashion-mnist`; a module constant so tests can point it elsewhere.
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

# idx type codes (the third header byte), all big-endian on disk.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def load(
    data_dir: Path | None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], tuple[str, ...]]:
    """Fashion-MNIST from the first folder that holds its idx files, else from Keras.

    Args:
        data_dir: the folder holding the four files (or a folder above it holding
            `fashion-mnist/`); None searches `$KBN_DATA_DIR`, the system folder and the
            Keras cache, then downloads.

    Returns:
        `((x, y), (x_test, y_test), CLASSES)`: x uint8 of shape (N, 28, 28, 1), y of shape (N,).
    """
    folder = find_folder(
        "fashion_mnist",
        FILES.values(),
        data_dir,
        FOLDER,
        elsewhere=[SYSTEM_DIR, keras_datasets_dir() / FOLDER],
    )
    if folder is None:
        (x, y), (x_test, y_test) = keras_download("fashion_mnist", FOLDER, FILES.values())
    else:
        files = {key: folder / name for key, name in FILES.items()}
        x, y = _read_idx(files["train_x"], 3), _read_idx(files["train_y"], 1)
        x_test, y_test = _read_idx(files["test_x"], 3), _read_idx(files["test_y"], 1)
    # Images come as (N, 28, 28); the trailing axis makes them (N, 28, 28, 1) like RGB ones.
    pool = (np.asarray(x)[..., None], np.asarray(y))
    test = (np.asarray(x_test)[..., None], np.asarray(y_test))
    return pool, test, CLASSES


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read a gzipped idx file: a native-endian array of the shape its header gives.

    The header is two zero bytes, a type code, the number of dimensions, then each
    dimension as a big-endian uint32; the data follows, big-endian, row-major.

    Raises:
        KbnError: the file is not gzip, not idx, not `ndim`-d, or cut short.
    """
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise KbnError(f"{path}: not a readable gzip idx file ({one_line(e)})") from None
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
