"""Tests for kbn.fileio: a write either replaces the whole file or leaves the old one,
never a torn file or a stray temporary, and torn JSON reads as missing."""

import json
import os
import pathlib
import stat

import numpy as np
import pytest

from kbn.fileio import atomic_path, read_json, write_json

OLD = "old content\n"
NEW = "new content\n"


def test_atomic_path_replaces_the_file_on_success(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text(OLD)
    with atomic_path(target) as tmp:
        tmp.write_text(NEW)
        assert target.read_text() == OLD  # not visible until the block ends
    assert target.read_text() == NEW
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_path_keeps_the_old_file_and_no_temporary_when_the_block_fails(tmp_path, error):
    target = tmp_path / "x.txt"
    target.write_text(OLD)
    with pytest.raises(error), atomic_path(target) as tmp:
        tmp.write_text(NEW[:4])  # half written
        raise error("killed mid-write")
    assert target.read_text() == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_atomic_path_leaves_nothing_when_a_first_write_fails(tmp_path):
    target = tmp_path / "x.txt"
    with pytest.raises(RuntimeError), atomic_path(target):
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_temporary_sits_beside_the_target_and_ends_with_its_whole_name(tmp_path):
    target = tmp_path / "x.weights.h5"
    with atomic_path(target) as tmp:
        assert isinstance(tmp, pathlib.Path)
        assert tmp.parent == target.parent
        assert tmp.name.endswith(".x.weights.h5")  # Keras picks the format from the name
        assert tmp != target
        assert tmp.exists()
        tmp.write_bytes(b"w")
    assert target.read_bytes() == b"w"


def test_atomic_path_creates_missing_parent_folders(tmp_path):
    target = tmp_path / "a" / "b" / "c.json"
    with atomic_path(target) as tmp:
        tmp.write_text("{}")
    assert target.read_text() == "{}"


def test_atomic_path_gives_the_file_the_usual_mode_not_mkstemps_private_one(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    target = tmp_path / "x.txt"
    with atomic_path(target) as tmp:
        tmp.write_text(NEW)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_write_json_and_read_json_round_trip(tmp_path):
    obj = {"eta": 0.0864, "epochs": 20, "name": None, "history": {"loss": [2.3, 1.9]}, "ok": True}
    out = write_json(tmp_path / "run" / "summary.json", obj)
    assert out == tmp_path / "run" / "summary.json"
    assert read_json(out) == obj
    assert json.loads(out.read_text()) == obj
    assert out.read_text().endswith("\n")


def test_write_json_writes_numpy_scalars_and_paths_as_plain_values(tmp_path):
    out = write_json(
        tmp_path / "s.json",
        {"loss": np.float32(1.5), "epoch": np.int64(3), "dir": pathlib.Path("logs/r")},
    )
    assert read_json(out) == {"loss": 1.5, "epoch": 3, "dir": "logs/r"}


def test_write_json_of_an_unwritable_object_raises_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "s.json"
    write_json(target, {"a": 1})
    with pytest.raises(TypeError, match="cannot write"):
        write_json(target, {"a": object()})
    assert read_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_read_json_returns_none_for_a_missing_file(tmp_path):
    assert read_json(tmp_path / "missing.json") is None


def test_read_json_returns_none_for_a_half_written_file(tmp_path):
    target = write_json(tmp_path / "s.json", {"history": {"loss": [2.3, 1.9, 1.7]}})
    text = target.read_text()
    target.write_text(text[: len(text) // 2])
    assert read_json(target) is None
    target.write_text("")
    assert read_json(target) is None
