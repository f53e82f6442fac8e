"""Run the report's coarse-to-fine search of eta and lambda with KerasTuner.

    Dataset --KbnHyperModel + CoarseToFineOracle + KbnTuner--> DIRECTORY/PROJECT/
        oracle.json, trial_*/      KerasTuner's own state (resumable, distributed)
        runs/trial_<id>/           each trial's kbn run: TensorBoard (with HParams),
                                   summary.json, model.keras, backup while unfinished
        results.csv, results.md    eta, lambda, validation accuracy, round, status
        search.png                 log eta vs log lambda, coloured by accuracy, rounds' boxes

Trials train with kbn's training (same schedule and divergence guard); a
diverged trial is recorded as failed, not a crash. A killed search resumes
with `resume=True`: finished trials are kept, none runs twice, and an
interrupted trial continues from its last finished epoch (KerasTuner alone
restarts it from zero). `workers=N` runs a chief and N workers on
127.0.0.1 with KerasTuner's own distributed mode; the same search spans
machines with KerasTuner's variables (see the README).
"""

import csv
import dataclasses
import os
import pathlib
import resource
import socket
import subprocess
import sys
import threading
import time

import keras
import keras_tuner
import numpy as np
from tensorboard.plugins.hparams import api as hparams_api
import tensorflow as tf

from kbn import plots
from kbn._quiet import tensorflow_warnings_off
from kbn.errors import KbnError
from kbn.evaluate import load_model
from kbn.data import Dataset, Split
from kbn.fileio import atomic_path, read_json, write_json
from kbn.layers import Dense
from kbn.training import TrainConfig, train
from tuning.hypermodel import ETA_RANGE, LAM_RANGE, KbnHyperModel
from tuning.oracle import CoarseToFineOracle

OBJECTIVE = keras_tuner.Objective("val_accuracy", direction="max")


@dataclasses.dataclass
class SearchConfig:
    """Every setting of a search, saved with it."""

    rounds: int = 3  # the report's three intervals
    trials: int = 50  # in all rounds together
    epochs: int = 10  # per trial
    eta_range: tuple = ETA_RANGE
    lam_range: tuple = LAM_RANGE
    architecture: bool = False  # also search depth, width, batch norm
    directory: str = "logs/tuning"
    project: str = "search"
    resume: bool = False  # continue the search in directory/project
    workers: int = 0  # 0: this process; N: a chief (this process) and N workers on 127.0.0.1
    # A worker restarts after this many trials. Trials of one architecture share a model
    # (flat memory); each new architecture leaves a few MB in TensorFlow.
    recycle_after: int = 50
    seed: int = 0
    verbose: int = 1  # KerasTuner's trial-by-trial display: 0 silent

    def validate(self):
        """Raise KbnError naming the first setting out of range."""
        for name in ("eta_range", "lam_range"):
            low, high = getattr(self, name)
            if not 0 < low < high:
                raise KbnError(
                    f"{name.replace('_', ' ')} must be low:high with 0 < low < high, got {low}:{high}"
                )
        checks = [
            (self.rounds >= 1, f"rounds must be at least 1, got {self.rounds}"),
            (self.trials >= self.rounds, f"trials must be at least the number of rounds ({self.rounds}), got {self.trials}"),
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.workers >= 0, f"workers must be 0 or more, got {self.workers}"),
            (self.recycle_after >= 1, f"recycle_after must be at least 1, got {self.recycle_after}"),
        ]
        for ok, message in checks:
            if not ok:
                raise KbnError(message)


