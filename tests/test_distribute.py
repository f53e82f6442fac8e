"""Tests for kbn.distribute and training under tf.distribute: on 2 replicas (logical CPU
devices), kbn's synchronized BatchNorm trains exactly as one device does on the same global
batch, unsynchronized statistics do not, and the hand-written backward pass of the
synchronized layer matches autodiff and finite differences.

Each strategy runs in a process of its own (tests/distributed_run.py): two MirroredStrategy
objects in one process make the second one's collectives abort."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from kbn.distribute import STRATEGIES, make_strategy
from kbn.errors import KbnError

RUN = pathlib.Path(__file__).parent / "distributed_run.py"


def run(*args, tmp_path=None):
    command = [sys.executable, str(RUN), *args]
    if tmp_path is not None:
        command.append(str(tmp_path))
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    return run("train", "default", "float64", "sync", tmp_path=tmp_path_factory.mktemp("one"))


def test_two_synchronized_replicas_train_as_one_device_in_float64(one_device, tmp_path):
    mirrored = run("train", "mirrored", "float64", "sync", tmp_path=tmp_path)
    np.testing.assert_allclose(mirrored["loss"], one_device["loss"], rtol=1e-6)
    np.testing.assert_allclose(mirrored["val_accuracy"], one_device["val_accuracy"], rtol=1e-6)
    # The moving averages come from the global statistics: those of one device.
    for a, b in zip(mirrored["moving_mean"], one_device["moving_mean"]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


def test_two_synchronized_replicas_train_as_one_device_in_float32(tmp_path):
    one = run("train", "default", "float32", "sync", tmp_path=tmp_path / "one")
    mirrored = run("train", "mirrored", "float32", "sync", tmp_path=tmp_path / "two")
    np.testing.assert_allclose(mirrored["loss"], one["loss"], rtol=1e-4)


def test_per_replica_statistics_train_otherwise(one_device, tmp_path):
    apart = run("train", "mirrored", "float64", "nosync", tmp_path=tmp_path)
    gap = np.max(np.abs(np.subtract(apart["loss"], one_device["loss"])) / np.array(one_device["loss"]))
    assert gap > 1e-3


def test_synchronized_batch_norm_gradients_on_two_replicas_match_autodiff_and_finite_differences():
    errors = run("gradients")
    assert errors["hand_vs_autodiff"] < 1e-12
    assert errors["hand_vs_numeric"] < 1e-6


def test_the_default_strategy_is_tensorflows_own():
    import tensorflow as tf

    assert make_strategy("default") is tf.distribute.get_strategy()
    assert STRATEGIES == ("default", "mirrored", "multi-worker")


def test_multi_worker_without_tf_config_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(KbnError, match="TF_CONFIG"):
        make_strategy("multi-worker")


def test_an_unknown_strategy_is_refused():
    with pytest.raises(KbnError, match="strategy must be one of"):
        make_strategy("tpu")
