"""The distributed search: who this process is, the chief's oracle server, its worker processes.

    chief (this process)  serves the oracle over KerasTuner's gRPC service on
                          HOST:PORT (127.0.0.1 unless told otherwise) and
                          watches its workers
    worker i              python -c <start tuning.worker> PROJECT_DIR, with
                          KERASTUNER_TUNER_ID=tuner<i>; output in PROJECT_DIR/worker-<i>.log

A worker rebuilds the chief's tuner from `worker.json` (settings) and
`worker-data.npz` (the splits) in the project folder and takes trials until
the oracle has none left. The chief ends when every trial has ended, or
with an error when every worker has died (a `--resume` continues the
search). A worker that dies hands its trial back to the queue, and another
worker resumes it from its last backup. A worker restarts every
`recycle_after` trials (memory stays flat). KerasTuner's service has no
authentication: whoever reaches the port can read and write the search, so
the chief listens on the loopback unless told otherwise.

The role is read from KerasTuner's variable once, by `role()`.
"""

import dataclasses
import os
import pathlib
import socket
import subprocess
import sys
import time
from concurrent import futures

import grpc
import numpy as np

from kbn import _compat
from kbn.data import Dataset, Split
from kbn.errors import KbnError
from kbn.fileio import atomic_path, read_json, write_json
from kbn.training.config import TrainConfig
from tuning.tuner import RECYCLE_EXIT

WORKER_SETTINGS = "worker.json"
WORKER_DATA = "worker-data.npz"
LOOPBACK = "127.0.0.1"

# KerasTuner's variables, as its distributed mode reads them.
TUNER_ID = "KERASTUNER_TUNER_ID"
ORACLE_IP = "KERASTUNER_ORACLE_IP"
ORACLE_PORT = "KERASTUNER_ORACLE_PORT"


def role():
    """ "chief", "worker" or None (a search in one process), from KERASTUNER_TUNER_ID."""
    tuner_id = os.environ.get(TUNER_ID)
    if tuner_id is None:
        return None
    return "chief" if "chief" in tuner_id else "worker"


def chief_address():
    """(host, port) a chief started with KerasTuner's variables listens on.

    The user names the address in KERASTUNER_ORACLE_IP: 0.0.0.0 for every
    network of the machine (a private one only), else one of its addresses.
    """
    try:
        return os.environ[ORACLE_IP], int(os.environ[ORACLE_PORT])
    except (KeyError, ValueError):
        raise KbnError(
            f"a search chief needs {ORACLE_IP} (the address to listen on) and {ORACLE_PORT} "
            f"(a port number); got {os.environ.get(ORACLE_IP)!r} "
            f"and {os.environ.get(ORACLE_PORT)!r}"
        ) from None


def free_port(host=LOOPBACK):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def write_worker_files(project_dir, dataset, search_config, train_config):
    """The search's settings and data, for workers to rebuild the same tuner."""
    project_dir = pathlib.Path(project_dir)
    write_json(
        project_dir / WORKER_SETTINGS,
        {
            "search": dataclasses.asdict(search_config),
            "train": dataclasses.asdict(train_config or TrainConfig()),
            "class_names": list(dataset.class_names),
            "name": dataset.name,
        },
    )
    with atomic_path(project_dir / WORKER_DATA) as tmp:
        np.savez(
            tmp,
            x_train=dataset.train.x,
            y_train=dataset.train.y,
            x_val=dataset.val.x,
            y_val=dataset.val.y,
        )


def read_worker_files(project_dir):
    """(dataset, search settings dict, TrainConfig) written by the chief in `project_dir`."""
    project_dir = pathlib.Path(project_dir)
    settings = read_json(project_dir / WORKER_SETTINGS)
    with np.load(project_dir / WORKER_DATA) as data:
        dataset = Dataset(
            name=settings["name"],
            train=Split(data["x_train"], data["y_train"]),
            val=Split(data["x_val"], data["y_val"]),
            test=None,
            class_names=tuple(settings["class_names"]),
        )
    return dataset, settings["search"], TrainConfig(**settings["train"])


def worker_command(project_dir):
    """The command line of one worker process, immune to the working folder.

    `python -m tuning.worker` would put the working folder first on the
    import path, so a user's own `tuning.py` (or `kbn.py`, `keras.py`) there
    would be imported instead of ours. The worker's path starts instead with
    the folder this process imported `tuning` from: it runs the chief's kbn.
    """
    root = str(pathlib.Path(__file__).resolve().parent.parent)  # the folder holding tuning/
    code = (
        "import sys; sys.path[0] = sys.argv.pop(1); "
        "from tuning.worker import main; sys.exit(main(sys.argv[1:]))"
    )
    return [sys.executable, "-c", code, root, str(project_dir)]


