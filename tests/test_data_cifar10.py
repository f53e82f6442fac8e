"""Tests for kbn.data.cifar10: the python batches, where they are found, the unpickler that
refuses code, and every error."""

import os
import pickle

import numpy as np
import pytest
from datafiles import (
    CIFAR_PER_BATCH,
    error_of,
    isolated_env,  # noqa: F401 (an autouse fixture)
    make_cifar10,
)

from kbn.data import load_data, load_pool


@pytest.mark.parametrize("where", ["folder", "parent"])
def test_cifar10_batches_give_rgb_images_in_height_width_channel_order(tmp_path, where):
    folder = tmp_path / "cifar-10-batches-py"
    x_pool, y_pool, x_test, y_test = make_cifar10(folder)
    pool, test, names = load_pool("cifar10", data_dir=folder if where == "folder" else tmp_path)
    assert pool.x.shape == (5 * CIFAR_PER_BATCH, 32, 32, 3) and pool.x.dtype == np.uint8
    np.testing.assert_array_equal(pool.x, x_pool)
    np.testing.assert_array_equal(pool.y, y_pool)
    np.testing.assert_array_equal(test.x, x_test)
    np.testing.assert_array_equal(test.y, y_test)
    assert names == tuple(f"class{i}" for i in range(10))


def test_cifar10_without_batches_meta_uses_the_standard_names(tmp_path):
    make_cifar10(tmp_path / "cifar-10-batches-py", meta=False)
    _, _, names = load_pool("cifar10", data_dir=tmp_path)
    assert names == (
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


@pytest.mark.parametrize(
    "subfolder", ["cifar-10-batches-py-target/cifar-10-batches-py", "cifar-10-batches-py"]
)
def test_cifar10_is_found_in_the_keras_cache(tmp_path, subfolder):
    make_cifar10(tmp_path / "keras" / "datasets" / subfolder)
    assert len(load_data("cifar10", val_size=5).train) == 5 * CIFAR_PER_BATCH - 5


def test_cifar10_is_found_in_kbn_data_dir(tmp_path, monkeypatch):
    make_cifar10(tmp_path / "data" / "cifar-10-batches-py")
    monkeypatch.setenv("KBN_DATA_DIR", str(tmp_path / "data"))
    assert len(load_pool("cifar10")[1]) == CIFAR_PER_BATCH


class RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


def test_cifar10_pickle_that_would_run_code_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    make_cifar10(folder)
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"data": RunsCode(), b"labels": []}, f, protocol=2)
    message = error_of("cifar10", data_dir=tmp_path)
    assert "data_batch_3" in message and "refusing to unpickle" in message


def test_corrupt_cifar10_batch_is_an_error_naming_it(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    make_cifar10(folder)
    (folder / "test_batch").write_bytes(b"not a pickle")
    assert str(folder / "test_batch") in error_of("cifar10", data_dir=tmp_path)


def test_cifar10_batch_of_the_wrong_shape_is_an_error(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    make_cifar10(folder)
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f, protocol=2)
    assert "(N, 3072)" in error_of("cifar10", data_dir=tmp_path)
