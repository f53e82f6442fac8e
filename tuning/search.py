"""Run the report's coarse-to-fine search of eta and lambda with KerasTuner.

The report: DD2424 assignment 3, k-layer networks with batch normalization.

    Dataset --KbnHyperModel + CoarseToFineOracle + KbnTuner--> DIRECTORY/PROJECT/
        search_settings.json       the settings and data, which a resume must repeat
        oracle.json, trial_*/      KerasTuner's own state (resumable, distributed)
        runs/trial_<id>/           each trial's kbn run: TensorBoard curves and
                                   HParams, summary.json, model.keras
        results.csv, results.md    eta, lambda, validation accuracy, round, status, epochs
        search.png                 log eta vs log lambda, coloured by accuracy, rounds' boxes

Trials train with kbn's training (same schedule and divergence guard); a
diverged trial is recorded as failed, not a crash. With `pruning` the oracle
stops hopeless trials after a few epochs (`tuning.pruning`); a stopped trial
is recorded as such and never run again. A killed search resumes with
`resume=True`: finished trials are kept, none runs twice, and an interrupted
trial continues from its last backup (`backup_interval`). `workers=N` runs a chief and N
worker processes on 127.0.0.1 (`tuning.chief`); the same search spans
machines with KerasTuner's variables (see docs/guide/tune.md).

The modules, by job: `hypermodel` (the space), `oracle` (rounds and
stopping), `pruning` (the stopping rules), `tuner` (a trial is a kbn run),
`chief` (the chief's server and its worker processes), `finalists` (the
best pairs run again with new seeds), `results` (what a
search returns and writes), this one (the settings and the entry point).
"""

import dataclasses
import pathlib
import shutil
import time
import warnings

from kbn.data import Dataset
from kbn.errors import KbnError
from kbn.fileio import read_json, write_json
from kbn.training.callbacks import run_log
from kbn.training.callbacks.run_log import config_record, record_changes
from kbn.training.config import TrainConfig, as_validation_freq
from kbn.training.runlock import LOCK_NAME, RunLock
from tuning import chief
from tuning.finalists import MAX_SEEDS, seeds_after
from tuning.hypermodel import ETA_RANGE, LAM_RANGE, KbnHyperModel
from tuning.oracle import CoarseToFineOracle
from tuning.pruning import PRUNING, pruning_rule
from tuning.results import SearchResult, collect, write_results
from tuning.tuner import OBJECTIVE, KbnTuner

__all__ = ["SearchConfig", "SearchResult", "search"]

# The search's settings and data in its project, for `resume=True` to compare: a
# search resumes only with those it started with.
SETTINGS = "search_settings.json"
# SearchConfig fields that say how a search is run and kept, not what it finds:
# a resumed search may take other values of them.
HOW_RUN = frozenset(
    {"directory", "project", "resume", "workers", "recycle_after", "backup_interval", "verbose"}
)


