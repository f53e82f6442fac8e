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
"""

import contextlib
import json
import os

import tensorflow as tf

from kbn.errors import KbnError

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
