"""Tests for kbn.data.npz: the arrays an .npz archive holds, and every error of the file
itself (the checks of its arrays' contents are kbn.data.dataset's: tests/test_data.py)."""

import numpy as np
import pytest
from datafiles import (
    error_of,
    isolated_env,  # noqa: F401 (an autouse fixture)
    write_npz,
)

from kbn.data import load_pool


def test_npz_keeps_dtype_and_shape_and_converts_whole_float_labels(tmp_path):
    x = np.linspace(0, 1, 6 * 4, dtype=np.float32).reshape(6, 4)
    spec = write_npz(
        tmp_path / "d.npz",
        x_train=x,
        y_train=np.array([0.0, 1, 2, 0, 1, 2]),
        x_test=x[:2],
        y_test=np.array([2, 1], np.uint8),
        class_names=np.array(["a", "b", "c"]),
    )
    pool, test, names = load_pool(spec)
    assert pool.x.dtype == np.float32 and pool.x.shape == (6, 4)
    np.testing.assert_array_equal(pool.x, x)
    assert pool.y.dtype == np.int64 and test.y.dtype == np.int64
    np.testing.assert_array_equal(pool.y, [0, 1, 2, 0, 1, 2])
    assert names == ("a", "b", "c")


def test_npz_without_a_test_split_has_none(tmp_path):
    spec = write_npz(tmp_path / "d.npz", x_train=np.zeros((3, 2)), y_train=np.array([0, 1, 1]))
    assert load_pool(spec)[1] is None


@pytest.mark.parametrize(
    "arrays, expected",
    [
        (
            dict(x_train=np.zeros((2, 2)), y_train=np.zeros(2, int), x_test=np.zeros((1, 2))),
            "only one of x_test and y_test",
        ),
        (dict(x=np.zeros((2, 2)), y_train=np.zeros(2, int)), "lacks x_train"),
    ],
)
def test_bad_npz_contents_are_errors_naming_the_problem(tmp_path, arrays, expected):
    spec = write_npz(tmp_path / "bad.npz", **arrays)
    message = error_of(spec)
    assert expected in message and spec in message


def test_bad_npz_files_are_errors_naming_the_file(tmp_path):
    assert "does not exist" in error_of(f"npz:{tmp_path / 'missing.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip archive")
    junk = error_of(f"npz:{tmp_path / 'junk.npz'}")
    assert "is not an .npz file: expected a zip archive" in junk and "pickle" not in junk
    (tmp_path / "cut.npz").write_bytes(b"PK\x03\x04 cut short")
    assert "not a valid .npz" in error_of(f"npz:{tmp_path / 'cut.npz'}")
    np.save(tmp_path / "one.npy", np.zeros(3))
    assert "single .npy array" in error_of(f"npz:{tmp_path / 'one.npy'}")
    assert "is a folder" in error_of(f"npz:{tmp_path}")
