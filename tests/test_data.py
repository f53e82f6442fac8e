"""Tests for kbn.data: every SPEC on small synthetic files, the shuffle/cut, the folder
cache and every error. Nothing here reads /usr/share/datasets, ~/.keras or the network."""

import gzip
import os
import pickle
import struct
import sys
import types

import numpy as np
import pytest
from PIL import Image

from kbn import data
from kbn.data import Dataset, Split, load_data, load_pool
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
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-system-data")


@pytest.fixture
def offline_keras(monkeypatch):
    """A stand-in `keras` module whose downloads fail the way they do offline."""

    def fail():
        raise OSError("URL fetch failure: [Errno -3]\nTemporary failure in name resolution")

    fake = types.SimpleNamespace(datasets=types.SimpleNamespace(
        fashion_mnist=types.SimpleNamespace(load_data=fail),
        cifar10=types.SimpleNamespace(load_data=fail),
    ))
    monkeypatch.setitem(sys.modules, "keras", fake)


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
    for name, array in zip(data.FASHION_MNIST_FILES.values(), arrays):
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
    for name in data.CIFAR10_TRAIN_BATCHES:
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


# --- fashion_mnist ----------------------------------------------------------------------


def test_fashion_mnist_idx_files_give_gray_images_labels_and_names(tmp_path):
    x_train, y_train, x_test, y_test = make_fashion_mnist(tmp_path / "fm")
    pool, test, names = load_pool("fashion_mnist", data_dir=tmp_path / "fm")
    assert pool.x.shape == (NUM_TRAIN, 28, 28, 1) and pool.x.dtype == np.uint8
    np.testing.assert_array_equal(pool.x[..., 0], x_train)
    np.testing.assert_array_equal(pool.y, y_train)
    assert pool.y.dtype == np.int64
    np.testing.assert_array_equal(test.x[..., 0], x_test)
    np.testing.assert_array_equal(test.y, y_test)
    assert names == ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


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
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "system")
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


# --- cifar10 ------------------------------------------------------------------------------


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
    assert names == ("airplane", "automobile", "bird", "cat", "deer",
                     "dog", "frog", "horse", "ship", "truck")


@pytest.mark.parametrize("subfolder", ["cifar-10-batches-py-target/cifar-10-batches-py",
                                       "cifar-10-batches-py"])
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


# --- downloads (faked: no network here) ---------------------------------------------------


@pytest.mark.parametrize("spec, folder", [("fashion_mnist", "fashion-mnist"),
                                          ("cifar10", "cifar-10-batches-py")])
def test_failed_download_is_one_line_saying_where_to_put_the_files(spec, folder, offline_keras):
    message = error_of(spec)
    assert f"could not download {spec}" in message
    assert folder in message and "--data-dir" in message and "$KBN_DATA_DIR" in message


def test_downloaded_data_sets_get_the_same_shapes_as_local_files(monkeypatch):
    rng = np.random.default_rng(0)
    fashion = ((rng.integers(0, 256, (4, 28, 28), dtype=np.uint8), np.arange(4, dtype=np.uint8)),
               (rng.integers(0, 256, (2, 28, 28), dtype=np.uint8), np.arange(2, dtype=np.uint8)))
    # channels_first, labels (N, 1): what Keras gives with image_data_format="channels_first"
    cifar_x = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    cifar = ((cifar_x, np.arange(4).reshape(4, 1)), (cifar_x[:2], np.arange(2).reshape(2, 1)))
    fake = types.SimpleNamespace(datasets=types.SimpleNamespace(
        fashion_mnist=types.SimpleNamespace(load_data=lambda: fashion),
        cifar10=types.SimpleNamespace(load_data=lambda: cifar),
    ))
    monkeypatch.setitem(sys.modules, "keras", fake)
    pool, test, _ = load_pool("fashion_mnist")
    assert pool.x.shape == (4, 28, 28, 1) and test.x.shape == (2, 28, 28, 1)
    pool, test, _ = load_pool("cifar10")
    assert pool.x.shape == (4, 32, 32, 3) and pool.y.shape == (4,)
    np.testing.assert_array_equal(pool.x, cifar_x.transpose(0, 2, 3, 1))


# --- folder:PATH --------------------------------------------------------------------------


