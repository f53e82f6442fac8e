"""Atomic file writes: a failed or killed run never leaves half a file behind.

Every file kbn writes in place of a good one (summary.json, model.keras,
figures, results tables) goes through `atomic_path`: the content is written
to a temporary file in the same folder and renamed over the target only once
complete, so readers see the old file or the new one, never a torn one.
"""

import contextlib
import json
import os
import pathlib
import tempfile

# mkstemp makes files private (0600); kbn's outputs get the user's usual mode.
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it to `path` on success.

    On an exception the temporary file is removed and `path` is untouched.
    The temporary name ends with the target's whole name, because some
    writers (Keras's `model.save`, `save_weights`) choose the format from it.

    >>> with atomic_path("run/summary.json") as tmp:
    ...     tmp.write_text("{}")
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=f".{path.name}")
    os.close(fd)
    tmp = pathlib.Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path, obj):
    """Write `obj` as indented JSON to `path`, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n")
    return pathlib.Path(path)


def read_json(path):
    """The JSON object in `path`, or None when it is missing or torn."""
    try:
        return json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError):
        return None


def _jsonable(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, pathlib.PurePath):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON: {value!r}")
