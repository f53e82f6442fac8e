"""Finding a named data set's files on disk, else downloading it with Keras.

Shared by the two named sources, `fashion_mnist` and `cifar10`: one search and one
download, parameterised by the source's file names, its folder name and its own places.

Where the files are looked for, in order:

- `data_dir`, else `data_dir/<folder>`, when a `data_dir` is given (and nowhere else:
  a `data_dir` without the files is an error, never a download);
- otherwise `$KBN_DATA_DIR/<folder>`, `$KBN_DATA_DIR`, then the source's own places
  (a system folder, the Keras cache), and if none holds them all, a Keras download.

Plus `one_line`, which every source uses to quote an exception in its one-line `KbnError`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from kbn.errors import KbnError


def find_folder(
    source: str,
    files: Iterable[str],
    data_dir: Path | None,
    folder: str,
    elsewhere: Iterable[Path] = (),
) -> Path | None:
    """The first folder holding all of `files`, or None when it is time to download.

    Args:
        source: the SPEC, for messages, e.g. `"cifar10"`.
        files: the file names that must all be there.
        data_dir: where the user said the files are (`--data-dir`), or None.
        folder: the data set's usual folder name, e.g. `"cifar-10-batches-py"`: looked
            for inside `data_dir` and `$KBN_DATA_DIR`.
        elsewhere: the source's own places, searched after `$KBN_DATA_DIR`.

    Returns:
        The folder, or None when no `data_dir` is given and the search path has none.

    Raises:
        KbnError: `data_dir` is given but neither it nor `data_dir/<folder>` holds the files.
    """
    files = tuple(files)

    def has_all(candidate: Path) -> bool:
        return all((candidate / name).is_file() for name in files)

    if data_dir is not None:
        for candidate in (data_dir, data_dir / folder):
            if has_all(candidate):
                return candidate
        raise KbnError(
            f"{source}: data_dir {data_dir} does not hold {', '.join(files)} "
            f"(looked in {data_dir} and {data_dir / folder})"
        )
    return next((c for c in search_path(folder, elsewhere) if has_all(c)), None)


def search_path(folder: str, elsewhere: Iterable[Path] = ()) -> list[Path]:
    """Folders searched, in order, when no data_dir is given: `$KBN_DATA_DIR/<folder>`,
    `$KBN_DATA_DIR`, then `elsewhere`."""
    folders = []
    if os.environ.get("KBN_DATA_DIR"):
        kbn_data = Path(os.environ["KBN_DATA_DIR"]).expanduser()
        folders += [kbn_data / folder, kbn_data]
    return folders + list(elsewhere)


def keras_datasets_dir() -> Path:
    """Where Keras keeps its downloads: `$KERAS_HOME/datasets`, else `~/.keras/datasets`
    (`/tmp/.keras/datasets` when the home folder is not writable), the same rule as Keras."""
    if "KERAS_HOME" in os.environ:
        return Path(os.environ["KERAS_HOME"]) / "datasets"
    home = os.path.expanduser("~")
    return Path(home if os.access(home, os.W_OK) else "/tmp") / ".keras" / "datasets"


def keras_download(
    source: str, folder: str, files: Iterable[str]
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """`keras.datasets.<source>.load_data()`: `((x_train, y_train), (x_test, y_test))` as
    Keras gives them.

    Raises:
        KbnError: the download failed (offline, a proxy, a full disk); the one-line
            message says to put `files` in a folder named `folder` and where to point kbn.
    """
    try:
        import keras

        return getattr(keras.datasets, source).load_data()
    except Exception as e:  # offline, proxy, disk full: whatever it is, say where to put the files
        raise KbnError(
            f"could not download {source} ({type(e).__name__}: {one_line(e)}); "
            f"put {', '.join(files)} in a folder named {folder} and pass that folder (or the "
            f"one above it) with --data-dir, or set $KBN_DATA_DIR to the folder above it"
        ) from None


def one_line(error: Exception, limit: int = 200) -> str:
    """`error`'s text on one line, cut to `limit` characters, for a `KbnError` to quote."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