def test_folder_of_images_gives_sorted_class_labels(tmp_path):
    root = tmp_path / "images"
    save_image(root / "zebra" / "a.png", rgb(1, 2, 3))
    save_image(root / "ant" / "b.PNG", rgb(4, 5, 6))
    save_image(root / "ant" / "a.png", rgb(7, 8, 9))
    save_image(root / "moth" / "deep" / "c.png", rgb(10, 11, 12))
    pool, test, names = load_pool(f"folder:{root}")
    assert names == ("ant", "moth", "zebra")
    assert test is None
    np.testing.assert_array_equal(pool.y, [0, 0, 1, 2])
    np.testing.assert_array_equal(pool.x[:, 0, 0], [[7, 8, 9], [4, 5, 6], [10, 11, 12], [1, 2, 3]])


def test_folder_ignores_hidden_and_non_image_files(tmp_path):
    root = make_rgb_folder(tmp_path / "images", per_class=2)
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / ".hidden.png").write_bytes(b"not an image either")
    (root / ".thumbnails").mkdir()
    save_image(root / ".thumbnails" / "x.png", rgb(0, 0, 0))
    pool, _, names = load_pool(f"folder:{root}")
    assert names == ("bird", "cat", "dog") and len(pool) == 6


def test_folder_of_rgb_images_gives_three_uint8_channels(tmp_path):
    root = make_rgb_folder(tmp_path / "images")
    pool, _, _ = load_pool(f"folder:{root}")
    assert pool.x.shape == (9, IMAGE_HEIGHT, IMAGE_WIDTH, 3) and pool.x.dtype == np.uint8
    np.testing.assert_array_equal(pool.x[0], rgb(20, 0, 200))  # bird/000.png, made third


def test_folder_of_gray_images_gives_one_channel(tmp_path):
    root = tmp_path / "images"
    save_image(root / "a" / "0.png", gray(17))
    save_image(root / "b" / "0.jpg", gray(200))
    pool, _, _ = load_pool(f"folder:{root}")
    assert pool.x.shape == (2, IMAGE_HEIGHT, IMAGE_WIDTH, 1)
    np.testing.assert_array_equal(pool.x[0, ..., 0], gray(17))
    assert abs(int(pool.x[1].mean()) - 200) <= 2  # JPEG is lossy


def test_folder_mixing_gray_and_colour_images_gives_rgb(tmp_path):
    root = tmp_path / "images"
    save_image(root / "a" / "0.png", gray(17))
    save_image(root / "b" / "0.png", rgb(1, 2, 3))
    Image.fromarray(rgb(4, 5, 6)).convert("RGBA").save(root / "b" / "1.png")
    pool, _, _ = load_pool(f"folder:{root}")
    assert pool.x.shape == (3, IMAGE_HEIGHT, IMAGE_WIDTH, 3)
    np.testing.assert_array_equal(pool.x[0], rgb(17, 17, 17))
    np.testing.assert_array_equal(pool.x[2], rgb(4, 5, 6))


def test_folder_errors_name_what_was_wrong(tmp_path):
    assert "does not exist" in error_of(f"folder:{tmp_path / 'nowhere'}")
    (tmp_path / "file.png").write_bytes(b"")
    assert "is not a folder" in error_of(f"folder:{tmp_path / 'file.png'}")
    (tmp_path / "flat").mkdir()
    save_image(tmp_path / "flat" / "0.png", gray(0))
    assert "no class sub-folders" in error_of(f"folder:{tmp_path / 'flat'}")
    (tmp_path / "flat" / "empty").mkdir()
    message = error_of(f"folder:{tmp_path / 'flat'}")
    assert "holds no images" in message and str(tmp_path / "flat" / "empty") in message


def test_corrupt_image_is_an_error_naming_the_file(tmp_path):
    root = make_rgb_folder(tmp_path / "images")
    bad = root / "dog" / "001.png"
    bad.write_bytes(bad.read_bytes()[:30])
    message = error_of(f"folder:{root}")
    assert str(bad) in message and "cannot read image" in message


def test_image_of_another_size_is_an_error_naming_the_file(tmp_path):
    root = make_rgb_folder(tmp_path / "images")
    odd = root / "cat" / "002.png"
    save_image(odd, rgb(0, 0, 0, size=(IMAGE_HEIGHT + 1, IMAGE_WIDTH)))
    message = error_of(f"folder:{root}")
    assert str(odd) in message and f"{IMAGE_WIDTH}x{IMAGE_HEIGHT + 1}" in message
    assert "one size" in message


