"""The range test's curve read: the smoothed loss, where it blows up, the suggested eta.

    smoothed   a_t = beta a_(t-1) + (1 - beta) loss_t,  s_t = a_t / (1 - beta ** (t + 1))
    blow-up    the first t whose loss is not finite or whose s_t > factor * min(s_0 .. s_t)
    min/10     a tenth of the eta at s's minimum (the default: docs/results.md compares them)
    steepest   the eta where s falls fastest against log eta, before s's minimum

Each mini-batch's loss is the loss of one batch: noisy enough that its own
minimum or steepest point would be a batch's luck, so every rule reads the
smoothed curve. The smoothing and the stopping rule are fastai's and
PyTorch Lightning's (`Tuner.lr_find`: beta 0.98, stop at 4 times the best).
"""

from collections.abc import Sequence

import numpy as np

RULES = ("min/10", "steepest")

# What each rule does, as `kbn lr-find` prints it beside the suggestion.
RULE_TEXT = {
    "min/10": "a tenth of the eta at the smoothed loss's minimum",
    "steepest": "the steepest descent of the smoothed loss against log eta",
}


def smooth(losses: Sequence[float] | np.ndarray, beta: float) -> np.ndarray:
    """The exponential moving average of `losses`, bias-corrected.

    `a_t = beta a_(t-1) + (1 - beta) loss_t` from `a_(-1) = 0`, divided by
    `1 - beta ** (t + 1)` so that the first points are not pulled towards 0.
    A non-finite loss makes that point and every later one non-finite.

    Args:
        losses: the loss of each step, (T,).
        beta: in [0, 1); 0 is no smoothing.

    Returns:
        float64 array (T,).
    """
    losses = np.asarray(losses, dtype=np.float64)  # (T,)
    out = np.empty_like(losses)
    average = 0.0
    for t, loss in enumerate(losses):
        average = beta * average + (1.0 - beta) * loss
        out[t] = average / (1.0 - beta ** (t + 1))
    return out


def blow_up(
    losses: Sequence[float] | np.ndarray, smoothed: Sequence[float] | np.ndarray, factor: float
) -> int | None:
    """The first step at which the loss blew up, or None.

    Blown up: the step's loss is NaN or infinite, or its smoothed loss is
    more than `factor` times the lowest smoothed loss so far.

    Args:
        losses: the loss of each step, (T,).
        smoothed: `smooth(losses, beta)`, (T,).
        factor: > 1.

    Returns:
        the step's index in [0, T), or None.
    """
    best = np.inf
    for t, (loss, value) in enumerate(zip(losses, smoothed)):
        if not (np.isfinite(loss) and np.isfinite(value)):
            return t
        best = min(best, value)
        if value > factor * best:
            return t
    return None


def suggest(
    etas: Sequence[float] | np.ndarray, smoothed: Sequence[float] | np.ndarray, rule: str
) -> float | None:
    """The suggested eta of a range test's curve, by `rule`.

    `min/10` (the default): a tenth of the eta at the smoothed loss's
    minimum (fastai's first rule). The minimum itself is the edge of
    divergence, too large to train at; a decade below it training still
    makes fast progress. The minimum of a smoothed curve is a stable point
    to read, which is why it is the default: the steepest slope is the
    minimum of a derivative, and differentiating amplifies the batches'
    noise (docs/results.md compares the two on CIFAR-10).
    `steepest`: the eta where the smoothed loss falls fastest per decade
    of eta (the most negative `d smoothed / d log eta`, by central
    differences), among the steps before the smoothed loss's minimum
    (PyTorch Lightning's rule): inside the region where training makes
    progress, where Smith's range test puts the lower bound of a good eta.

    The first tenth of the steps never count: the smoothed loss has little
    history there. None when the smoothed loss never fell past them.

    Args:
        etas: the eta of each step, increasing, (T,).
        smoothed: the smoothed loss of each step, (T,), finite.
        rule: one of `RULES`.

    Returns:
        an eta from `etas`' range, or None.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}. Received: rule={rule!r}")
    etas, smoothed = np.asarray(etas, np.float64), np.asarray(smoothed, np.float64)
    finite = np.isfinite(smoothed)
    n = int(np.argmin(finite)) if not finite.all() else len(smoothed)  # the finite prefix
    skip = max(1, n // 10)
    if n <= skip + 1:
        return None
    lowest = int(np.argmin(smoothed[:n]))
    if lowest <= skip:
        return None  # the loss never fell: eta_min is already too large
    if rule == "min/10":
        return float(max(etas[lowest] / 10, etas[0]))
    slope = np.gradient(smoothed[: lowest + 1], np.log10(etas[: lowest + 1]))  # (lowest + 1,)
    steepest = skip + int(np.argmin(slope[skip:]))
    return float(etas[steepest]) if slope[steepest] < 0 else None
