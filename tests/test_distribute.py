"""Tests for kbn.training.distribute and training under tf.distribute: on 2 replicas (logical CPU
devices), kbn's synchronized BatchNorm trains exactly as one device does on the same global
batch, unsynchronized statistics do not, and the hand-written backward pass of the
synchronized layer matches autodiff and finite differences. Under MultiWorkerMirroredStrategy,
two `kbn train` workers killed mid-run resume with every epoch once, and when one of them is
killed the other ends with one `error:` line naming it.

Each strategy runs in a process of its own (tests/distributed_run.py): two MirroredStrategy
objects in one process make the second one's collectives abort."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from test_reliability import KBN, epoch_steps, epochs_recorded, write_npz

from kbn.errors import KbnError, WorkerLost
from kbn.fileio import read_json
from kbn.training import distribute
from kbn.training.distribute import STRATEGIES, lost_workers, make_strategy, worker_lost

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


def worker_argv(folder, epochs=WORKER_EPOCHS):
    """`kbn train` on a small npz under `folder`, as every worker of these tests runs it."""
    data = write_npz(folder / "data.npz", 1250, (8, 8, 1))
    argv = [
        "train",
        "--data",
        f"npz:{data}",
        "--epochs",
        epochs,
        "--batch-size",
        25,
        "--hidden",
        16,
        "--val-size",
        250,
        "--logdir",
        folder / "logs",
        "--json",
    ]
    return [str(a) for a in argv]


def wait_for_epochs(processes, run_dir, folder, epochs=2):
    """Until the chief has recorded `epochs` epochs; fails if a worker ends first."""
    deadline = time.monotonic() + 240
    while epochs_recorded(run_dir) < epochs:
        assert all(p.poll() is None for p in processes), (folder / "worker-0.stderr").read_text()[
            -3000:
        ]
        assert time.monotonic() < deadline, f"the workers did not reach epoch {epochs}"
        time.sleep(0.01)


def resume_workers(argv, run_dir, folder, epochs=WORKER_EPOCHS):
    """Both workers again with `--resume`: their `--json` figures, once both ended well with
    every epoch once in summary.json and TensorBoard."""
    processes = start_workers([*argv, "--resume"], free_ports(2), folder)
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], (folder / "worker-1.stderr").read_text()[
        -3000:
    ]
    figures = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    assert figures[0]["run_dir"] == str(run_dir)  # the chief writes the run folder
    summary = read_json(run_dir / "summary.json")
    assert summary["finished"] and summary["epochs_run"] == epochs
    for key, values in summary["history"].items():
        assert len(values) == epochs, key
    for split in ("train", "validation"):
        assert sorted(step for step, _ in epoch_steps(run_dir / split)) == list(range(epochs)), (
            split
        )
    return figures


@pytest.mark.slow
def test_two_workers_killed_mid_run_resume_every_epoch_exactly_once(tmp_path):
    argv = worker_argv(tmp_path)
    one = subprocess.run(
        [str(KBN), *argv, "--run-name", "one"], capture_output=True, text=True, timeout=300
    )
    assert one.returncode == 0, one.stderr[-3000:]
    alone = json.loads(one.stdout.strip().splitlines()[-1])

    run_dir = tmp_path / "logs" / "two"
    argv = [*argv, "--run-name", "two"]
    processes = start_workers(argv, free_ports(2), tmp_path)
    try:
        wait_for_epochs(processes, run_dir, tmp_path)
    finally:
        for p in processes:
            p.kill()
            p.wait()
    recorded = epochs_recorded(run_dir)
    assert 2 <= recorded < WORKER_EPOCHS

    figures = resume_workers(argv, run_dir, tmp_path)
    # Both workers end with the same figures, and (float32 sums taken in another order over
    # 300 steps) those of one process with the same global batch.
    for key in ("train_acc", "val_acc", "train_loss", "val_loss"):
        assert figures[1][key] == pytest.approx(figures[0][key], rel=1e-6), key
    for key in ("train_acc", "val_acc"):
        assert figures[0][key] == pytest.approx(alone[key], abs=0.005), key
    for key in ("train_loss", "val_loss"):
        assert figures[0][key] == pytest.approx(alone[key], rel=5e-3), key


LOST_WORKER_EPOCHS = 4  # the kill comes after epoch 2: two epochs of margin


@pytest.mark.slow
def test_a_worker_killed_mid_epoch_stops_the_other_with_one_error_naming_it_then_both_resume(
    tmp_path,
):
    argv = [*worker_argv(tmp_path, LOST_WORKER_EPOCHS), "--run-name", "lost"]
    run_dir = tmp_path / "logs" / "lost"
    ports = free_ports(2)
    processes = start_workers(argv, ports, tmp_path)
    try:
        wait_for_epochs(processes, run_dir, tmp_path)
        processes[1].send_signal(signal.SIGKILL)
        status = processes[0].wait(timeout=120)
    finally:
        for p in processes:
            p.kill()
            p.wait()
    stderr = (tmp_path / "worker-0.stderr").read_text()
    assert status == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    assert f"worker 1 (127.0.0.1:{ports[1]})" in errors[0] and "--resume" in errors[0], errors[0]
    assert epochs_recorded(run_dir) < LOST_WORKER_EPOCHS

    resume_workers(argv, run_dir, tmp_path, LOST_WORKER_EPOCHS)


# --- naming the lost worker ---------------------------------------------------------------


def test_the_lost_workers_are_those_whose_port_refuses_a_connection():
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        alive = f"127.0.0.1:{listening.getsockname()[1]}"
        gone = f"127.0.0.1:{free_ports(1)[0]}"
        peers = {"worker 1": gone, "worker 2": alive}
        # The port decides, whatever task TensorFlow's error names.
        assert lost_workers(peers, "remote target /job:worker/replica:0/task:2") == ["worker 1"]


def test_with_every_port_answering_the_lost_workers_are_those_tensorflows_error_names():
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        address = f"127.0.0.1:{listening.getsockname()[1]}"
        peers = {"chief": address, "worker 1": address, "worker 2": address}
        message = (
            "{{function_node __wrapped__CollectiveReduceV2_device_/job:worker/replica:0/task:0"
            "/device:CPU:0}} Collective ops is aborted by: The following tasks are unhealthy "
            "(stopped sending heartbeats):\n/job:worker/replica:0/task:2"
        )
        assert lost_workers(peers, message) == ["worker 2"]
        assert lost_workers(peers, "Collective ops is aborted by: Deadline Exceeded") == []


def test_a_lost_worker_error_names_the_worker_and_says_how_to_resume():
    error = worker_lost({"worker 1": "10.0.0.2:12345", "worker 2": "10.0.0.3:12345"}, ["worker 1"])
    assert isinstance(error, KbnError)
    assert str(error).startswith("worker 1 (10.0.0.2:12345) stopped or cannot be reached")
    assert "restart every worker with the same command and --resume" in str(error)
    assert error.workers == {"worker 1": "10.0.0.2:12345"}
    assert str(worker_lost({}, [])).startswith("a worker stopped")


def test_only_a_collective_that_lost_its_peer_under_several_workers_becomes_worker_lost(
    monkeypatch,
):
    import tensorflow as tf

    aborted = tf.errors.UnavailableError(
        None, None, "Collective ops is aborted by: recvmsg:Connection reset by peer"
    )
    unrelated = tf.errors.UnavailableError(None, None, "gs://bucket/logs: service unavailable")

    def raised(strategy, error):
        with pytest.raises(Exception) as caught, distribute.lost_workers_named(strategy):
            raise error
        return caught.value

    # One process: TensorFlow's error as it was.
    assert raised(tf.distribute.get_strategy(), aborted) is aborted

    monkeypatch.setattr(distribute, "is_multi_worker", lambda strategy: True)
    monkeypatch.setattr(
        distribute, "_peers", lambda strategy: {"worker 1": f"127.0.0.1:{free_ports(1)[0]}"}
    )
    lost = raised(None, aborted)
    assert isinstance(lost, WorkerLost) and lost.__cause__ is aborted
    assert list(lost.workers) == ["worker 1"]
    assert raised(None, unrelated) is unrelated
    bad = ValueError("not a peer")
    assert raised(None, bad) is bad
