"""DivergenceGuard: the report's rule that ends a run whose training cost blows up."""

import math

import keras


class DivergenceGuard(keras.callbacks.Callback):
    """End training cleanly when the training cost blows up.

    The report's rule: stop once an epoch's training cost exceeds `factor`
    times the first epoch's, or is NaN or infinite. A run can also blow up
    within its first epoch, whose mean cost then hides it; so the cost
    before training, when given, is a baseline too, and the smaller one
    counts. The run then ends as a finished, diverged run (its history,
    curves and summary are written), not as a crash.

    Args:
        factor: float > 1.
        first_loss: the first epoch's cost, when a run resumes after it.
        initial_loss: the cost before training, or None.

    Attributes:
        reason: None, or one line saying why training stopped.
    """

    def __init__(self, factor=3.0, first_loss=None, initial_loss=None):
        super().__init__()
        self.factor = factor
        self.first_loss = first_loss
        self.initial_loss = initial_loss
        self.reason = None

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        if not math.isfinite(loss):
            self.reason = f"training cost became {loss} at epoch {epoch + 1}"
        else:
            if self.first_loss is None:
                self.first_loss = loss
            baselines = [(self.first_loss, "the first epoch's")]
            if self.initial_loss is not None:
                baselines.append((self.initial_loss, "the cost before training,"))
            baseline, what = min(baselines)
            if loss > self.factor * baseline:
                self.reason = (
                    f"training cost {loss:.4g} at epoch {epoch + 1} exceeds "
                    f"{self.factor:g}x {what} {baseline:.4g}"
                )
        if self.reason:
            self.model.stop_training = True
