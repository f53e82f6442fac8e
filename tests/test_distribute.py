"""Tests for kbn.training.distribute and training under tf.distribute: on 2 replicas (logical CPU
devices), kbn's synchronized BatchNorm trains exactly as one device does on the same global
batch, unsynchronized statistics do not, and the hand-written backward pass of the
synchronized layer matches autodiff and finite differences.

Each strategy runs in a process of its own (tests/distributed_run.py): two MirroredStrategy
objects in one process make the second one's collectives abort."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from test_reliability import KBN, epoch_steps, epochs_recorded, write_npz

from kbn.errors import KbnError
from kbn.fileio import read_json
from kbn.training.distribute import STRATEGIES, make_strategy

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


@pytest.mark.slow
def test_two_synchronized_replicas_train_as_one_device_in_float64(one_device, tmp_path):
    mirrored = run("train", "mirrored", "float64", "sync", tmp_path=tmp_path)
    np.testing.assert_allclose(mirrored["loss"], one_device["loss"], rtol=1e-6)
    np.testing.assert_allclose(mirrored["val_accuracy"], one_device["val_accuracy"], rtol=1e-6)
    # The moving averages come from the global statistics: those of one device.
    for a, b in zip(mirrored["moving_mean"], one_device["moving_mean"]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


@pytest.mark.slow
def test_two_synchronized_replicas_train_as_one_device_in_float32(tmp_path):
    one = run("train", "default", "float32", "sync", tmp_path=tmp_path / "one")
    mirrored = run("train", "mirrored", "float32", "sync", tmp_path=tmp_path / "two")
    np.testing.assert_allclose(mirrored["loss"], one["loss"], rtol=1e-4)


@pytest.mark.slow
def test_per_replica_statistics_train_otherwise(one_device, tmp_path):
    apart = run("train", "mirrored", "float64", "nosync", tmp_path=tmp_path)
    gap = np.max(
        np.abs(np.subtract(apart["loss"], one_device["loss"])) / np.array(one_device["loss"])
    )
    assert gap > 1e-3


@pytest.mark.slow
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


# --- multi-worker: two processes on 127.0.0.1 ---------------------------------------------


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(argv, ports, folder):
    """Two `kbn train --strategy multi-worker` processes, worker 0 (the chief) first."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes = []
    for index in range(2):
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            ),
        }
        with open(
            folder / f"worker-{index}.stderr", "w"
        ) as err:  # a file: a full pipe would stall it
            processes.append(
                subprocess.Popen(
                    [str(KBN), *argv, "--strategy", "multi-worker"],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    text=True,
                )
            )
    return processes


WORKER_EPOCHS = 6


@pytest.mark.slow
def test_two_workers_killed_mid_run_resume_every_epoch_exactly_once(tmp_path):
    data = write_npz(tmp_path / "data.npz", 1250, (8, 8, 1))
    argv = [
        "train",
        "--data",
        f"npz:{data}",
        "--epochs",
        WORKER_EPOCHS,
        "--batch-size",
        25,
        "--hidden",
        16,
        "--val-size",
        250,
        "--logdir",
        tmp_path / "logs",
        "--json",
    ]
    argv = [str(a) for a in argv]
    one = subprocess.run(
        [str(KBN), *argv, "--run-name", "one"], capture_output=True, text=True, timeout=300
    )
    assert one.returncode == 0, one.stderr[-3000:]
    alone = json.loads(one.stdout.strip().splitlines()[-1])

    run_dir = tmp_path / "logs" / "two"
    processes = start_workers([*argv, "--run-name", "two"], free_ports(2), tmp_path)
    try:
        deadline = time.monotonic() + 240
        while epochs_recorded(run_dir) < 2:
            assert all(p.poll() is None for p in processes), (
                tmp_path / "worker-0.stderr"
            ).read_text()[-3000:]
            assert time.monotonic() < deadline, "the workers did not reach their second epoch"
            time.sleep(0.01)
    finally:
        for p in processes:
            p.kill()
            p.wait()
    recorded = epochs_recorded(run_dir)
    assert 2 <= recorded < WORKER_EPOCHS

    processes = start_workers([*argv, "--run-name", "two", "--resume"], free_ports(2), tmp_path)
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], (tmp_path / "worker-1.stderr").read_text()[
        -3000:
    ]
    figures = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    assert figures[0]["run_dir"] == str(run_dir)  # the chief writes the run folder
    summary = read_json(run_dir / "summary.json")
    assert summary["finished"] and summary["epochs_run"] == WORKER_EPOCHS
    for key, values in summary["history"].items():
        assert len(values) == WORKER_EPOCHS, key
    for split in ("train", "validation"):
        assert sorted(step for step, _ in epoch_steps(run_dir / split)) == list(
            range(WORKER_EPOCHS)
        ), split
    # Both workers end with the same figures, and (float32 sums taken in another order over
    # 300 steps) those of one process with the same global batch.
    for key in ("train_acc", "val_acc", "train_loss", "val_loss"):
        assert figures[1][key] == pytest.approx(figures[0][key], rel=1e-6), key
    for key in ("train_acc", "val_acc"):
        assert figures[0][key] == pytest.approx(alone[key], abs=0.005), key
    for key in ("train_loss", "val_loss"):
        assert figures[0][key] == pytest.approx(alone[key], rel=5e-3), key