@dataclasses.dataclass
class SearchConfig:
    """Every setting of a search, saved with it."""

    rounds: int = 3  # the report's three intervals
    trials: int = 50  # in all rounds together
    epochs: int = 10  # per trial
    eta_range: tuple = ETA_RANGE
    lam_range: tuple = LAM_RANGE
    architecture: bool = False  # also search depth, width, batch norm
    # BatchNorm's learnable gamma and beta; off, as in the report's network and
    # `kbn train`'s default (the report preset).
    gamma_beta: bool = False
    # Stop hopeless trials inside each round: asha (successive halving, rungs
    # at epochs 1 and 3 of 10, a third goes on), median, or none (the report's
    # protocol: every trial runs every epoch). none by default: with asha the
    # report's CIFAR-10 search found a worse best pair on every seed tried, and
    # no rule replayed offline on the unpruned searches saved enough epochs
    # while staying close enough (benchmarks/search_replay.py; docs/results.md,
    # Pruning the search).
    pruning: str = "none"
    # The epochs at which trials validate, as TrainConfig.validation_freq
    # (the last always does). None: those the search judges, the pruning
    # rule's rungs and the last; without pruning the last alone: validating
    # 10k images after each of the report's 500 epochs is a sizeable part of
    # its search's time (benchmarks/search_overhead.py, docs/performance.md);
    # 1 gives every trial a validation curve.
    validation_freq: int | tuple | None = None
    # Seconds between a trial's backups (TrainConfig.backup_interval): a
    # killed trial resumes from its last one, or starts again. The report's
    # trials are short: backing up each of their epochs would cost a
    # measurable part of the search (benchmarks/search_overhead.py,
    # docs/performance.md).
    backup_interval: float = 10.0
    directory: str = "logs/tuning"
    project: str = "search"
    resume: bool = False  # continue the search in directory/project
    workers: int = 0  # 0: this process; N: a chief (this process) and N workers on 127.0.0.1
    # A worker restarts after this many trials. Trials of one architecture share a model
    # (flat memory); each new architecture leaves a few MB in TensorFlow.
    recycle_after: int = 50
    seed: int = 0
    # After the last round, the K best pairs run again with finalist_seeds new seeds
    # each, and the pair with the best mean wins (tuning.finalists): the best of many
    # noisy trials reads high. None: no finalists, the rounds' best is the result.
    finalists: int | None = None
    finalist_seeds: int = 3
    verbose: int = 1  # KerasTuner's trial-by-trial display: 0 silent

    def check(self) -> None:
        """Raise KbnError naming the first setting out of range."""
        for name in ("eta_range", "lam_range"):
            low, high = getattr(self, name)
            if not 0 < low < high:
                raise KbnError(
                    f"{name.replace('_', ' ')} must be low:high with 0 < low < high, "
                    f"got {low}:{high}"
                )
        checks = [
            (self.rounds >= 1, f"rounds must be at least 1, got {self.rounds}"),
            (
                self.trials >= self.rounds,
                f"trials must be at least the number of rounds ({self.rounds}), got {self.trials}",
            ),
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (
                self.pruning in PRUNING,
                f"pruning must be one of {', '.join(PRUNING)}, got {self.pruning!r}",
            ),
            (
                self.validation_freq is None
                or as_validation_freq(self.validation_freq) is not None,
                "validation_freq must be a positive integer or a list of epochs, "
                f"got {self.validation_freq}",
            ),
            (
                self.backup_interval >= 0,
                f"backup_interval must be 0 or more seconds, got {self.backup_interval}",
            ),
            (self.workers >= 0, f"workers must be 0 or more, got {self.workers}"),
            (
                self.recycle_after >= 1,
                f"recycle_after must be at least 1, got {self.recycle_after}",
            ),
            (
                self.finalists is None or 1 <= self.finalists <= self.trials,
                f"finalists must be 1 to the number of trials ({self.trials}), "
                f"got {self.finalists}; leave it out for no finalists",
            ),
            (
                1 <= self.finalist_seeds <= MAX_SEEDS,
                f"finalist seeds must be 1 to {MAX_SEEDS}, got {self.finalist_seeds}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise KbnError(message)

    def validate(self) -> None:
        """Deprecated name of `check` (validation is the held-out split's evaluation)."""
        warnings.warn(
            "SearchConfig.validate() is now SearchConfig.check()", DeprecationWarning, stacklevel=2
        )
        self.check()


def search(
    dataset: Dataset,
    config: SearchConfig | None = None,
    train_config: TrainConfig | None = None,
) -> SearchResult | None:
    """Run (or resume) the coarse-to-fine search of eta and lambda.

    Args:
        dataset: a `kbn.Dataset`; its val split scores the trials.
        config: a `SearchConfig`.
        train_config: the base `TrainConfig` of every trial (its epochs,
            seed, validation_freq and backup_interval are the search's).

    Returns:
        a `SearchResult`; the folder also holds results.csv, results.md and
        search.png. None in a worker process of a distributed search (its
        chief holds the results).

    Raises:
        KbnError: for settings out of range, a project another live search
            is writing, or (with workers) every worker dead before the end.
    """
    config = config or SearchConfig()
    config.check()
    start = time.perf_counter()
    role = chief.role()
    if role == "worker":
        # A worker never wipes the shared project, and never holds its lock.
        config = dataclasses.replace(config, resume=True, workers=0, verbose=0)
        _run_search(_tuner(dataset, config, train_config, role), config)
        return None
    project_dir = pathlib.Path(config.directory) / config.project
    with RunLock(project_dir, what="search project"):
        settings = _settings(dataset, config, train_config)
        saved = read_json(project_dir / SETTINGS) if config.resume else None
        changes = record_changes(saved, settings) if saved else []
        if changes:
            raise KbnError(
                f"search {project_dir} resumes only with the settings and data it started "
                f"with, and this one changes {', '.join(changes)}: give the search's own, or "
                "start a new search (another project)"
            )
        if not config.resume:
            _clear(project_dir)
        write_json(project_dir / SETTINGS, settings)
        tuner = _tuner(dataset, config, train_config, role)
        tuner.oracle.verbose = config.verbose
        if role == "chief":  # the workers run elsewhere, started by the user
            tuner.save()
            host, port = chief.chief_address()
            chief.serve(tuner.oracle, host, port)
        elif config.workers:
            _search_on_loopback(tuner, dataset, config, train_config)
        else:
            _run_search(tuner, config)
        result = collect(tuner, time.perf_counter() - start)
        write_results(result, config.rounds)
    return result


def _settings(dataset, config, train_config):
    """What the search computes with, as SETTINGS records it: its settings but those of
    `HOW_RUN`, its trials' base training settings but `run_log.HOW_RUN`'s, its data."""
    training = config_record(train_config or TrainConfig())
    return {
        **{k: v for k, v in dataclasses.asdict(config).items() if k not in HOW_RUN},
        "training": {k: v for k, v in training.items() if k not in run_log.HOW_RUN},
        "data": dataset.describe(),
    }


def _run_search(tuner, config):
    """KerasTuner's trial loop in this process (alone, or as a worker)."""
    with warnings.catch_warnings():
        # KerasTuner calls a trial that reports its objective each epoch (the
        # only way its oracle can stop one) a deprecated use; it is ours.
        warnings.filterwarnings(
            "ignore", message="The use case of calling", category=DeprecationWarning
        )
        tuner.search(verbose=config.verbose)


def _search_on_loopback(tuner, dataset, config, train_config):
    """A chief (this process, serving the oracle on 127.0.0.1) and N worker processes."""
    project_dir = pathlib.Path(tuner.project_dir)
    chief.write_worker_files(project_dir, dataset, config, train_config)
    tuner.save()
    port = chief.free_port()
    pool = chief.WorkerPool(
        project_dir,
        config.workers,
        {chief.ORACLE_IP: chief.LOOPBACK, chief.ORACLE_PORT: str(port)},
    )
    chief.serve(tuner.oracle, chief.LOOPBACK, port, pool)


def _clear(project_dir):
    """Empty the project for a new search, keeping the lock this process holds."""
    for entry in project_dir.iterdir():
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _tuner(dataset, config, train_config=None, role=None):
    """The search's `KbnTuner`, its oracle and hypermodel, reloaded when the project exists."""
    rule = pruning_rule(config.pruning, config.epochs)
    train_config = dataclasses.replace(
        train_config or TrainConfig(),
        epochs=config.epochs,
        seed=config.seed,
        validation_freq=config.validation_freq or (rule and rule.rungs) or config.epochs,
        backup_interval=config.backup_interval,
    )
    finalists = config.finalists or 0
    seeds = seeds_after(config.seed, config.finalist_seeds) if finalists else []
    oracle = CoarseToFineOracle(
        objective=OBJECTIVE,
        max_trials=config.trials + finalists * len(seeds),
        rounds=config.rounds,
        ranges={"eta": tuple(config.eta_range), "lam": tuple(config.lam_range)},
        seed=config.seed,
        pruning=rule,
        finalists=finalists,
        finalist_seeds=seeds,
        # A failed trial (diverged) is a result of the search, not a reason to stop it.
        max_consecutive_failed_trials=config.trials + finalists * len(seeds) + 1,
    )
    hypermodel = KbnHyperModel(
        dataset.train.x,
        dataset.num_classes,
        eta_range=config.eta_range,
        lam_range=config.lam_range,
        architecture=config.architecture,
        gamma_beta=config.gamma_beta,
        seed=config.seed,
    )
    return KbnTuner(
        dataset,
        train_config,
        trials_before_exit=config.recycle_after if role == "worker" else None,
        oracle=oracle,
        hypermodel=hypermodel,
        directory=config.directory,
        project_name=config.project,
        # kbn empties the project itself (`_clear`): KerasTuner's overwrite
        # would delete the lock file of the search that holds it.
        overwrite=False,
    )