class WorkerPool:
    """N worker processes of one search, started and watched by the chief.

    Args:
        project_dir: the search's folder; worker i logs to `worker-<i>.log`.
        count: the number of workers.
        env: KerasTuner's variables for the workers (oracle address).
    """

    def __init__(self, project_dir, count, env):
        self.project_dir = pathlib.Path(project_dir)
        self.count = count
        self.env = env
        # N processes share the cores instead of each claiming all.
        self.threads = max(1, (os.cpu_count() or 1) // count)
        self.processes = {}  # tuner id -> the running (or not yet polled) process
        self.dead = {}  # tuner id -> exit status of a worker that died
        self.done = []  # tuner ids of workers that ended cleanly: the oracle had no trial for them

    def start(self):
        for i in range(self.count):
            self._start(i)

    def _start(self, i):
        env = {
            **os.environ,
            **self.env,
            TUNER_ID: f"tuner{i}",
            "TF_NUM_INTRAOP_THREADS": str(self.threads),
            "TF_NUM_INTEROP_THREADS": "1",
        }
        with open(self.project_dir / f"worker-{i}.log", "a") as log:
            self.processes[f"tuner{i}"] = subprocess.Popen(
                worker_command(self.project_dir), env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def poll(self):
        """Restart recycled workers; return the tuner ids of workers that died since the last
        poll."""
        died = []
        for tuner_id, process in list(self.processes.items()):
            status = process.poll()
            if status == RECYCLE_EXIT:
                self._start(int(tuner_id.removeprefix("tuner")))
            elif status == 0:  # the oracle had no trial left for it
                del self.processes[tuner_id]
                self.done.append(tuner_id)
            elif status is not None:
                self.dead[tuner_id] = status
                del self.processes[tuner_id]
                died.append(tuner_id)
        return died

    @property
    def running(self):
        return bool(self.processes)

    def restart_one(self):
        """Start again a worker that had ended cleanly; False when none had.

        A worker told that no trial was left ends; if another worker dies
        afterwards, its trial goes back to the queue with nobody to take it.
        """
        if not self.done:
            return False
        self._start(int(self.done.pop().removeprefix("tuner")))
        return True

    def stop(self):
        """Stop the workers still running (the chief is failing)."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def wait(self):
        """Wait for the workers, which end once the oracle has no trial left."""
        for process in self.processes.values():
            process.wait()


def serve(oracle, host, port, pool=None, poll_seconds=0.1):
    """Serve `oracle` to workers on host:port until the search has ended.

    KerasTuner's own server loop (`oracle_chief.start_server`) waits for its
    workers forever, checks the end at a fixed interval of its own, and
    binds whatever address the workers connect to. Here the chief binds
    `host`, checks every `poll_seconds`, hands a dead worker's trial back to
    the queue, and stops when every worker of `pool` has died.

    Args:
        oracle: the search's oracle.
        host: the address to listen on ("127.0.0.1": this machine only).
        port: the port.
        pool: the `WorkerPool` this chief started, or None when the workers
            run elsewhere (a search that spans machines).
        poll_seconds: how often the chief looks at the search and its workers.

    Raises:
        KbnError: when every worker of `pool` died before the search ended;
            the oracle's state is saved for `--resume`.
    """
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    add_servicer, servicer_class, _ = _compat.oracle_service()
    servicer = servicer_class(oracle)
    add_servicer(servicer, server)
    if not server.add_insecure_port(f"{host}:{port}"):
        raise KbnError(f"the search's chief cannot listen on {host}:{port}")
    server.start()
    try:
        if pool is not None:
            pool.start()
        while True:
            time.sleep(poll_seconds)
            if pool is not None:
                for tuner_id in pool.poll():
                    oracle.release(tuner_id)
                if not pool.running and _compat.oracle_retry_queue(oracle) and pool.restart_one():
                    continue
                if not pool.running and not _search_ended(oracle, servicer):
                    statuses = ", ".join(f"{t} {s}" for t, s in sorted(pool.dead.items()))
                    raise KbnError(
                        f"every search worker has died (exit status: {statuses or 'none'}) before "
                        f"the search ended; their output is in {pool.project_dir}/worker-*.log; "
                        "run the same command with --resume to continue"
                    )
            if _search_ended(oracle, servicer):
                break
        if pool is not None:
            pool.wait()
    except BaseException:
        if pool is not None:
            pool.stop()
        raise
    finally:
        oracle.save()
        server.stop(grace=1)


def _search_ended(oracle, servicer):
    # A worker was told STOPPED (no trial left) and no trial is running or waiting,
    # including a dead worker's trial handed back to the queue.
    waiting = _compat.oracle_retry_queue(oracle)
    return servicer.stop_triggered and not waiting and _compat.oracle_service()[2](oracle)
