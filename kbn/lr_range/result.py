"""LrFindResult: a range test's curve, where it stopped, and the suggested eta."""

import dataclasses
import math
import os
import pathlib

from kbn.lr_range.suggest import RULE_TEXT
from kbn.plots.range_test import plot_range_test


@dataclasses.dataclass
class LrFindResult:
    """What `kbn.lr_find` gives back.

    Attributes:
        etas: the eta of each step run, increasing, (T,).
        losses: the training loss (cross-entropy + L2) of each step's
            mini-batch, before its update, (T,); the last may be NaN or
            infinite when the test stopped on it.
        smoothed: their bias-corrected moving average, (T,).
        suggestion: the suggested eta, by `rule`; None when the loss never
            fell (eta_min too large or too few steps).
        rule: the rule that gave `suggestion`, one of
            `kbn.lr_range.suggest.RULES`.
        suggestions: {rule: eta or None} for every rule.
        steps: the steps planned, from eta_min to eta_max.
        stopped_at: the index of the step whose loss blew up, where the
            test stopped; None when it ran every step.
        seconds: the wall time of the whole test (copying and compiling the
            model included).
        step_seconds: the part of it spent in the compiled loop's calls (the
            first call's tracing included).
        plot_path: the figure written, or None.
    """

    etas: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float | None
    rule: str
    suggestions: dict[str, float | None]
    steps: int
    stopped_at: int | None
    seconds: float
    step_seconds: float = 0.0
    plot_path: pathlib.Path | None = None

    @property
    def rule_text(self) -> str:
        """What `rule` does, in words."""
        return RULE_TEXT[self.rule]

    def plot(self, path: str | os.PathLike, *, title: str | None = None) -> pathlib.Path:
        """Write the loss against eta (log axis) as a PNG, the suggestion marked.

        Args:
            path: where to write it.
            title: the figure's title; by default the steps run and the suggestion.

        Returns:
            The `pathlib.Path` written.
        """
        if title is None:
            title = f"learning-rate range test: {len(self.etas)} of {self.steps} steps"
        return plot_range_test(
            self.etas,
            self.losses,
            self.smoothed,
            path,
            suggestion=self.suggestion,
            rule=self.rule,
            title=title,
        )

    def as_json(self) -> dict:
        """The result as `kbn lr-find --json` prints it: plain values, NaN as null.

        Returns:
            `suggestion`, `rule`, `rule_text`, `suggestions`, `steps`,
            `steps_run`, `stopped_at`, `stopped_at_eta`, `seconds`,
            `step_seconds`, `plot`,
            and `curve`: {"eta": [...], "loss": [...], "smoothed": [...]},
            one value per step run.
        """
        return {
            "suggestion": self.suggestion,
            "rule": self.rule,
            "rule_text": self.rule_text,
            "suggestions": dict(self.suggestions),
            "steps": self.steps,
            "steps_run": len(self.etas),
            "stopped_at": self.stopped_at,
            "stopped_at_eta": None if self.stopped_at is None else self.etas[self.stopped_at],
            "seconds": self.seconds,
            "step_seconds": self.step_seconds,
            "plot": None if self.plot_path is None else str(self.plot_path),
            "curve": {
                "eta": [float(v) for v in self.etas],
                "loss": [_finite(v) for v in self.losses],
                "smoothed": [_finite(v) for v in self.smoothed],
            },
        }


def _finite(value):
    value = float(value)
    return value if math.isfinite(value) else None
