"""LrFindConfig: every setting of a learning-rate range test, in one place.

Declared with `kbn.training.config.setting`, as `TrainConfig` is: each field
is a `kbn lr-find` flag (`--field-name`) and `LrFindConfig.check` validates
it, so the command line and the API refuse the same values with the same
one-line message.
"""

import dataclasses
import math
import pathlib

from kbn.errors import KbnError
from kbn.lr_range.suggest import RULES
from kbn.training.config import TrainConfig, setting, setting_error, setting_like

# Fewer steps leave too few points between the first tenth of the curve,
# which the rules skip, and its minimum for a suggestion to mean anything.
MIN_STEPS = 20


@dataclasses.dataclass
class LrFindConfig:
    """The settings of `kbn.lr_find`: the range of eta, the steps, the SGD, the rules."""

    eta_range: tuple[float, float] = setting(
        (1e-5, 10.0),
        "eta of the first and the last step, LOW < HIGH; eta rises geometrically between",
    )
    steps: int | None = setting(
        None,
        f"mini-batches from the first eta to the last, at least {MIN_STEPS} "
        f"(default: one epoch of the training split, at least {MIN_STEPS})",
        check=lambda v: v >= MIN_STEPS,
        error=f"steps must be at least {MIN_STEPS}, got {{value}}",
        metavar="N",
    )
    batch_size: int = setting_like(TrainConfig, "batch_size")
    momentum: float = setting_like(TrainConfig, "momentum", help="SGD's momentum")
    label_smoothing: float = setting_like(
        TrainConfig, "label_smoothing", help="weight of the uniform target mixed into the labels"
    )
    smoothing: float = setting(
        0.98,
        "beta of the loss's moving average (0: none)",
        check=lambda v: 0 <= v < 1,
        error="smoothing must be in [0, 1), got {value}",
        metavar="BETA",
    )
    stop_factor: float = setting(
        4.0,
        "stop once the smoothed loss exceeds this times its lowest",
        check=lambda v: v > 1,
        error="stop factor must exceed 1, got {value}",
        metavar="FACTOR",
    )
    rule: str = setting(
        "min/10",
        "min/10: a tenth of the eta at the smoothed loss's minimum; steepest: where it "
        "falls fastest",
        choices=RULES,
    )
    seed: int = setting(0, "seeds the order of the mini-batches", cli=False)
    plot: str | None = setting(
        None,
        "write the loss against eta there",
        check=lambda v: str(v).endswith(".png"),
        error="the figure must end in .png, got {value}",
        metavar="PATH.png",
    )

    def check(self) -> None:
        """Raise KbnError naming the first setting out of range."""
        for field in dataclasses.fields(self):
            message = setting_error(field, getattr(self, field.name))
            if message:
                raise KbnError(message)
        try:
            low, high = (float(v) for v in self.eta_range)
        except (TypeError, ValueError):
            raise KbnError(f"eta_range must be (low, high), got {self.eta_range!r}") from None
        if not (0 < low < high and math.isfinite(high)):
            raise KbnError(
                f"eta_range must rise from a positive low to a finite high, LOW < HIGH, "
                f"got {low:g}:{high:g}"
            )
        if self.plot is not None and pathlib.Path(self.plot).is_dir():
            raise KbnError(f"the figure's path is a folder: {self.plot}")