# --- folder cache ---------------------------------------------------------------------------


def forbid_decoding(monkeypatch):
    def refuse(source, path):
        raise AssertionError(f"decoded {path} although the cache should hold it")

    monkeypatch.setattr(data, "_decode_image", refuse)


def count_decoding(monkeypatch) -> list:
    decoded, real = [], data._decode_image

    def counting(source, path):
        decoded.append(path)
        return real(source, path)

    monkeypatch.setattr(data, "_decode_image", counting)
    return decoded


def cache_files(tmp_path):
    return sorted((tmp_path / "cache").glob("*.npz"))


def test_second_folder_load_reads_the_cache_without_decoding(tmp_path, monkeypatch):
    root = make_rgb_folder(tmp_path / "images")
    first, _, _ = load_pool(f"folder:{root}")
    assert len(cache_files(tmp_path)) == 1
    forbid_decoding(monkeypatch)
    second, _, names = load_pool(f"folder:{root}")
    np.testing.assert_array_equal(second.x, first.x)
    np.testing.assert_array_equal(second.y, first.y)
    assert names == ("bird", "cat", "dog")


def test_gray_folder_cache_keeps_one_channel(tmp_path, monkeypatch):
    root = tmp_path / "images"
    save_image(root / "a" / "0.png", gray(3))
    load_pool(f"folder:{root}")
    forbid_decoding(monkeypatch)
    assert load_pool(f"folder:{root}")[0].x.shape == (1, IMAGE_HEIGHT, IMAGE_WIDTH, 1)


@pytest.mark.parametrize("change", ["add", "remove", "modify"])
def test_changed_folder_misses_the_cache(tmp_path, monkeypatch, change):
    root = make_rgb_folder(tmp_path / "images")
    load_pool(f"folder:{root}")
    target = root / "cat" / "001.png"
    if change == "add":
        save_image(root / "cat" / "new.png", rgb(1, 1, 1))
    elif change == "remove":
        target.unlink()
    else:
        save_image(target, rgb(99, 99, 99))
        os.utime(target, ns=(1, 1))  # a new mtime even on a coarse-grained file system
    decoded = count_decoding(monkeypatch)
    pool, _, _ = load_pool(f"folder:{root}")
    assert len(decoded) == len(pool) == {"add": 10, "remove": 8, "modify": 9}[change]
    if change == "modify":
        np.testing.assert_array_equal(pool.x[4], rgb(99, 99, 99))
    assert len(cache_files(tmp_path)) == 1  # the stale entry is gone


