"""Stopping rules for hopeless trials: asynchronous successive halving (ASHA) and the median rule.

A trial reports its validation accuracy after every epoch; a rule compares
it with the other trials of its round at the same epoch and answers whether
the trial goes on. The rules are pure: they see the reported values and
nothing else, so the oracle (`tuning.oracle`) keeps the only state.

    ASHA, reduction 3, rungs at epochs 1 and 3 of 10:
        epoch 1   a trial goes on if it is in the best third of the trials that reached epoch 1
        epoch 3   the same among those that reached epoch 3
        epoch 10  the survivors finish

Asynchronous: a trial is judged when it reaches a rung, against the trials
that reached that rung before it, so no trial waits for another and workers
stay busy. The first trials at a rung go on (a rank among one or two says
nothing: without that start, only a couple of a round's trials ran every
epoch, and the next round was drawn around them); later ones must beat all
but a third of their predecessors.

>>> rule = pruning_rule("asha", max_epochs=10)
>>> rule.rungs
(1, 3)
>>> rule.should_stop(1, 0.30, [0.40, 0.35, 0.20])
True
>>> rule.should_stop(1, 0.30, [0.40, 0.35])  # too few before it to judge
False

Reference:
    Li et al., A System for Massively Parallel Hyperparameter Tuning
    (ASHA), MLSys 2020. Golovin et al., Google Vizier, KDD 2017 (the median
    stopping rule).
"""

import math
import statistics
from collections.abc import Sequence

from kbn.errors import KbnError

PRUNING = ("asha", "median", "none")


class Asha:
    """Successive halving, asynchronous: at each rung keep the best `1 / reduction`.

    With `n` values at a rung (the trial's own included) and the trial's rank
    `k` among them (1 the best; ties rank the trial first), the trial goes on
    when `k <= max(1, floor(n / reduction))`, or when fewer than `min_trials`
    others reached the rung before it.

    Args:
        max_epochs: int >= 1, the epochs of a trial that is never stopped.
        reduction: int >= 2, the reduction factor ("eta" in the paper).
        min_epochs: int >= 1, the first rung; the next ones are
            `min_epochs * reduction ** i`, each at most `max_epochs /
            reduction`, so a survivor of the last rung still has most of
            its epochs ahead (10 epochs: rungs 1 and 3, not 9).
        min_trials: int >= 0, how many other trials must have reached a
            rung before the rule judges there.
    """

    name = "asha"

    def __init__(
        self, max_epochs: int, reduction: int = 3, min_epochs: int = 1, min_trials: int = 3
    ) -> None:
        if reduction < 2 or min_epochs < 1 or max_epochs < 1:
            raise KbnError(
                "ASHA needs reduction >= 2, min_epochs >= 1 and max_epochs >= 1. "
                f"Received: reduction={reduction}, min_epochs={min_epochs}, max_epochs={max_epochs}"
            )
        self.reduction = reduction
        self.min_trials = min_trials
        rungs, epoch = [], min_epochs
        while epoch * reduction <= max_epochs:
            rungs.append(epoch)
            epoch *= reduction
        self.rungs = tuple(rungs)

    def should_stop(self, epoch: int, value: float, others: Sequence[float]) -> bool:
        """Whether a trial that reported `value` after `epoch` epochs stops.

        Args:
            epoch: int, epochs the trial has run.
            value: float, its score then (higher is better).
            others: the scores of the round's other trials that reached
                `epoch` before this one.

        Returns:
            True to stop the trial; always False off the rungs.
        """
        if epoch not in self.rungs or len(others) < self.min_trials:
            return False
        n = len(others) + 1
        rank = 1 + sum(1 for other in others if other > value)
        return rank > max(1, n // self.reduction)


class Median:
    """The median stopping rule: stop below the median of the others at the same epoch.

    Args:
        max_epochs: int >= 1; the rule judges every epoch before the last.
        min_trials: int >= 1, how many other trials must have reached the
            epoch before the rule judges (fewer say little).
        warmup: int >= 0, epochs before the first judgement.
    """

    name = "median"

    def __init__(self, max_epochs: int, min_trials: int = 3, warmup: int = 1) -> None:
        self.max_epochs = max_epochs
        self.min_trials = min_trials
        self.warmup = warmup

    @property
    def rungs(self) -> tuple[int, ...]:
        return tuple(range(max(1, self.warmup), self.max_epochs))

    def should_stop(self, epoch: int, value: float, others: Sequence[float]) -> bool:
        """As `Asha.should_stop`: True when `value` is below the others' median."""
        if epoch not in self.rungs or len(others) < self.min_trials:
            return False
        return value < statistics.median(others)


def pruning_rule(name: str | None, max_epochs: int) -> Asha | Median | None:
    """The rule called `name` ("asha", "median"), or None for "none".

    Raises:
        KbnError: for another name.
    """
    if name == "asha":
        return Asha(max_epochs)
    if name == "median":
        return Median(max_epochs)
    if name in ("none", None):
        return None
    raise KbnError(f"pruning must be one of {', '.join(PRUNING)}, got {name!r}")


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
