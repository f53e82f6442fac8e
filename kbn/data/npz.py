"""`npz:PATH`: arrays in one .npz archive.

`x_train` and `y_train` are the pool; `x_test` and `y_test`, both or neither, the test
split; `class_names`, a 1-d array of strings, names the classes (without it they are the
labels seen: "0", "1", ...). Arrays keep their own dtype and shape; pickled (object)
arrays are refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kbn.data.fetch import one_line
from kbn.errors import KbnError


def load(
    path: str,
) -> tuple[
    tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None, tuple[str, ...] | None
]:
    """Read the arrays of the .npz file at `path` (the SPEC's PATH, `~` expanded).

    Returns:
        `((x_train, y_train), (x_test, y_test) or None, class names or None)`, as stored:
        `kbn.data.dataset` checks shapes, dtypes and labels.
    """
    file = Path(path).expanduser()
    source = f"npz:{path}"
    if not file.exists():
        raise KbnError(
            f"{source}: {file} does not exist: expected an .npz file with x_train and y_train"
        )
    if file.is_dir():
        raise KbnError(
            f"{source}: {file} is a folder: expected an .npz file "
            f"(use folder:{path} for a folder of images)"
        )
    with open(file, "rb") as f:
        magic = f.read(6)
    if not magic.startswith((b"PK", b"\x93NUMPY")):
        # NumPy takes any other file for a pickle and says so, which misleads.
        raise KbnError(
            f"{source}: {file} is not an .npz file: expected a zip archive of arrays "
            "such as numpy.savez writes"
        )
    try:
        archive = np.load(file, allow_pickle=False)
    except Exception as e:  # numpy raises ValueError, OSError, EOFError... for a bad file
        raise KbnError(f"{source}: {file} is not a valid .npz file ({one_line(e)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise KbnError(
            f"{source}: {file} is a single .npy array, not an .npz archive with x_train and y_train"
        )
    with archive:
        keys = set(archive.files)
        missing = [k for k in ("x_train", "y_train") if k not in keys]
        if missing:
            raise KbnError(
                f"{source}: {file} lacks {', '.join(missing)} "
                f"(it holds {', '.join(sorted(keys)) or 'nothing'}); "
                f"expected x_train, y_train and optionally x_test, y_test, class_names"
            )
        if ("x_test" in keys) != ("y_test" in keys):
            raise KbnError(
                f"{source}: {file} has only one of x_test and y_test: expected both or neither"
            )

        def array(key):
            try:
                return archive[key]
            except Exception as e:  # a corrupt member or an object array (pickles are refused)
                raise KbnError(
                    f"{source}: cannot read array {key} from {file} ({one_line(e)})"
                ) from None

        pool = (array("x_train"), array("y_train"))
        test = (array("x_test"), array("y_test")) if "x_test" in keys else None
        names = _class_names(source, array("class_names")) if "class_names" in keys else None
    return pool, test, names


def _class_names(source: str, names: np.ndarray) -> tuple[str, ...]:
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise KbnError(
            f"{source}: class_names must be a 1-d array of strings, "
            f"got {names.dtype} of shape {names.shape}"
        )
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist())