def test_truncated_cache_file_is_a_miss_not_a_crash(tmp_path, monkeypatch):
    root = make_rgb_folder(tmp_path / "images")
    first, _, _ = load_pool(f"folder:{root}")
    [cache] = cache_files(tmp_path)
    full = cache.stat().st_size
    cache.write_bytes(cache.read_bytes()[: full // 2])
    decoded = count_decoding(monkeypatch)
    second, _, _ = load_pool(f"folder:{root}")
    np.testing.assert_array_equal(second.x, first.x)
    assert len(decoded) == 9 and cache.stat().st_size == full  # rewritten


def test_unwritable_cache_dir_does_not_fail_the_load(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("KBN_CACHE_DIR", str(tmp_path / "a-file" / "cache"))
    root = make_rgb_folder(tmp_path / "images")
    assert len(load_pool(f"folder:{root}")[0]) == 9
    assert not list(tmp_path.glob("**/.tmp-*"))


def test_cache_dir_follows_kbn_cache_dir_then_xdg_then_home(tmp_path, monkeypatch):
    assert data.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("KBN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.cache_dir() == tmp_path / "xdg" / "kbn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.cache_dir() == tmp_path / "home" / ".cache" / "kbn"


# --- npz:PATH -----------------------------------------------------------------------------


def test_npz_keeps_dtype_and_shape_and_converts_whole_float_labels(tmp_path):
    x = np.linspace(0, 1, 6 * 4, dtype=np.float32).reshape(6, 4)
    spec = write_npz(tmp_path / "d.npz", x_train=x, y_train=np.array([0.0, 1, 2, 0, 1, 2]),
                     x_test=x[:2], y_test=np.array([2, 1], np.uint8),
                     class_names=np.array(["a", "b", "c"]))
    pool, test, names = load_pool(spec)
    assert pool.x.dtype == np.float32 and pool.x.shape == (6, 4)
    np.testing.assert_array_equal(pool.x, x)
    assert pool.y.dtype == np.int64 and test.y.dtype == np.int64
    np.testing.assert_array_equal(pool.y, [0, 1, 2, 0, 1, 2])
    assert names == ("a", "b", "c")


def test_npz_without_class_names_counts_classes_from_all_labels(tmp_path):
    spec = write_npz(tmp_path / "d.npz", x_train=np.zeros((3, 2)), y_train=np.array([0, 1, 1]),
                     x_test=np.zeros((1, 2)), y_test=np.array([[4]]))
    ds = load_data(spec, val_size=1)
    assert ds.class_names == ("0", "1", "2", "3", "4") and ds.num_classes == 5
    assert ds.test.y.shape == (1,) and ds.input_shape == (2,)


def test_npz_without_a_test_split_has_none(tmp_path):
    spec = write_npz(tmp_path / "d.npz", x_train=np.zeros((3, 2)), y_train=np.array([0, 1, 1]))
    assert load_pool(spec)[1] is None


@pytest.mark.parametrize("arrays, expected", [
    (dict(x_train=np.zeros((5, 2)), y_train=np.zeros(4, int)), "5 images but 4 labels"),
    (dict(x_train=np.zeros((2, 2)), y_train=np.array([0, 1.7])), "found 1.7"),
    (dict(x_train=np.zeros((2, 2)), y_train=np.array(["a", "b"])), "must be integer class indices"),
    (dict(x_train=np.zeros((2, 2)), y_train=np.array([0, -1])), "label -1 is negative"),
    (dict(x_train=np.zeros((2, 2)), y_train=np.array([0, 2]), class_names=np.array(["a", "b"])),
     "label 2 is out of range: expected class indices 0..1 for 2 classes"),
    (dict(x_train=np.array([[0.0, np.nan], [1.0, 2.0]]), y_train=np.array([0, 1])),
     "1 NaN or infinite"),
    (dict(x_train=np.array([[np.inf], [1.0]]), y_train=np.array([0, 1])), "NaN or infinite"),
    (dict(x_train=np.zeros((0, 2)), y_train=np.zeros(0, int)), "the pool is empty"),
    (dict(x_train=np.zeros(3), y_train=np.zeros(3, int)), "at least one feature dimension"),
    (dict(x_train=np.zeros((2, 2)), y_train=np.zeros(2, int), x_test=np.zeros((1, 2))),
     "only one of x_test and y_test"),
    (dict(x=np.zeros((2, 2)), y_train=np.zeros(2, int)), "lacks x_train"),
    (dict(x_train=np.zeros((2, 2)), y_train=np.zeros(2, int), x_test=np.zeros((1, 2)),
          y_test=np.array([0.5])), "test labels must be whole class indices"),
])
def test_bad_npz_contents_are_errors_naming_the_problem(tmp_path, arrays, expected):
    spec = write_npz(tmp_path / "bad.npz", **arrays)
    message = error_of(spec)
    assert expected in message and spec in message


def test_bad_npz_files_are_errors_naming_the_file(tmp_path):
    assert "does not exist" in error_of(f"npz:{tmp_path / 'missing.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip archive")
    assert "not a valid .npz" in error_of(f"npz:{tmp_path / 'junk.npz'}")
    np.save(tmp_path / "one.npy", np.zeros(3))
    assert "single .npy array" in error_of(f"npz:{tmp_path / 'one.npy'}")
    assert "is a folder" in error_of(f"npz:{tmp_path}")


# --- load_data: shuffle and cut ------------------------------------------------------------


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


@pytest.mark.parametrize("sizes, expected", [
    (dict(train_size=30, val_size=11), f"the pool has only {POOL_SIZE}"),
    (dict(val_size=POOL_SIZE), "leaves no training examples"),
    (dict(train_size=0), "train_size must be a positive number of examples, got 0"),
    (dict(train_size=-5), "got -5"),
    (dict(val_size=-1), "val_size must be 0 or more, got -1"),
    (dict(train_size=2.5), "whole numbers"),
])
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
