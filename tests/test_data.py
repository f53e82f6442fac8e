"""Tests for kbn.data.dataset: the shuffle/cut of load_data, --test-data, SPEC parsing, and
the checks every source's arrays go through (carried by small .npz files). Each source's own
files and errors: tests/test_data_<source>.py. Nothing here reads /usr/share/datasets,
~/.keras or the network."""

import numpy as np
import pytest
from datafiles import (
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    POOL_SIZE,
    error_of,
    id_pool,
    isolated_env,  # noqa: F401 (an autouse fixture)
    make_rgb_folder,
    write_npz,
)

from kbn.data import Dataset, Split, load_data
from kbn.errors import KbnError

# --- checks of every source's arrays --------------------------------------------------------


def test_npz_without_class_names_counts_classes_from_all_labels(tmp_path):
    spec = write_npz(
        tmp_path / "d.npz",
        x_train=np.zeros((3, 2)),
        y_train=np.array([0, 1, 1]),
        x_test=np.zeros((1, 2)),
        y_test=np.array([[4]]),
    )
    ds = load_data(spec, val_size=1)
    assert ds.class_names == ("0", "1", "2", "3", "4") and ds.num_classes == 5
    assert ds.test.y.shape == (1,) and ds.input_shape == (2,)


@pytest.mark.parametrize(
    "arrays, expected",
    [
        (dict(x_train=np.zeros((5, 2)), y_train=np.zeros(4, int)), "5 images but 4 labels"),
        (dict(x_train=np.zeros((2, 2)), y_train=np.array([0, 1.7])), "found 1.7"),
        (
            dict(x_train=np.zeros((2, 2)), y_train=np.array(["a", "b"])),
            "must be integer class indices",
        ),
        (dict(x_train=np.zeros((2, 2)), y_train=np.array([0, -1])), "label -1 is negative"),
        (
            dict(
                x_train=np.zeros((2, 2)), y_train=np.array([0, 2]), class_names=np.array(["a", "b"])
            ),
            "label 2 is out of range: expected class indices 0..1 for 2 classes",
        ),
        (
            dict(x_train=np.array([[0.0, np.nan], [1.0, 2.0]]), y_train=np.array([0, 1])),
            "1 NaN or infinite",
        ),
        (dict(x_train=np.array([[np.inf], [1.0]]), y_train=np.array([0, 1])), "NaN or infinite"),
        (dict(x_train=np.zeros((0, 2)), y_train=np.zeros(0, int)), "the pool is empty"),
        (dict(x_train=np.zeros(3), y_train=np.zeros(3, int)), "at least one feature dimension"),
        (
            dict(
                x_train=np.zeros((2, 2)),
                y_train=np.zeros(2, int),
                x_test=np.zeros((1, 2)),
                y_test=np.array([0.5]),
            ),
            "test labels must be whole class indices",
        ),
    ],
)
def test_bad_arrays_are_errors_naming_the_problem(tmp_path, arrays, expected):
    spec = write_npz(tmp_path / "bad.npz", **arrays)
    message = error_of(spec)
    assert expected in message and spec in message


def test_load_data_cuts_disjoint_train_and_val_of_the_asked_sizes(tmp_path):
    ds = load_data(id_pool(tmp_path), train_size=25, val_size=10, seed=3)
    assert isinstance(ds, Dataset) and isinstance(ds.train, Split)
    assert (len(ds.train), len(ds.val)) == (25, 10)
    train_ids, val_ids = set(ds.train.x[:, 0]), set(ds.val.x[:, 0])
    assert len(train_ids) == 25 and not train_ids & val_ids
    np.testing.assert_array_equal(ds.train.y, ds.train.x[:, 0] % 4)  # labels follow their x


def test_same_seed_gives_the_same_split_and_another_seed_another(tmp_path):
    spec = id_pool(tmp_path)
    a, b = (load_data(spec, train_size=20, val_size=10, seed=7) for _ in range(2))
    np.testing.assert_array_equal(a.train.x, b.train.x)
    np.testing.assert_array_equal(a.val.x, b.val.x)
    c = load_data(spec, train_size=20, val_size=10, seed=8)
    assert not np.array_equal(a.train.x, c.train.x)


def test_shuffle_is_the_documented_permutation(tmp_path):
    ds = load_data(id_pool(tmp_path), train_size=5, val_size=3, seed=11)
    order = np.random.default_rng(11).permutation(POOL_SIZE)
    np.testing.assert_array_equal(ds.train.x[:, 0], order[:5])
    np.testing.assert_array_equal(ds.val.x[:, 0], order[5:8])


def test_no_train_size_takes_all_the_pool_left_after_validation(tmp_path):
    ds = load_data(id_pool(tmp_path), val_size=15)
    assert (len(ds.train), len(ds.val)) == (POOL_SIZE - 15, 15)
    ds = load_data(id_pool(tmp_path), val_size=0)
    assert (len(ds.train), len(ds.val)) == (POOL_SIZE, 0)
    assert ds.val.x.shape == (0, 1) and ds.name == id_pool(tmp_path) and ds.test is None


@pytest.mark.parametrize(
    "sizes, expected",
    [
        (dict(train_size=30, val_size=11), f"the pool has only {POOL_SIZE}"),
        (dict(val_size=POOL_SIZE), "leaves no training examples"),
        (dict(train_size=0), "train_size must be a positive number of examples, got 0"),
        (dict(train_size=-5), "got -5"),
        (dict(val_size=-1), "val_size must be 0 or more, got -1"),
        (dict(train_size=2.5), "whole numbers"),
    ],
)
def test_impossible_sizes_are_errors(tmp_path, sizes, expected):
    with pytest.raises(KbnError, match=expected):
        load_data(id_pool(tmp_path), **sizes)


def test_test_spec_replaces_the_test_split_with_its_whole_pool(tmp_path):
    train = make_rgb_folder(tmp_path / "train", per_class=4)
    test = make_rgb_folder(tmp_path / "test", per_class=2)
    ds = load_data(f"folder:{train}", val_size=3, test_spec=f"folder:{test}")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (9, 3, 6)
    assert ds.input_shape == (IMAGE_HEIGHT, IMAGE_WIDTH, 3)


def test_test_spec_with_other_classes_is_an_error(tmp_path):
    train = make_rgb_folder(tmp_path / "train")
    test = make_rgb_folder(tmp_path / "test", classes=("cat", "dog"))
    with pytest.raises(KbnError, match="must be the same"):
        load_data(f"folder:{train}", val_size=0, test_spec=f"folder:{test}")


# --- SPEC parsing ---------------------------------------------------------------------------


def test_unknown_spec_lists_the_known_ones():
    message = error_of("mnist")
    assert "'mnist'" in message
    assert "fashion_mnist, cifar10, folder:PATH, npz:PATH" in message
    assert "unknown data SPEC" in error_of("fashion_mnist:/tmp")


def test_spec_without_a_path_is_an_error():
    assert "needs a path" in error_of("folder:")
