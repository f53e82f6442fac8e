"""A search's results: what `search` returns and the files it writes beside KerasTuner's.

    PROJECT_DIR/
        results.csv   one row per trial: id, round, eta, lambda, validation
                      accuracy, status, epochs, worker, peak memory, seed (a finalist's)
        results.md    the same, best first; then the finalists' means and the winner
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
    "seed",
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
        finalists: with `SearchConfig.finalists`, one dict per finalist pair, the winner
            first: eta, lam, trial_id (the round trial it repeats), search_val_acc (that
            trial's score), val_accs (its runs'), mean, stderr. [] without finalists.
        winner: the first of `finalists` as the search's estimate: {"eta", "lam",
            "val_acc" (the mean of its runs), "stderr", "runs"}; None without finalists.
            `best` is the rounds' raw maximum beside it.
    """

    best: dict | None
    rounds: list
    trials: list
    project_dir: pathlib.Path
    seconds: float
    finalists: list = dataclasses.field(default_factory=list)

    @property
    def winner(self) -> dict | None:
        scored = [f for f in self.finalists if f["mean"] is not None]
        if not scored:
            return None
        first = scored[0]
        return {
            "eta": first["eta"],
            "lam": first["lam"],
            "val_acc": first["mean"],
            "stderr": first["stderr"],
            "runs": len(first["val_accs"]),
        }

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
    def finalist_epochs(self) -> int:
        """The finalists' runs' epochs, part of `epochs_trained`."""
        return sum(t["epochs"] or 0 for t in self.trials if t.get("seed") is not None)

    @property
    def trials_by_worker(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.trials:
            if t["status"] != "FAILED" and t["worker"]:
                counts[t["worker"]] = counts.get(t["worker"], 0) + 1
        return counts

    def finalists_summary(self) -> str | None:
        """What the finalists changed, in one paragraph; None without finalists."""
        winner, best = self.winner, self.best
        if winner is None or best is None:
            return None
        same = (winner["eta"], winner["lam"]) == (best["eta"], best["lam"])
        first = self.finalists[0]
        stderr = "" if winner["stderr"] is None else f" +- {100 * winner['stderr']:.2f}"
        return (
            f"Finalists: the {len(self.finalists)} best pairs trained again with "
            f"{winner['runs']} new seeds each. The rounds' best, eta {best['eta']:.4g}, lambda "
            f"{best['lam']:.4g} ({100 * best['val_acc']:.2f}%), "
            + ("is also the winner" if same else "is not the winner")
            + f": eta {winner['eta']:.4g}, lambda {winner['lam']:.4g}, "
            f"{100 * winner['val_acc']:.2f}%{stderr} validation accuracy, the mean of its runs "
            f"(against {100 * first['search_val_acc']:.2f}% in its round)."
        )

    def as_json(self) -> dict[str, Any]:
        """The search's outcome as `kbn tune --json` prints it: a dict of plain values."""
        return {
            "best": self.best,
            "winner": self.winner,
            "finalists": self.finalists,
            "rounds": self.rounds,
            "trials_completed": self.trials_completed,
            "trials_stopped": self.trials_stopped,
            "trials_failed": self.trials_failed,
            "epochs_trained": self.epochs_trained,
            "finalist_epochs": self.finalist_epochs,
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
                "seed": trial.hyperparameters.values.get("seed"),
            }
        )
    # The raw best: the rounds' trials only, not the finalists' runs.
    done = [
        t
        for t in trials
        if t["status"] == "COMPLETED" and t["val_acc"] is not None and t["round"] <= oracle.rounds
    ]
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
        finalists=[standing.as_json() for standing in oracle.finalist_standings()],
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
    lines += _finalist_lines(result)
    with atomic_path(folder / "results.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    boxes = [
        {"eta_range": r["eta_range"], "lam_range": r["lam_range"], "round": i}
        for i, r in enumerate(result.rounds, start=1)
    ]
    plots.plot_search(
        [t for t in result.trials if t["round"] <= rounds],  # a finalist sits on its pair
        folder / "search.png",
        title=f"coarse-to-fine search, {rounds} rounds, {len(result.trials)} trials",
        boxes=boxes,
    )


def _finalist_lines(result):
    """results.md's finalists table: each pair's round score against its runs' mean."""
    if not result.finalists:
        return []
    lines = [
        "",
        "Finalists: the best pairs trained again with new seeds; the winner has the best mean.",
        "",
        "| eta | lambda | in its round | runs | mean | standard error |",
        "|---|---|---|---|---|---|",
    ]
    for f in result.finalists:
        mean = "" if f["mean"] is None else format(f["mean"], ".4f")
        stderr = "" if f["stderr"] is None else format(f["stderr"], ".4f")
        search = "" if f["search_val_acc"] is None else format(f["search_val_acc"], ".4f")
        runs = ", ".join(format(v, ".4f") for v in f["val_accs"])
        lines.append(f"| {f['eta']:.4g} | {f['lam']:.4g} | {search} | {runs} | {mean} | {stderr} |")
    return lines
