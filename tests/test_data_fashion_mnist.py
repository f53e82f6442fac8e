"""Tests for kbn.data.fashion_mnist: the idx files, where they are found, and every error
they can raise."""

import gzip

import numpy as np
from datafiles import (
    NUM_TEST,
    NUM_TRAIN,
    error_of,
    isolated_env,  # noqa: F401 (an autouse fixture)
    make_fashion_mnist,
    write_idx,
)

from kbn.data import fashion_mnist, load_data, load_pool


def test_fashion_mnist_idx_files_give_gray_images_labels_and_names(tmp_path):
    x_train, y_train, x_test, y_test = make_fashion_mnist(tmp_path / "fm")
    pool, test, names = load_pool("fashion_mnist", data_dir=tmp_path / "fm")
    assert pool.x.shape == (NUM_TRAIN, 28, 28, 1) and pool.x.dtype == np.uint8
    np.testing.assert_array_equal(pool.x[..., 0], x_train)
    np.testing.assert_array_equal(pool.y, y_train)
    assert pool.y.dtype == np.int64
    np.testing.assert_array_equal(test.x[..., 0], x_test)
    np.testing.assert_array_equal(test.y, y_test)
    assert names == (
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


def test_fashion_mnist_data_dir_may_be_the_parent_folder(tmp_path):
    make_fashion_mnist(tmp_path / "fashion-mnist")
    pool, _, _ = load_pool("fashion_mnist", data_dir=str(tmp_path))
    assert len(pool) == NUM_TRAIN


def test_fashion_mnist_is_found_in_kbn_data_dir(tmp_path, monkeypatch):
    make_fashion_mnist(tmp_path / "data" / "fashion-mnist")
    monkeypatch.setenv("KBN_DATA_DIR", str(tmp_path / "data"))
    ds = load_data("fashion_mnist", val_size=2)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (NUM_TRAIN - 2, 2, NUM_TEST)


def test_fashion_mnist_is_found_in_the_system_folder_then_the_keras_cache(tmp_path, monkeypatch):
    make_fashion_mnist(tmp_path / "keras" / "datasets" / "fashion-mnist", seed=1)
    from_keras, _, _ = load_pool("fashion_mnist")
    x_system, *_ = make_fashion_mnist(tmp_path / "system", seed=2)
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "system")
    from_system, _, _ = load_pool("fashion_mnist")
    np.testing.assert_array_equal(from_system.x[..., 0], x_system)
    assert not np.array_equal(from_keras.x, from_system.x)


def test_fashion_mnist_data_dir_without_the_files_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    message = error_of("fashion_mnist", data_dir=tmp_path / "empty")
    assert "train-images-idx3-ubyte.gz" in message and str(tmp_path / "empty") in message


def test_truncated_idx_file_is_an_error_naming_it(tmp_path):
    make_fashion_mnist(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(raw[:-100]))
    message = error_of("fashion_mnist", data_dir=tmp_path)
    assert str(images) in message and "truncated" in message


def test_cut_gzip_stream_is_an_error_naming_the_file(tmp_path):
    make_fashion_mnist(tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:15])
    assert str(labels) in error_of("fashion_mnist", data_dir=tmp_path)


def test_idx_file_with_a_bad_magic_number_is_an_error(tmp_path):
    make_fashion_mnist(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(b"\x12\x34\x08\x01" + bytes(16)))
    message = error_of("fashion_mnist", data_dir=tmp_path)
    assert str(labels) in message and "magic" in message


def test_idx_file_of_the_wrong_rank_is_an_error(tmp_path):
    make_fashion_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros((NUM_TRAIN, 2), np.uint8))
    assert "expected a 1-d idx file" in error_of("fashion_mnist", data_dir=tmp_path)


def test_fashion_mnist_labels_and_images_of_different_counts_are_an_error(tmp_path):
    make_fashion_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(NUM_TRAIN - 1, np.uint8))
    message = error_of("fashion_mnist", data_dir=tmp_path)
    assert f"{NUM_TRAIN} images but {NUM_TRAIN - 1} labels" in message
