"""Learning-rate schedules of the report and of DD2424's later assignments.

All are Keras `LearningRateSchedule`s of the optimizer's step counter, so the
optimizer, `BackupAndRestore` and `.keras` files carry them.

    exp       eta * decay ** epoch            (the report: decay per epoch)
    cyclic    triangular eta_min -> eta_max -> eta_min, half-cycle step_size
    constant  eta
"""

import keras
from keras import ops

SCHEDULES = ("exp", "cyclic", "constant")


@keras.saving.register_keras_serializable(package="kbn")
class Triangular(keras.optimizers.schedules.LearningRateSchedule):
    """Cyclical learning rate, triangular policy (Smith, 2017).

    `eta_t` rises linearly from eta_min to eta_max over `step_size` steps
    (DD2424's n_s), falls back over the next `step_size`, and repeats:
    `eta_t = eta_min + (eta_max - eta_min) * (1 - |t / step_size mod 2 - 1|)`.

    Args:
        eta_min: float > 0, the bottom of each cycle.
        eta_max: float >= eta_min, the top.
        step_size: positive int, steps per half cycle.

    Reference:
        Smith, Cyclical Learning Rates for Training Neural Networks, 2017,
        https://arxiv.org/abs/1506.01186
    """

    def __init__(self, eta_min, eta_max, step_size):
        if not 0 < eta_min <= eta_max:
            raise ValueError(
                f"Triangular needs 0 < eta_min <= eta_max. "
                f"Received: eta_min={eta_min}, eta_max={eta_max}"
            )
        if step_size < 1:
            raise ValueError(f"Triangular needs step_size >= 1. Received: {step_size}")
        self.eta_min = float(eta_min)
        self.eta_max = float(eta_max)
        self.step_size = int(step_size)

    def __call__(self, step):
        t = ops.cast(step, "float32") / self.step_size
        phase = 1.0 - ops.abs(ops.mod(t, 2.0) - 1.0)  # 0 -> 1 -> 0 per cycle
        return self.eta_min + (self.eta_max - self.eta_min) * phase

    def get_config(self):
        return {"eta_min": self.eta_min, "eta_max": self.eta_max, "step_size": self.step_size}


def learning_rate(schedule, *, eta, steps_per_epoch, decay=0.8, eta_min=None, step_size=None):
    """The optimizer's learning rate for a kbn schedule name.

    Args:
        schedule: one of `exp`, `cyclic`, `constant`.
        eta: the initial rate (exp, constant) or the top of the cycle
            (cyclic).
        steps_per_epoch: optimizer steps in one epoch.
        decay: exp's factor per epoch.
        eta_min: cyclic's bottom; default eta / 10.
        step_size: cyclic's half cycle in steps; default 2 epochs.

    Returns:
        a float or a `LearningRateSchedule`.
    """
    if schedule == "constant":
        return eta
    if schedule == "exp":
        return keras.optimizers.schedules.ExponentialDecay(
            eta, decay_steps=steps_per_epoch, decay_rate=decay, staircase=True
        )
    if schedule == "cyclic":
        return Triangular(
            eta_min if eta_min is not None else eta / 10,
            eta,
            step_size or 2 * steps_per_epoch,
        )
    raise ValueError(
        f"schedule must be one of {', '.join(SCHEDULES)}. Received: schedule={schedule!r}"
    )
