"""Strategies by name: the devices and machines a run trains on.

    default        one device (TensorFlow's default strategy)
    mirrored       `tf.distribute.MirroredStrategy` over every GPU; on a
                   machine without GPUs, over `replicas` logical CPU devices
    multi-worker   `tf.distribute.MultiWorkerMirroredStrategy`, its machines
                   and this process's task named by the `TF_CONFIG` variable

Build the model inside the strategy's scope, then train it; the global batch
stays `TrainConfig.batch_size`, split evenly among the replicas:

    strategy = make_strategy("mirrored", replicas=2)
    with strategy.scope():
        model = kbn.build_mlp(...)
    kbn.train(model, dataset, config)

Every step of a multi-worker run needs every worker: when one is lost, the
collective's error becomes `kbn.errors.WorkerLost`, naming it and saying to
restart every worker with `--resume` (`lost_workers_named`, used by `train`).
"""

import contextlib
import json
import os
import re
import socket
from collections.abc import Iterator, Mapping

import tensorflow as tf

from kbn.errors import KbnError, WorkerLost

STRATEGIES = ("default", "mirrored", "multi-worker")


def make_strategy(name: str = "default", replicas: int | None = None) -> tf.distribute.Strategy:
    """The `tf.distribute.Strategy` called `name`.

    Call it before TensorFlow has run anything in the process: logical CPU
    devices and a multi-worker cluster can only be set up at its start.

    Args:
        name: one of `STRATEGIES`.
        replicas: for `mirrored` on a machine without GPUs, how many logical
            CPU devices to split the CPU into (default 2); with GPUs, at most
            this many GPUs (default all). Not used by the others.

    Returns:
        a `tf.distribute.Strategy`.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            names = [f"/gpu:{i}" for i in range(len(gpus))][: replicas or len(gpus)]
            return tf.distribute.MirroredStrategy(names)
        return tf.distribute.MirroredStrategy(_logical_cpus(replicas or 2))
    if name == "multi-worker":
        try:
            cluster = json.loads(os.environ.get("TF_CONFIG", ""))["cluster"]
        except (ValueError, KeyError, TypeError):
            raise KbnError(
                "--strategy multi-worker needs TF_CONFIG naming the cluster and this task, e.g. "
                """'{"cluster": {"worker": ["127.0.0.1:12345", "127.0.0.1:12346"]}, """
                """"task": {"type": "worker", "index": 0}}'"""
            ) from None
        if not cluster:
            raise KbnError("TF_CONFIG names no machine in its cluster")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise KbnError(f"strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")


def _logical_cpus(count: int) -> list[str]:
    """Names of `count` logical devices carved out of the CPU."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    wanted = [tf.config.LogicalDeviceConfiguration()] * count
    with contextlib.suppress(RuntimeError):  # TensorFlow has started: keep its devices if they fit
        tf.config.set_logical_device_configuration(cpu, wanted)
    logical = tf.config.list_logical_devices("CPU")
    if len(logical) != count:
        raise KbnError(
            f"cannot split the CPU into {count} devices once TensorFlow has started "
            f"(it has {len(logical)}); create the strategy first in the process"
        )
    return [device.name for device in logical]


def worker_id(strategy: tf.distribute.Strategy) -> str | None:
    """None for the process that writes the run folder (the chief), else its task id.

    Keras's multi-worker convention: the chief (task `chief`, or worker 0
    when the cluster names no chief) writes files; the others only keep
    what they need to resume.

    Args:
        strategy: a `tf.distribute.Strategy`.

    Returns:
        None, or "worker-1"-like: the task's type and index.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return None
    cluster = resolver.cluster_spec().as_dict()
    if resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster
    ):
        return None
    return f"{resolver.task_type}-{resolver.task_id}"


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """Whether `strategy` spans processes (`MultiWorkerMirroredStrategy`)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def smallest_across_workers(strategy: tf.distribute.Strategy, value: int) -> int:
    """The smallest of every worker's `value` (an int); `value` itself in one process."""
    if not is_multi_worker(strategy):
        return value
    reported = strategy.run(lambda: tf.constant([value], tf.int64))
    return int(tf.reduce_min(strategy.gather(reported, axis=0)))


# What a collective raises when a peer is gone: a reset or refused connection,
# or the coordination service's missed heartbeats, give UnavailableError; a
# coordination leader that stops answering gives DeadlineExceededError.
_PEER_FAILURES = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError)
_TASK = re.compile(r"/job:(\w+)/(?:replica:\d+/)?task:(\d+)")
PROBE_TIMEOUT = 2.0  # seconds to wait for a peer's port to answer


@contextlib.contextmanager
def lost_workers_named(strategy: tf.distribute.Strategy) -> Iterator[None]:
    """Within the block, a collective failing for a lost peer raises `WorkerLost`.

    Only under `MultiWorkerMirroredStrategy`, and only TensorFlow's errors of
    a collective that lost its peer; every other error propagates unchanged.

    Args:
        strategy: the model's `tf.distribute.Strategy`.

    Raises:
        WorkerLost: naming the lost workers (`lost_workers`), from
            TensorFlow's error.
    """
    try:
        yield
    except _PEER_FAILURES as exc:
        if not is_multi_worker(strategy) or "collective" not in str(exc).lower():
            raise
        peers = _peers(strategy)
        raise worker_lost(peers, lost_workers(peers, str(exc))) from exc


def _peers(strategy: tf.distribute.Strategy) -> dict[str, str]:
    """{task ("worker 1"): address} of every other task that takes part in the collectives."""
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec()
    me = (resolver.task_type, resolver.task_id)
    return {
        _task_name(job, index): spec.task_address(job, index)
        for job in ("chief", "worker")
        if job in spec.jobs
        for index in spec.task_indices(job)
        if (job, index) != me
    }


def _task_name(job: str, index: int) -> str:
    return "chief" if job == "chief" else f"{job} {index}"


def lost_workers(peers: Mapping[str, str], message: str) -> list[str]:
    """The peers gone: those whose port refuses a connection, else those `message` names.

    A killed process's port refuses at once, whatever TensorFlow's error
    says; a peer still up but failing or hung is named by the error alone.

    Args:
        peers: {task ("worker 1"): "host:port"} of the other tasks.
        message: TensorFlow's error, which may name tasks as
            "/job:worker/replica:0/task:1".

    Returns:
        the lost tasks among `peers`, in its order; empty when neither way tells.
    """
    gone = [task for task, address in peers.items() if not _answers(address)]
    if gone:
        return gone
    named = {_task_name(job, int(index)) for job, index in _TASK.findall(message)}
    return [task for task in peers if task in named]


def _answers(address: str) -> bool:
    """Whether something listens at "host:port"."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT):
            return True
    except (OSError, ValueError):
        return False


def worker_lost(peers: Mapping[str, str], lost: list[str]) -> WorkerLost:
    """The `WorkerLost` error naming `lost` (tasks of `peers`), and how to go on."""
    who = ", ".join(f"{task} ({peers[task]})" for task in lost) or "a worker"
    return WorkerLost(
        f"{who} stopped or cannot be reached, and training needs every worker at each step: "
        "restart every worker with the same command and --resume (TrainConfig(resume=True) "
        "in Python) to go on from the last epoch they all recorded",
        {task: peers[task] for task in lost},
    )
