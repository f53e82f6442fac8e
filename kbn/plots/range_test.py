"""The learning-rate range test's figure: the loss against eta on a log axis (`kbn lr-find`)."""

import os
import pathlib
from collections.abc import Sequence

import numpy as np

from kbn.errors import KbnError
from kbn.plots.figures import _fmt, _new_figure, _save, _wrap


def plot_range_test(
    etas: Sequence[float] | np.ndarray,
    losses: Sequence[float] | np.ndarray,
    smoothed: Sequence[float] | np.ndarray,
    path: str | os.PathLike,
    *,
    suggestion: float | None = None,
    rule: str = "",
    title: str = "learning-rate range test",
) -> pathlib.Path:
    """Plot a range test's loss per mini-batch against its eta, eta on a log axis.

    The loss of each mini-batch faint, its moving average bold, and the
    suggested eta as a dashed vertical line named after its rule.
    Non-finite losses (the step that blew up) are left out; the y axis
    stops a little above the first smoothed loss, so that the blow-up does
    not flatten the part of the curve that matters.

    Args:
        etas: the eta of each step, > 0, (T,), T >= 1.
        losses: the loss of each step, (T,).
        smoothed: their moving average, (T,).
        path: where to write the PNG; missing parent folders are created.
        suggestion: the suggested eta, or None.
        rule: the rule that suggested it, for the legend.
        title: the figure's title.

    Returns:
        The `pathlib.Path` written.

    Raises:
        KbnError: when the three series differ in length or are empty.
    """
    etas = np.asarray(etas, dtype=float)  # (T,)
    losses = np.asarray(losses, dtype=float)  # (T,)
    smoothed = np.asarray(smoothed, dtype=float)  # (T,)
    if not len(etas) or not len(etas) == len(losses) == len(smoothed):
        raise KbnError(
            f"plot_range_test: etas, losses and smoothed need one value per step each. "
            f"Received lengths: {len(etas)}, {len(losses)}, {len(smoothed)}"
        )
    fig = _new_figure((6.0, 4.0))
    ax = fig.subplots()
    ax.plot(
        etas,
        np.where(np.isfinite(losses), losses, np.nan),
        color="tab:blue",
        alpha=0.3,
        linewidth=1,
        label="loss of each mini-batch",
    )
    ax.plot(
        etas,
        np.where(np.isfinite(smoothed), smoothed, np.nan),
        color="tab:blue",
        linewidth=2,
        label="smoothed",
    )
    if suggestion is not None:
        ax.axvline(
            suggestion,
            color="tab:red",
            linestyle="--",
            linewidth=1,
            label=f"suggested eta {_fmt(suggestion)}" + (f" ({rule})" if rule else ""),
        )
    finite = smoothed[np.isfinite(smoothed)]
    if len(finite):
        low, first = float(finite.min()), float(finite[0])
        ax.set_ylim(low - 0.05 * (first - low + 1e-12), first + 0.25 * (first - low) + 1e-12)
    ax.set_xscale("log")
    ax.set_xlabel("eta (log scale)")
    ax.set_ylabel("training loss (cross-entropy + L2)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(_wrap(title, fig))
    return _save(fig, path)
