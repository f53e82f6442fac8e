"""Tests for kbn.data.fetch: the Keras downloads of the named sources (faked: no network
here) and the search path they share."""

import sys
import types

import numpy as np
import pytest
from datafiles import (
    error_of,
    isolated_env,  # noqa: F401 (an autouse fixture)
)

from kbn.data import fetch, load_pool


@pytest.fixture
def offline_keras(monkeypatch):
    """A stand-in `keras` module whose downloads fail the way they do offline."""

    def fail():
        raise OSError("URL fetch failure: [Errno -3]\nTemporary failure in name resolution")

    fake = types.SimpleNamespace(
        datasets=types.SimpleNamespace(
            fashion_mnist=types.SimpleNamespace(load_data=fail),
            cifar10=types.SimpleNamespace(load_data=fail),
        )
    )
    monkeypatch.setitem(sys.modules, "keras", fake)


@pytest.mark.parametrize(
    "spec, folder", [("fashion_mnist", "fashion-mnist"), ("cifar10", "cifar-10-batches-py")]
)
def test_failed_download_is_one_line_saying_where_to_put_the_files(spec, folder, offline_keras):
    message = error_of(spec)
    assert f"could not download {spec}" in message
    assert folder in message and "--data-dir" in message and "$KBN_DATA_DIR" in message


def test_downloaded_data_sets_get_the_same_shapes_as_local_files(monkeypatch):
    rng = np.random.default_rng(0)
    fashion = (
        (rng.integers(0, 256, (4, 28, 28), dtype=np.uint8), np.arange(4, dtype=np.uint8)),
        (rng.integers(0, 256, (2, 28, 28), dtype=np.uint8), np.arange(2, dtype=np.uint8)),
    )
    # channels_first, labels (N, 1): what Keras gives with image_data_format="channels_first"
    cifar_x = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    cifar = ((cifar_x, np.arange(4).reshape(4, 1)), (cifar_x[:2], np.arange(2).reshape(2, 1)))
    fake = types.SimpleNamespace(
        datasets=types.SimpleNamespace(
            fashion_mnist=types.SimpleNamespace(load_data=lambda: fashion),
            cifar10=types.SimpleNamespace(load_data=lambda: cifar),
        )
    )
    monkeypatch.setitem(sys.modules, "keras", fake)
    pool, test, _ = load_pool("fashion_mnist")
    assert pool.x.shape == (4, 28, 28, 1) and test.x.shape == (2, 28, 28, 1)
    pool, test, _ = load_pool("cifar10")
    assert pool.x.shape == (4, 32, 32, 3) and pool.y.shape == (4,)
    np.testing.assert_array_equal(pool.x, cifar_x.transpose(0, 2, 3, 1))


def test_search_path_is_kbn_data_dir_then_the_sources_own_places(tmp_path, monkeypatch):
    assert fetch.search_path("sub", [tmp_path / "own"]) == [tmp_path / "own"]
    monkeypatch.setenv("KBN_DATA_DIR", str(tmp_path / "data"))
    assert fetch.search_path("sub", [tmp_path / "own"]) == [
        tmp_path / "data" / "sub",
        tmp_path / "data",
        tmp_path / "own",
    ]


def test_find_folder_takes_the_first_folder_holding_every_file(tmp_path):
    for folder, names in (("a", "x"), ("b", "xy"), ("c", "xy")):
        (tmp_path / folder).mkdir()
        for name in names:
            (tmp_path / folder / name).write_text("")
    places = [tmp_path / "a", tmp_path / "b", tmp_path / "c"]
    assert fetch.find_folder("src", ["x", "y"], None, "sub", places) == tmp_path / "b"
    assert fetch.find_folder("src", ["x", "z"], None, "sub", places) is None  # download
    assert fetch.find_folder("src", ["x"], tmp_path, "a", places) == tmp_path / "a"


def test_keras_datasets_dir_follows_keras_home(tmp_path, monkeypatch):
    assert fetch.keras_datasets_dir() == tmp_path / "keras" / "datasets"
    monkeypatch.delenv("KERAS_HOME")
    (tmp_path / "home").mkdir()
    assert fetch.keras_datasets_dir() == tmp_path / "home" / ".keras" / "datasets"


def test_one_line_joins_lines_and_cuts_long_messages():
    assert fetch.one_line(OSError("cannot\n   connect")) == "cannot connect"
    assert fetch.one_line(ValueError()) == "ValueError"
    cut = fetch.one_line(ValueError("x" * 500))
    assert len(cut) == 200 and cut.endswith("...")
