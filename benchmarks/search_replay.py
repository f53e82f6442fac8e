"""Replay logged unpruned searches through stopping rules, offline, in seconds.

    python benchmarks/search_replay.py reports/cifar10/logs/study3-search [PROJECT ...]

A search run with `--pruning none --validation-freq 1` (as `kbn reproduce`'s)
logs every trial's validation accuracy after each of its epochs
(`runs/trial_<id>/summary.json`); by default a search without pruning
validates its trials' last epoch only. A stopping rule
sees nothing else, so its verdicts can be computed from the log: the trials
are replayed in the order they ran (one process runs them one after the
other, so trial i reached every rung before trial i + 1 started), each rule
judges each trial against the earlier trials of its round, and a stopped
trial costs the epochs it ran. For each rule the table gives the epochs used
(of the search's), the completed trials, the best completed trial's
accuracy and its gap to the unpruned best.

What a replay leaves out: a real pruned search narrows its boxes around
other trials (those that completed, and the stopped ones ranked below them),
so its rounds 2 and 3 draw other pairs. The replay isolates the rule's own
choice among the same trials; the real searches (docs/results.md, "Pruning the search") measure the
whole.

The last column, "noise best", is the expected best of the same number of
completed trials drawn at random from the search's rounds 2 and 3 (where the
boxes are narrow and the trials' accuracies differ by little more than their
noise), in the same proportions: what a rule that knows nothing would reach.
"""

import argparse
import csv
import itertools
import json
import pathlib
import random
import statistics
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from tuning.pruning import Asha, Median


def load(project):
    """The logged trials of a search: [(trial id, round, [val acc per epoch])], in run order."""
    project = pathlib.Path(project)
    with open(project / "results.csv") as f:
        rows = list(csv.DictReader(f))
    trials = []
    for row in sorted(rows, key=lambda r: r["trial_id"]):
        summary = json.loads(
            (project / "runs" / f"trial_{row['trial_id']}" / "summary.json").read_text()
        )
        if summary["config"].get("validation_freq", 1) != 1:
            sys.exit(
                f"{project}: its trials validated at epochs "
                f"{summary['config']['validation_freq']} only; "
                "replay a search run with --validation-freq 1"
            )
        curve = summary["history"]["val_accuracy"]
        if row["status"] != "COMPLETED" or None in curve:
            continue  # failed (diverged) trials cost the same under every rule
        trials.append((row["trial_id"], int(row["round"]), curve))
    return trials


def replay(trials, rule):
    """The rule's verdicts: (epochs used, [final accuracy of each completed trial])."""
    reached = {}  # (round, epoch) -> values reported there so far
    epochs, completed = 0, []
    for _, rnd, curve in trials:
        stopped_at = None
        for epoch, value in enumerate(curve, start=1):
            others = reached.setdefault((rnd, epoch), [])
            stop = (
                rule is not None
                and epoch < len(curve)
                and rule.should_stop(epoch, value, list(others))
            )
            others.append(value)
            if stop:
                stopped_at = epoch
                break
        epochs += stopped_at or len(curve)
        if stopped_at is None:
            completed.append(curve[-1])
    return epochs, completed


def noise_best(trials, completed_by_round, draws=2000, seed=0):
    """Expected best of as many completed trials per round, drawn at random."""
    rng = random.Random(seed)
    by_round = {}
    for _, rnd, curve in trials:
        by_round.setdefault(rnd, []).append(curve[-1])
    bests = []
    for _ in range(draws):
        picked = []
        for rnd, count in completed_by_round.items():
            picked += rng.sample(by_round[rnd], min(count, len(by_round[rnd])))
        bests.append(max(picked))
    return statistics.mean(bests)


def rules(max_epochs):
    """The candidates: name -> rule (None runs every trial to its end)."""
    candidates = {"none": None}
    for reduction, first in itertools.product((2, 3, 4), (1, 2, 3)):
        rule = Asha(max_epochs, reduction=reduction, min_epochs=first)
        if rule.rungs:
            candidates[f"asha r={reduction} rungs={','.join(map(str, rule.rungs))}"] = rule
    for warmup in (1, 2, 3, 5):
        candidates[f"median from epoch {warmup}"] = Median(max_epochs, warmup=warmup)
    return candidates


def by_round(trials, rule):
    """Completed trials per round under `rule`."""
    counts = {}
    for rnd in sorted({r for _, r, _ in trials}):
        _, completed = replay([t for t in trials if t[1] == rnd], rule)
        counts[rnd] = len(completed)
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("projects", nargs="+", help="folders of searches run with --pruning none")
    args = parser.parse_args(argv)
    for project in args.projects:
        trials = load(project)
        max_epochs = max(len(curve) for _, _, curve in trials)
        total = sum(len(curve) for _, _, curve in trials)
        best = max(curve[-1] for _, _, curve in trials)
        print(f"\n{project}: {len(trials)} trials, {total} epochs, unpruned best {100 * best:.2f}%")
        print("| rule | epochs | share | completed | best | gap | noise best |")
        print("|---|---|---|---|---|---|---|")
        for name, rule in rules(max_epochs).items():
            epochs, completed = replay(trials, rule)
            noise = noise_best(trials, by_round(trials, rule))
            print(
                f"| {name} | {epochs} | {epochs / total:.0%} | {len(completed)} | "
                f"{100 * max(completed):.2f}% | {100 * (max(completed) - best):+.2f} | "
                f"{100 * noise:.2f}% |"
            )


if __name__ == "__main__":
    main()
