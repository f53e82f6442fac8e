"""The finalists: the search's K best pairs trained again with S new seeds, the winner by mean.

A search's best trial is the maximum of many noisy scores: inside the narrowed
boxes the trials differ by little more than one run's noise, so the best
reads high (the winner's curse; docs/results.md measures it). After the last
round, the oracle runs each of the K best completed pairs again with S seeds
the rounds did not use (new initial weights and a new order of the examples;
the same training and validation split), as trials of their own:

    last round ended --plan(K best, seeds)--> K x S trials, round = rounds + 1
        values: the pair's own (eta, lam, and the architecture when searched),
                `seed` and `finalist_of` (the trial it repeats)
    every finalist ended --standings(trials)--> per pair: its S scores, their mean and
                standard error; the winner is the pair with the best mean

The winner's mean is an estimate of its accuracy that no maximum inflated:
its S runs were not chosen for their score.
"""

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

# A finalist run is a whole trial: beyond 10 seeds a pair's mean hardly moves for the cost.
MAX_SEEDS = 10
# The values that tell a finalist from the trial it repeats.
FINALIST_KEYS = ("round", "seed", "finalist_of")


def seeds_after(search_seed: int, count: int) -> list[int]:
    """`count` seeds the rounds' trials did not use (they all train with `search_seed`)."""
    return [search_seed + 1 + i for i in range(count)]


def plan(
    results: Sequence[tuple[str, Mapping[str, Any], float]],
    count: int,
    seeds: Sequence[int],
    final_round: int,
    maximize: bool = True,
) -> list[dict[str, Any]]:
    """The finalist trials' values: each of the `count` best pairs once per seed.

    Args:
        results: (trial id, values, score) of the rounds' completed trials.
        count: K, the pairs to run again; fewer when fewer trials completed.
        seeds: the S seeds each pair runs with.
        final_round: the round number the finalists carry (the search's rounds + 1).
        maximize: whether a higher score is better.

    Returns:
        K x S dicts of values, pair by pair: the pair's values (without its round)
        with `round`, `seed` and `finalist_of`.
    """
    finite = [(tid, values, score) for tid, values, score in results if math.isfinite(score)]
    ranked = sorted(finite, key=lambda entry: entry[2], reverse=maximize)[:count]
    return [
        {
            **{k: v for k, v in values.items() if k not in FINALIST_KEYS},
            "round": final_round,
            "seed": seed,
            "finalist_of": trial_id,
        }
        for trial_id, values, _ in ranked
        for seed in seeds
    ]


@dataclasses.dataclass(frozen=True)
class Standing:
    """One finalist pair after its runs.

    Attributes:
        trial_id: the round trial it repeats.
        values: the pair's values (eta, lam, the architecture when searched).
        search_score: that trial's score in its round.
        scores: the finalist runs' scores, one per seed that completed.
        mean: their mean; None without any.
        stderr: the standard error of the mean, `stdev / sqrt(S)`; None with fewer than 2.
    """

    trial_id: str
    values: dict
    search_score: float | None
    scores: list
    mean: float | None
    stderr: float | None

    def as_json(self) -> dict[str, Any]:
        """The standing as plain values: eta, lam, trial_id, search_val_acc, val_accs,
        mean, stderr."""
        return {
            "eta": self.values.get("eta"),
            "lam": self.values.get("lam"),
            "trial_id": self.trial_id,
            "search_val_acc": self.search_score,
            "val_accs": list(self.scores),
            "mean": self.mean,
            "stderr": self.stderr,
        }


def standings(
    finalists: Sequence[tuple[Mapping[str, Any], float | None]],
    search_scores: Mapping[str, float | None],
    maximize: bool = True,
) -> list[Standing]:
    """Each finalist pair's mean and standard error, the best mean first (the winner).

    Args:
        finalists: (values, score) of each finalist trial; score None for one that
            failed or has not ended.
        search_scores: {trial id: score} of the round trials the finalists repeat.
        maximize: whether a higher score is better.

    Returns:
        One `Standing` per pair, in the order of their means (pairs without a
        completed run last).
    """
    by_pair: dict[str, tuple[dict, list]] = {}
    for values, score in finalists:
        pair = str(values["finalist_of"])
        entry = by_pair.setdefault(
            pair, ({k: v for k, v in values.items() if k not in FINALIST_KEYS}, [])
        )
        if score is not None and math.isfinite(score):
            entry[1].append(float(score))
    table = []
    for trial_id, (values, scores) in by_pair.items():
        mean = statistics.fmean(scores) if scores else None
        stderr = statistics.stdev(scores) / math.sqrt(len(scores)) if len(scores) > 1 else None
        table.append(Standing(trial_id, values, search_scores.get(trial_id), scores, mean, stderr))
    sign = 1.0 if maximize else -1.0
    return sorted(table, key=lambda s: (s.mean is None, -sign * (s.mean or 0.0)))
