"""The boxes of the coarse-to-fine search: how many trials each round gets, and how a box
shrinks around a round's best trials.

    split_trials(50, 3) == [17, 17, 16]
    narrow(box, round's (values, score) pairs) -> the next round's box
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping


def split_trials(max_trials: int, rounds: int) -> list[int]:
    """Splits `max_trials` into `rounds` sizes as evenly as possible.

    Earlier rounds take the remainder: `split_trials(50, 3) == [17, 17, 16]`,
    `split_trials(10, 3) == [4, 3, 3]`.

    Args:
        max_trials: int >= 1, the trials of the whole search.
        rounds: int, 1 <= rounds <= max_trials.

    Returns:
        A list of `rounds` positive ints summing to `max_trials`.
    """
    base, extra = divmod(max_trials, rounds)
    return [base + (1 if r < extra else 0) for r in range(rounds)]


def narrow(
    box: Mapping[str, tuple[float, float]],
    results: Iterable[tuple[Mapping[str, float], float | None]],
    top_fraction: float,
    margin: float,
    direction: str,
) -> dict[str, tuple[float, float]]:
    """The next round's box: the previous one shrunk around its best trials.

    Works per hyper-parameter in log10 space. With the previous range
    `[lo, hi]`, its log-span `S = log10(hi) - log10(lo)` and the kept trials'
    values `x_1..x_k` (`k = min(n, max(2, ceil(top_fraction * n)))` best of the
    `n` results with a finite score):

        a = min_i log10(x_i),  b = max_i log10(x_i)
        new range = [10 ** max(log10(lo), a - margin * S),
                     10 ** min(log10(hi), b + margin * S)]

    So the new range contains every kept trial, lies inside the previous range
    (clipped), and is never empty: its width is at least `margin * S` (`2 *
    margin * S` centred on the point when all kept trials coincide, away from
    the edges). A kept value outside the previous range counts as its nearest
    edge. With no finite score at all the box is returned unchanged.

    The margin is a fraction of the previous span, not of the kept spread: the
    new box reaches `margin * S` beyond the best trials on each side (where
    the previous box allows) however close together they are, which keeps the
    optimum inside when only a few trials point at it.

    Args:
        box: dict name -> (low, high) with 0 < low < high, the round's box.
        results: iterable of `(values, score)`: `values` a dict holding a
            value for every name of `box`, `score` a float or None. Results
            with a None, NaN or infinite score, or a missing name, are ignored
            (the oracle passes completed trials only; failed ones never
            arrive here).
        top_fraction: float in (0, 1], the fraction of results kept.
        margin: float > 0, the widening on each side, as a fraction of the
            previous log-span.
        direction: `"max"` or `"min"`, the objective's direction.

    Returns:
        A dict name -> (low, high), floats, with the same names as `box`.
    """
    scored = [
        (values, float(score))
        for values, score in results
        if score is not None and math.isfinite(score) and all(name in values for name in box)
    ]
    if not scored:
        return {name: (float(low), float(high)) for name, (low, high) in box.items()}
    scored.sort(key=lambda pair: pair[1], reverse=direction == "max")
    keep = scored[: max(2, math.ceil(top_fraction * len(scored)))]

    new_box = {}
    for name, (low, high) in box.items():
        low, high = float(low), float(high)
        log_low, log_high = math.log10(low), math.log10(high)
        pad = margin * (log_high - log_low)
        # Kept values outside the box (a tuner may rewrite values) count as its edge.
        kept = [min(max(float(values[name]), low), high) for values, _ in keep]
        new_low = 10 ** (math.log10(min(kept)) - pad)
        new_high = 10 ** (math.log10(max(kept)) + pad)
        # 10 ** log10(x) may miss x by an ulp: clip and include the kept values
        # in linear space, so both guarantees hold exactly.
        new_low = max(low, min(new_low, min(kept)))
        new_high = min(high, max(new_high, max(kept)))
        new_box[name] = (new_low, new_high)
    return new_box