class KbnTuner(keras_tuner.Tuner):
    """A KerasTuner `Tuner` whose trials are kbn training runs.

    Each trial is `kbn.train` in `runs/trial_<id>` under the project folder,
    with the trial's eta and the base `TrainConfig` (schedule, epochs,
    divergence guard). A trial that was interrupted resumes from its last
    finished epoch; one that finished before the kill is not run again.

    Args:
        dataset: the `kbn.Dataset` every trial trains on.
        train_config: the base `TrainConfig`; eta, run_name, logdir, save
            and resume are set per trial.
        trials_before_exit: a worker process exits after this many trials
            (the chief starts a fresh one); None: never.
        **kwargs: `keras_tuner.Tuner` arguments (oracle, hypermodel,
            directory, project_name, overwrite).
    """

    def __init__(self, dataset, train_config, trials_before_exit=None, **kwargs):
        super().__init__(**kwargs)
        self.dataset = dataset
        self.train_config = train_config
        self.trials_before_exit = trials_before_exit
        self._trials_run = 0
        self._warm = None  # (architecture values, model, its initial weights)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)  # the trial is recorded by the oracle first
        self._trials_run += 1
        if self.trials_before_exit and self._trials_run >= self.trials_before_exit:
            raise SystemExit(RECYCLE_EXIT)  # the chief starts a fresh worker

    def run_dir(self, trial_id):
        return pathlib.Path(self.project_dir) / "runs" / f"trial_{trial_id}"

    def run_trial(self, trial, *args, **kwargs):
        run_dir = self.run_dir(trial.trial_id)
        summary = read_json(run_dir / "summary.json")
        if not (summary and summary.get("finished")):  # else killed before the record
            summary = self._train(trial.hyperparameters, run_dir)
        if summary["diverged"]:
            raise keras_tuner.errors.FailedTrialError(summary["diverged"])
        return {"val_accuracy": summary["final"]["val_acc"]}

    def _train(self, hp, run_dir):
        """Train (or resume) the trial's model in run_dir; return its summary."""
        model = self._model_for(hp)
        config = dataclasses.replace(
            self.train_config,
            eta=hp.get("eta"),
            logdir=str(run_dir.parent),
            run_name=run_dir.name,
            save=str(run_dir / "model.keras"),
            resume=run_dir.exists(),
            verbose=0,
            plot_curves=False,  # TensorBoard and search.png show the trials; a PNG each costs 0.25 s
        )
        with tensorflow_warnings_off():  # a new model, new graphs, every trial
            result = train(model, self.dataset, config)
        _log_hparams(run_dir, hp.values, result.summary)
        # Who ran it, and the process's peak memory so far: flat across
        # trials, or KerasTuner's known growth (its issues 395, 873, 1031).
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        write_json(run_dir / "process.json", {"worker": self.tuner_id, "peak_rss_mb": peak_kib / 1024})
        return result.summary

    def _model_for(self, hp):
        """The trial's model, at its initial weights.

        Trials that differ only in eta and lambda share one model: it goes back
        to the weights it was built with, its kernels take the trial's lambda,
        and `kbn.train` reuses its compiled training step. Tracing a new model
        costs more than its ten epochs, and every model built stays in
        TensorFlow's memory.
        """
        architecture = {k: v for k, v in hp.values.items() if k not in ("eta", "lam")}
        if self._warm and self._warm[0] == architecture:
            _, model, initial = self._warm
            model.set_weights(initial)
            for layer in model.layers:
                if isinstance(layer, Dense):
                    layer.l2 = hp.get("lam")
            return model
        keras.backend.clear_session()  # Keras's global state; flat memory needs workers
        model = self.hypermodel.build(hp)
        self._warm = (architecture, model, model.get_weights())
        return model

    def save(self):
        """KerasTuner's save, with files replaced whole (see the oracle's `save`)."""
        if not self._is_worker():
            self.oracle.save()
        write_json(self._get_tuner_fname(), self.get_state())

    def save_model(self, trial_id, model, step=0):
        """kbn's training already saved the trial's model in its run dir."""

    def load_model(self, trial):
        return load_model(self.run_dir(trial.trial_id) / "model.keras")


def _log_hparams(run_dir, values, summary):
    """The trial's hyper-parameters and final accuracy for TensorBoard's HParams."""
    writer = tf.summary.create_file_writer(str(run_dir / "hparams"))
    with writer.as_default():
        hparams_api.hparams(values, trial_id=run_dir.name)
        final = summary.get("final") or {}
        if "val_acc" in final:
            tf.summary.scalar("val_accuracy", final["val_acc"], step=summary["epochs_run"])
    writer.close()


@dataclasses.dataclass
class SearchResult:
    """What `search` gives back.

    Attributes:
        best: {"eta", "lam", "val_acc"} of the best trial, or None.
        rounds: [{"eta_range", "lam_range", "trials", "best_val_acc"}].
        trials: one dict per trial: trial_id, round, eta, lam, val_acc
            (None when failed), status, worker, peak_rss_mb (the worker's peak
            memory when the trial ended).
        project_dir: the search's folder.
        seconds: wall time of this call.
    """

    best: dict | None
    rounds: list
    trials: list
    project_dir: pathlib.Path
    seconds: float

    @property
    def trials_completed(self):
        return sum(1 for t in self.trials if t["status"] == "COMPLETED")

    @property
    def trials_by_worker(self):
        counts = {}
        for t in self.trials:
            if t["status"] == "COMPLETED" and t["worker"]:
                counts[t["worker"]] = counts.get(t["worker"], 0) + 1
        return counts


