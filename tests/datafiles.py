"""Small synthetic files in each data format, and the fixture that keeps the data tests off
/usr/share/datasets, ~/.keras and the network; shared by tests/test_data*.py.

A test module takes the fixture by importing it:

    from datafiles import isolated_env  # noqa: F401 (an autouse fixture)
"""

import gzip
import pickle
import struct

import numpy as np
import pytest
from PIL import Image

from kbn.data import cifar10, fashion_mnist, load_data
from kbn.errors import KbnError

NUM_TRAIN = 12
NUM_TEST = 6
CIFAR_PER_BATCH = 3
IMAGE_HEIGHT, IMAGE_WIDTH = 5, 7
POOL_SIZE = 40


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """Point every place the loaders look (and the cache) into tmp_path."""
    for name in ("KBN_DATA_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("KBN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "no-system-data")


# --- writers of small synthetic files in each format -------------------------------------


def write_idx(path, array, code=0x08):
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(">u1").tobytes())


def make_fashion_mnist(folder, seed=0):
    """The four idx files of a tiny Fashion-MNIST; returns (x_train, y_train, x_test, y_test)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = (
        rng.integers(0, 256, (NUM_TRAIN, 28, 28), dtype=np.uint8),
        np.arange(NUM_TRAIN, dtype=np.uint8) % 10,
        rng.integers(0, 256, (NUM_TEST, 28, 28), dtype=np.uint8),
        np.arange(NUM_TEST, dtype=np.uint8)[::-1] % 10,
    )
    for name, array in zip(fashion_mnist.FILES.values(), arrays):
        write_idx(folder / name, array)
    return arrays


def write_cifar_batch(path, x, labels):
    """x: uint8 of shape (N, 32, 32, 3), stored the official way as (N, 3072) planes."""
    rows = x.transpose(0, 3, 1, 2).reshape(len(x), 3 * 32 * 32)
    batch = {b"batch_label": b"synthetic", b"labels": [int(v) for v in labels], b"data": rows}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


def make_cifar10(folder, meta=True):
    """A tiny cifar-10-batches-py folder; returns (x_pool, y_pool, x_test, y_test)."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for name in cifar10.TRAIN_BATCHES:
        x = rng.integers(0, 256, (CIFAR_PER_BATCH, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, CIFAR_PER_BATCH)
        write_cifar_batch(folder / name, x, y)
        xs.append(x)
        ys.append(y)
    x_test = rng.integers(0, 256, (CIFAR_PER_BATCH, 32, 32, 3), dtype=np.uint8)
    y_test = np.array([9, 0, 4])
    write_cifar_batch(folder / "test_batch", x_test, y_test)
    if meta:
        names = [f"class{i}".encode() for i in range(10)]
        with open(folder / "batches.meta", "wb") as f:
            pickle.dump({b"label_names": names, b"num_vis": 3072}, f, protocol=2)
    return np.concatenate(xs), np.concatenate(ys), x_test, y_test


def save_image(path, pixels):
    """pixels: uint8 of shape (H, W) for gray or (H, W, 3) for RGB."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def gray(value, size=(IMAGE_HEIGHT, IMAGE_WIDTH)):
    return np.full(size, value, dtype=np.uint8)


def rgb(r, g, b, size=(IMAGE_HEIGHT, IMAGE_WIDTH)):
    return np.stack([gray(r, size), gray(g, size), gray(b, size)], axis=-1)


def make_rgb_folder(root, per_class=3, classes=("cat", "dog", "bird")):
    for label, name in enumerate(classes):
        for i in range(per_class):
            save_image(root / name / f"{i:03d}.png", rgb(10 * label, i, 200))
    return root


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return f"npz:{path}"


def id_pool(tmp_path, n=POOL_SIZE):
    """An npz pool whose x holds each example's own index, to follow it through the cut."""
    ids = np.arange(n)
    return write_npz(tmp_path / "ids.npz", x_train=ids.reshape(n, 1), y_train=ids % 4)


def error_of(spec, **kwargs) -> str:
    with pytest.raises(KbnError) as info:
        load_data(spec, val_size=0, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message
