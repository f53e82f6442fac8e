"""`folder:PATH`: one sub-folder of images per class, decoded once, then read from a cache.

The class of an image is the name of the sub-folder of PATH it sits under (deeper folders
count for their top one); the classes are the sorted sub-folder names. Hidden files and
folders are skipped, and so are files that are not images. All images must have one size;
they come out RGB, or gray (C = 1) when every one of them is gray. All of it is the pool:
the source has no test split (`--test-data folder:OTHER` gives one).

The decoded arrays are cached under `cache_dir()` so that a second load skips the
decoding (see `_cache_file` for what a cache entry is keyed on).

`read_image` decodes one image file the same way, for code that reads single files.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import math
import operator
import os
from pathlib import Path

import numpy as np

from kbn.data.fetch import one_line
from kbn.errors import KbnError
from kbn.fileio import atomic_path

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# PIL modes that hold one intensity per pixel (alpha, if any, is dropped).
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})

# Bump when the layout of the decoded-folder cache changes, so old files miss.
CACHE_VERSION = 1


def load(path: str) -> tuple[tuple[np.ndarray, np.ndarray], None, tuple[str, ...]]:
    """Read the image folder at `path` (the SPEC's PATH, `~` expanded), from the cache when
    its files are unchanged.

    Returns:
        `((x, y), None, class names)`: x uint8 of shape (N, H, W, C), y int64 of shape (N,).
    """
    root = Path(path).expanduser()
    source = f"folder:{path}"
    class_names, files, labels = _list_image_folder(source, root)
    cache = _cache_file(root, files)
    x = _read_cache(cache, len(files))
    if x is None:
        x = _decode_images(source, [root / rel for rel, _, _ in files])
        _write_cache(cache, x)
    return (x, labels), None, class_names


def _list_image_folder(source: str, root: Path):
    """Class names, (relative path, size, mtime_ns) of each image, and labels of shape (N,)."""
    if not root.exists():
        raise KbnError(
            f"{source}: {root} does not exist: expected a folder with one sub-folder "
            f"of images per class"
        )
    if not root.is_dir():
        raise KbnError(
            f"{source}: {root} is not a folder: expected one sub-folder of images per class"
        )
    with os.scandir(root) as entries:
        class_names = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    if not class_names:
        raise KbnError(
            f"{source}: {root} has no class sub-folders: expected one sub-folder of images "
            f"per class, e.g. {root / 'cat' / '0001.png'}"
        )
    files, labels = [], []
    for label, name in enumerate(class_names):
        images = sorted(_image_files(os.path.join(root, name), name))
        if not images:
            raise KbnError(
                f"{source}: class folder {root / name} holds no images: "
                f"expected files ending in {', '.join(sorted(IMAGE_EXTENSIONS))}"
            )
        files += images
        labels += [label] * len(images)
    return tuple(class_names), files, np.array(labels, dtype=np.int64)


def _image_files(folder: str, relative: str):
    """(relative path, size, mtime_ns) of every image under `folder`, hidden ones skipped.

    `relative` is `folder`'s path relative to the root, with "/" separators. Plain strings,
    not `Path`s: pathlib's parsing would cost more than the listing on 50,000 files.
    """
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                yield from _image_files(entry.path, f"{relative}/{entry.name}")
            elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                stat = entry.stat()
                yield f"{relative}/{entry.name}", stat.st_size, stat.st_mtime_ns


def _decode_images(source: str, paths: list[Path]) -> np.ndarray:
    """Decode images of one size into x uint8 of shape (N, H, W, C), C = 1 if all are gray.

    A mix of gray and colour images comes out RGB, the gray ones copied into all three
    channels (what PIL's `convert("RGB")` does).
    """
    first = _decode_image(source, paths[0])
    height, width = first.shape[:2]
    x = np.empty((len(paths), height, width, 3), dtype=np.uint8)  # (N, H, W, 3)
    gray = np.zeros(len(paths), dtype=bool)

    def store(i: int, image: np.ndarray) -> None:
        if image.ndim == 2:
            x[i, :, :, 0] = image
            gray[i] = True
        else:
            x[i] = image

    store(0, first)

    def decode_range(start: int, stop: int) -> None:
        for i in range(start, stop):
            image = _decode_image(source, paths[i])
            if image.shape[:2] != (height, width):
                raise KbnError(
                    f"{source}: {paths[i]} is {image.shape[1]}x{image.shape[0]} pixels but "
                    f"{paths[0]} is {width}x{height}: all images must have one size"
                )
            store(i, image)

    # Decoding is mostly C code that drops the GIL; chunks keep the per-task overhead small.
    workers = min(32, (os.cpu_count() or 1) + 4)
    chunk = max(1, min(512, math.ceil(len(paths) / (4 * workers))))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = [
            pool.submit(decode_range, start, min(start + chunk, len(paths)))
            for start in range(1, len(paths), chunk)
        ]
        try:
            for future in concurrent.futures.as_completed(futures):
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()  # stop decoding thousands of images after the first bad one
            raise

    if gray.all():
        return np.ascontiguousarray(x[..., :1])
    x[gray, :, :, 1:] = x[gray, :, :, :1]
    return x


def _decode_image(source: str, path: str | os.PathLike) -> np.ndarray:
    """One image: uint8 of shape (H, W) if gray, else (H, W, 3); errors name `source` first
    unless it is empty."""
    from PIL import Image  # imported here: only folder sources need Pillow

    try:
        with Image.open(path) as image:
            if image.mode in GRAY_MODES:
                return np.asarray(image if image.mode == "L" else image.convert("L"))
            return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    except Exception as e:  # PIL raises many types for a corrupt file; all mean "unreadable"
        where = f"{source}: " if source else ""
        raise KbnError(f"{where}cannot read image {path} ({one_line(e)})") from None


def read_image(
    path: str | os.PathLike, size: tuple[int, int] | None = None, channels: int | None = None
) -> np.ndarray:
    """One image file as uint8 pixels of shape (H, W, C), decoded as a `folder:` source
    decodes its images (the pixels a model trained on one expects).

    Args:
        path: an image file in any format Pillow reads.
        size: (height, width) to resize to (bilinear); None keeps the file's own size.
        channels: 3 for RGB, 1 for gray; None keeps the file's own: 1 if it is gray,
            else 3. Gray becomes RGB by copying it into all three channels, as in a folder
            that mixes both; RGB becomes gray by Pillow's `convert("L")` (ITU-R 601-2 luma).

    Returns:
        uint8 array of shape (H, W, C).

    Raises:
        KbnError: the file is missing or not a readable image, or `size` or `channels`
            is not one of the values above.
    """
    if channels not in (None, 1, 3):
        raise KbnError(f"channels must be 1 (gray) or 3 (RGB), got {channels!r}")
    if size is not None:
        try:
            height, width = (operator.index(n) for n in size)
        except (TypeError, ValueError):
            height = width = 0
        if height <= 0 or width <= 0:
            raise KbnError(f"size must be (height, width) in whole pixels, got {size!r}")
    from PIL import Image  # imported here: only image sources and predict need Pillow

    image = _decode_image("", path)  # (H, W) or (H, W, 3)
    if channels == 1 and image.ndim == 3:
        image = np.asarray(Image.fromarray(image).convert("L"))
    if size is not None and image.shape[:2] != (height, width):
        resized = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
        image = np.asarray(resized)
    if image.ndim == 2:
        image = image[..., None]
    if channels == 3 and image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return np.ascontiguousarray(image)


# The decoded arrays of a folder are cached so that a second load skips the decoding. The
# file name holds a hash of the folder's path (to find and drop stale entries) and of its
# contents (every image's relative path, size and mtime_ns), so any change misses.


def cache_dir() -> Path:
    """Where kbn caches decoded data.

    $KBN_CACHE_DIR, else $XDG_CACHE_HOME/kbn, else ~/.cache/kbn.
    """
    if os.environ.get("KBN_CACHE_DIR"):
        return Path(os.environ["KBN_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "kbn"
    return Path.home() / ".cache" / "kbn"


def _cache_file(root: Path, files) -> Path:
    import PIL

    where = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    # Another Pillow may bundle another JPEG decoder, whose pixels can differ slightly.
    version = f"kbn folder cache v{CACHE_VERSION}, Pillow {PIL.__version__}\n"
    contents = hashlib.sha256(version.encode())
    for rel, size, mtime_ns in files:
        contents.update(f"{rel}\0{size}\0{mtime_ns}\n".encode())
    return cache_dir() / f"folder-{where}-{contents.hexdigest()[:32]}.npz"


def _read_cache(path: Path, count: int) -> np.ndarray | None:
    """The cached x uint8 of shape (count, H, W, C), or None on a miss or an unreadable file."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            x = archive["x"]
    except Exception:  # missing, truncated or corrupt: all are a miss, decode again
        return None
    if x.dtype != np.uint8 or x.ndim != 4 or len(x) != count:
        return None
    return x


def _write_cache(path: Path, x: np.ndarray) -> None:
    """Write atomically and drop this folder's stale entries; a cache that cannot be
    written is skipped, never an error."""
    try:
        with atomic_path(path) as tmp:
            np.savez(tmp, x=x)  # uncompressed: loading it back is a plain read
        prefix = path.name.rsplit("-", 1)[0] + "-"
        for stale in path.parent.glob(prefix + "*.npz"):
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError:
        pass