def search(dataset, config=None, train_config=None):
    """Run (or resume) the coarse-to-fine search of eta and lambda.

    Args:
        dataset: a `kbn.Dataset`; its val split scores the trials.
        config: a `SearchConfig`.
        train_config: the base `TrainConfig` of every trial (its epochs are
            replaced by `config.epochs`).

    Returns:
        a `SearchResult`; the folder also holds results.csv, results.md and
        search.png.
    """
    config = config or SearchConfig()
    config.validate()
    start = time.perf_counter()
    role = os.environ.get("KERASTUNER_TUNER_ID")
    if config.workers and role is None:
        tuner = _search_on_loopback(dataset, config, train_config)
    else:
        if role and role != "chief":  # a worker never wipes the shared project
            config = dataclasses.replace(config, resume=True)
        tuner = _tuner(dataset, config, train_config)
        tuner.search(verbose=config.verbose)
        if role and role != "chief":  # only the chief holds the whole search
            return None
    result = _collect(tuner, time.perf_counter() - start)
    _write_results(result, config)
    return result


RECYCLE_EXIT = 75  # a worker that ends this way asks to be started afresh


def _search_on_loopback(dataset, config, train_config):
    """KerasTuner's distributed mode on this machine: a chief and N workers.

    This process is the chief: it serves the oracle on 127.0.0.1 until every
    trial has ended. Each worker is `python -m tuning.worker PROJECT_DIR`,
    which rebuilds the same tuner from the settings and data written here;
    its output goes to PROJECT_DIR/worker-<i>.log. Trials that differ only in
    eta and lambda share one model, but TensorFlow keeps a few megabytes for
    every model a process has built, freed or not (an architecture search
    builds many), so a worker exits after `config.recycle_after` trials and
    the chief starts a fresh one: memory stays bounded however long the search.

    Returns:
        the chief's tuner, whose oracle holds every trial.
    """
    env = {
        "KERASTUNER_ORACLE_IP": "127.0.0.1",
        "KERASTUNER_ORACLE_PORT": str(_free_port()),
    }
    saved = {k: os.environ.get(k) for k in (*env, "KERASTUNER_TUNER_ID")}
    os.environ.update(env, KERASTUNER_TUNER_ID="chief")
    try:
        tuner = _tuner(dataset, config, train_config)
        project_dir = pathlib.Path(tuner.project_dir)
        _write_worker_files(project_dir, dataset, config, train_config)
        _serve_workers(tuner, project_dir, config)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return tuner


def _serve_workers(tuner, project_dir, config):
    """Run the chief's search while N workers run trials, restarting recycled ones."""
    threads = max(1, (os.cpu_count() or 1) // config.workers)

    def start(i):
        worker_env = {
            **os.environ,
            "KERASTUNER_TUNER_ID": f"tuner{i}",
            # N processes share the cores instead of each claiming all.
            "TF_NUM_INTRAOP_THREADS": str(threads),
            "TF_NUM_INTEROP_THREADS": "1",
        }
        with open(project_dir / f"worker-{i}.log", "a") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "tuning.worker", str(project_dir)],
                env=worker_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    workers = {i: start(i) for i in range(config.workers)}
    done = threading.Event()
    failures = []

    def restart_recycled_workers():
        while not done.wait(0.2):
            for i, worker in list(workers.items()):
                status = worker.poll()
                if status == RECYCLE_EXIT:
                    workers[i] = start(i)
                elif status not in (None, 0) and worker not in failures:
                    failures.append(worker)

    monitor = threading.Thread(target=restart_recycled_workers, daemon=True)
    monitor.start()
    try:
        tuner.search(verbose=config.verbose)
    finally:
        done.set()
        monitor.join()
        for worker in workers.values():
            if worker.wait() not in (0, RECYCLE_EXIT) and worker not in failures:
                failures.append(worker)
    if failures:
        raise KbnError(
            f"a search worker exited with status {failures[0].returncode}; "
            f"its output is in {project_dir}/worker-*.log"
        )


WORKER_SETTINGS = "worker.json"
WORKER_DATA = "worker-data.npz"


