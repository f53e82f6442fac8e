"""Tests for kbn.data.folder: image folders, their decode cache, `read_image`, and every
error."""

import os

import numpy as np
import pytest
from datafiles import (
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    error_of,
    gray,
    isolated_env,  # noqa: F401 (an autouse fixture)
    make_rgb_folder,
    rgb,
    save_image,
)
from PIL import Image

from kbn.data import folder, load_pool
from kbn.errors import KbnError


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


# --- read_image: one file, decoded as the folder source decodes it ----------------------------


def test_read_image_gives_the_pixels_the_folder_source_gives(tmp_path):
    root = make_rgb_folder(tmp_path / "images")
    pool, _, _ = load_pool(f"folder:{root}")
    image = folder.read_image(root / "bird" / "000.png")
    assert image.dtype == np.uint8 and image.shape == (IMAGE_HEIGHT, IMAGE_WIDTH, 3)
    np.testing.assert_array_equal(image, pool.x[0])
    save_image(tmp_path / "g.png", gray(17))
    np.testing.assert_array_equal(folder.read_image(str(tmp_path / "g.png")), gray(17)[..., None])


def test_read_image_converts_channels_and_resizes(tmp_path):
    save_image(tmp_path / "g.png", gray(17))
    as_rgb = folder.read_image(tmp_path / "g.png", channels=3)
    np.testing.assert_array_equal(as_rgb, rgb(17, 17, 17))
    save_image(tmp_path / "c.png", rgb(10, 200, 30))
    assert folder.read_image(tmp_path / "c.png", channels=1).shape == (IMAGE_HEIGHT, IMAGE_WIDTH, 1)
    resized = folder.read_image(tmp_path / "c.png", size=(3, 4))
    assert resized.shape == (3, 4, 3)
    np.testing.assert_array_equal(resized, rgb(10, 200, 30, size=(3, 4)))  # flat colour stays
    assert folder.read_image(tmp_path / "g.png", size=(2, 2), channels=3).shape == (2, 2, 3)


def test_read_image_errors_are_one_line_naming_the_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    for path in (tmp_path / "bad.png", tmp_path / "missing.png"):
        with pytest.raises(KbnError, match="cannot read image") as info:
            folder.read_image(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
    save_image(tmp_path / "g.png", gray(0))
    for kwargs in (dict(channels=2), dict(size=(0, 3)), dict(size=(3,)), dict(size="ab")):
        with pytest.raises(KbnError, match="channels must be|size must be"):
            folder.read_image(tmp_path / "g.png", **kwargs)


# --- folder cache ---------------------------------------------------------------------------


def forbid_decoding(monkeypatch):
    def refuse(source, path):
        raise AssertionError(f"decoded {path} although the cache should hold it")

    monkeypatch.setattr(folder, "_decode_image", refuse)


def count_decoding(monkeypatch) -> list:
    decoded, real = [], folder._decode_image

    def counting(source, path):
        decoded.append(path)
        return real(source, path)

    monkeypatch.setattr(folder, "_decode_image", counting)
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
    assert folder.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("KBN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert folder.cache_dir() == tmp_path / "xdg" / "kbn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert folder.cache_dir() == tmp_path / "home" / ".cache" / "kbn"
