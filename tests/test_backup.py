"""Tests for kbn.training.callbacks.backup: a saved state restores every model and optimizer
variable exactly, and a state that does not fit the model, or is torn, counts as no backup."""

import numpy as np
import pytest

from kbn.nn.builder import build_mlp
from kbn.training.callbacks import Backup

N, CLASSES = 40, 3


@pytest.fixture
def trained():
    """A small model after a few SGD steps: moving statistics, momentum and step count set."""
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (N, 4, 4, 3)).astype("uint8"), rng.integers(0, CLASSES, N)
    model = build_mlp([8, 6], CLASSES, adapt=x, seed=0)
    model.fit(x, y, batch_size=10, epochs=1, verbose=0)
    return model, x


def state(model):
    return [v.numpy() for v in [*model.variables, *model.optimizer.variables]]


def test_restore_gives_back_every_variable_of_the_epoch_saved(tmp_path, trained):
    model, x = trained
    backup = Backup(tmp_path / "backup")
    backup.save(model, 3)
    saved = state(model)
    fresh = build_mlp([8, 6], CLASSES, adapt=x, seed=1)
    assert backup.restore(fresh) == 3
    for a, b in zip(state(fresh), saved, strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(fresh.optimizer.iterations.numpy()) == 4  # 40 examples in batches of 10


def test_two_states_alternate_and_an_older_epoch_restores_on_request(tmp_path, trained):
    model, x = trained
    backup = Backup(tmp_path / "backup")
    backup.save(model, 1)
    first = state(model)
    model.fit(x, np.zeros(N, "int64"), batch_size=10, epochs=1, verbose=0)
    backup.save(model, 2)
    assert backup.epochs() == [2, 1]
    assert sorted(p.name for p in (tmp_path / "backup").iterdir()) == [
        "epoch-0.state",
        "epoch-1.state",
        "record.json",
    ]
    assert backup.restore(model, epoch=1) == 1
    for a, b in zip(state(model), first, strict=True):
        np.testing.assert_array_equal(a, b)


def test_another_models_state_or_a_torn_one_counts_as_no_backup(tmp_path, trained):
    model, x = trained
    backup = Backup(tmp_path / "backup")
    backup.save(model, 2)
    wider = build_mlp([9, 6], CLASSES, adapt=x, seed=0)
    wider.fit(x, np.zeros(N, "int64"), batch_size=10, epochs=1, verbose=0)
    before = state(wider)
    assert backup.restore(wider) == 0  # the layout differs: refused, the model untouched
    for a, b in zip(state(wider), before, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not (tmp_path / "backup").exists()

    backup.save(model, 2)
    path = tmp_path / "backup" / "epoch-0.state"
    path.write_bytes(path.read_bytes()[:-4])  # killed mid-write of a file renamed anyway
    assert backup.restore(model) == 0
