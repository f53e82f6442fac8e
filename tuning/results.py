"""A search's results: what `search` returns and the files it writes beside KerasTuner's.

    PROJECT_DIR/
        results.csv   one row per trial: id, round, eta, lambda, validation
                      accuracy, status, epochs, worker, peak memory
        results.md    the same, best first
        search.png    log eta vs log lambda coloured by accuracy, rounds' boxes

A trial's status is KerasTuner's: COMPLETED (every epoch), STOPPED (the
pruning rule ended it; its accuracy is its last epoch's), FAILED (diverged).
"""

import csv
import dataclasses
import pathlib
from typing import Any

from kbn import plots
from kbn.fileio import atomic_path, read_json

COLUMNS = (
    "trial_id",
    "round",
    "eta",
    "lam",
    "val_acc",
    "status",
    "epochs",
    "worker",
    "peak_rss_mb",
)


@dataclasses.dataclass
class SearchResult:
    """What `search` gives back.

    Attributes:
        best: {"eta", "lam", "val_acc"} of the best trial that ran every
            epoch, or None.
        rounds: [{"eta_range", "lam_range", "trials", "stopped", "best_val_acc"}]:
            trials counts the round's completed trials.
        trials: one dict per trial: trial_id, round, eta, lam, val_acc (the
            last epoch's; None when failed), status (COMPLETED, STOPPED,
            FAILED), epochs (run), worker, peak_rss_mb (the worker's peak
            memory when the trial ended).
        project_dir: the search's folder.
        seconds: wall time of this call.
    """

    best: dict | None
    rounds: list
    trials: list
    project_dir: pathlib.Path
    seconds: float

    def _count(self, status: str) -> int:
        return sum(1 for t in self.trials if t["status"] == status)

    @property
    def trials_completed(self) -> int:
        return self._count("COMPLETED")

    @property
    def trials_stopped(self) -> int:
        return self._count("STOPPED")

    @property
    def trials_failed(self) -> int:
        return self._count("FAILED")

    @property
    def epochs_trained(self) -> int:
        """Every trial's epochs together: the search's cost in epochs."""
        return sum(t["epochs"] or 0 for t in self.trials)

    @property
    def trials_by_worker(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.trials:
            if t["status"] != "FAILED" and t["worker"]:
                counts[t["worker"]] = counts.get(t["worker"], 0) + 1
        return counts

    def as_json(self) -> dict[str, Any]:
        """The search's outcome as `kbn tune --json` prints it: a dict of plain values."""
        return {
            "best": self.best,
            "rounds": self.rounds,
            "trials_completed": self.trials_completed,
            "trials_stopped": self.trials_stopped,
            "trials_failed": self.trials_failed,
            "epochs_trained": self.epochs_trained,
            "trials_by_worker": self.trials_by_worker,
            "seconds": self.seconds,
            "project_dir": str(self.project_dir),
        }


def collect(tuner, seconds):
    """The search's trials, rounds and best pair, from the oracle's records and the run folders."""
    oracle = tuner.oracle
    trials = []
    for trial_id, trial in sorted(oracle.trials.items()):
        run_dir = tuner.run_dir(trial_id)
        process = read_json(run_dir / "process.json") or {}
        summary = read_json(run_dir / "summary.json") or {}
        scored = trial.status in ("COMPLETED", "STOPPED")
        trials.append(
            {
                "trial_id": trial_id,
                "round": oracle.round_of(trial_id),
                "eta": trial.hyperparameters.get("eta"),
                "lam": trial.hyperparameters.get("lam"),
                "val_acc": trial.score if scored else None,
                "status": trial.status,
                "epochs": summary.get("epochs_run"),
                "worker": process.get("worker"),
                "peak_rss_mb": process.get("peak_rss_mb"),
            }
        )
    done = [t for t in trials if t["status"] == "COMPLETED" and t["val_acc"] is not None]
    best = max(done, key=lambda t: t["val_acc"], default=None)
    rounds = [
        {
            "eta_range": list(r["eta_range"]),
            "lam_range": list(r["lam_range"]),
            "trials": r["trials"],
            "stopped": r["stopped"],
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


def write_results(result, rounds):
    """results.csv, results.md (best first) and search.png in the project folder.

    Args:
        result: a `SearchResult`.
        rounds: the search's number of rounds, for the plot's title.
    """
    folder = result.project_dir
    with atomic_path(folder / "results.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(result.trials)
    # Completed trials first, then stopped ones, each by accuracy; failed last.
    order = {"COMPLETED": 0, "STOPPED": 1}
    ranked = sorted(
        result.trials,
        key=lambda t: (
            order.get(t["status"], 2),
            -(t["val_acc"] if t["val_acc"] is not None else -1),
        ),
    )
    lines = [
        "| eta | lambda | validation accuracy | round | status | epochs |",
        "|---|---|---|---|---|---|",
        *(
            f"| {t['eta']:.4g} | {t['lam']:.4g} | "
            f"{'' if t['val_acc'] is None else format(t['val_acc'], '.4f')} | {t['round']} | "
            f"{t['status']} | {'' if t['epochs'] is None else t['epochs']} |"
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
        title=f"coarse-to-fine search, {rounds} rounds, {len(result.trials)} trials",
        boxes=boxes,
    )