def _write_worker_files(project_dir, dataset, config, train_config):
    """The search's settings and data, for workers to rebuild the same tuner."""
    write_json(
        project_dir / WORKER_SETTINGS,
        {
            "search": dataclasses.asdict(config),
            "train": dataclasses.asdict(train_config or TrainConfig()),
            "class_names": list(dataset.class_names),
            "name": dataset.name,
        },
    )
    with atomic_path(project_dir / WORKER_DATA) as tmp:
        np.savez(tmp, x_train=dataset.train.x, y_train=dataset.train.y,
                 x_val=dataset.val.x, y_val=dataset.val.y)


def read_worker_files(project_dir):
    """(dataset, SearchConfig, TrainConfig) written by the chief in `project_dir`."""
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
    search_config = SearchConfig(**settings["search"])
    return dataset, search_config, TrainConfig(**settings["train"])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tuner(dataset, config, train_config):
    train_config = dataclasses.replace(
        train_config or TrainConfig(), epochs=config.epochs, seed=config.seed
    )
    oracle = CoarseToFineOracle(
        objective=OBJECTIVE,
        max_trials=config.trials,
        rounds=config.rounds,
        ranges={"eta": tuple(config.eta_range), "lam": tuple(config.lam_range)},
        seed=config.seed,
        # A failed trial (diverged) is a result of the search, not a reason to stop it.
        max_consecutive_failed_trials=config.trials + 1,
    )
    hypermodel = KbnHyperModel(
        dataset.train.x,
        dataset.num_classes,
        eta_range=config.eta_range,
        lam_range=config.lam_range,
        architecture=config.architecture,
        seed=config.seed,
    )
    role = os.environ.get("KERASTUNER_TUNER_ID")
    return KbnTuner(
        dataset,
        train_config,
        trials_before_exit=config.recycle_after if role and role != "chief" else None,
        oracle=oracle,
        hypermodel=hypermodel,
        directory=config.directory,
        project_name=config.project,
        overwrite=not config.resume,
    )


def _collect(tuner, seconds):
    """The search's trials, rounds and best pair, from the oracle's records."""
    oracle = tuner.oracle
    trials = []
    for trial_id, trial in sorted(oracle.trials.items()):
        process = read_json(tuner.run_dir(trial_id) / "process.json") or {}
        score = trial.score if trial.status == "COMPLETED" else None
        trials.append(
            {
                "trial_id": trial_id,
                "round": oracle.round_of(trial_id),
                "eta": trial.hyperparameters.get("eta"),
                "lam": trial.hyperparameters.get("lam"),
                "val_acc": score,
                "status": trial.status,
                "worker": process.get("worker"),
                "peak_rss_mb": process.get("peak_rss_mb"),
            }
        )
    done = [t for t in trials if t["val_acc"] is not None]
    best = max(done, key=lambda t: t["val_acc"], default=None)
    rounds = [
        {
            "eta_range": list(r["eta_range"]),
            "lam_range": list(r["lam_range"]),
            "trials": r["trials"],
            "best_val_acc": r["best"],
        }
        for r in oracle.rounds_summary()
    ]
    return SearchResult(
        best={k: best[k] for k in ("eta", "lam", "val_acc")} if best else None,
        rounds=rounds,
        trials=trials,
        project_dir=pathlib.Path(tuner.project_dir),
        seconds=seconds,
    )


RESULT_COLUMNS = ("trial_id", "round", "eta", "lam", "val_acc", "status", "worker", "peak_rss_mb")


def _write_results(result, config):
    """results.csv, results.md (best first) and search.png in the project folder."""
    folder = result.project_dir
    with atomic_path(folder / "results.csv") as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, RESULT_COLUMNS)
            writer.writeheader()
            writer.writerows(result.trials)
    ranked = sorted(result.trials, key=lambda t: -(t["val_acc"] if t["val_acc"] is not None else -1))
    lines = [
        "| eta | lambda | validation accuracy | round | status |",
        "|---|---|---|---|---|",
        *(
            f"| {t['eta']:.4g} | {t['lam']:.4g} | "
            f"{'' if t['val_acc'] is None else format(t['val_acc'], '.4f')} | {t['round']} | {t['status']} |"
            for t in ranked
        ),
    ]
    with atomic_path(folder / "results.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    boxes = [
        {"eta_range": r["eta_range"], "lam_range": r["lam_range"], "round": i}
        for i, r in enumerate(result.rounds, start=1)
    ]
    plots.plot_search(
        result.trials,
        folder / "search.png",
        title=f"coarse-to-fine search, {config.rounds} rounds, {len(result.trials)} trials",
        boxes=boxes,
    )
