"""Learning-rate schedules of the report and of DD2424's later assignments.

The report: DD2424 assignment 3, k-layer networks with batch normalization.

All are Keras `LearningRateSchedule`s of the optimizer's step counter, so the
optimizer, `BackupAndRestore` and `.keras` files carry them.

    exp       eta * decay ** epoch            (the report: decay per epoch)
    cyclic    triangular eta_min -> eta_max -> eta_min, half-cycle step_size
    cosine    eta -> eta_min along half a cosine over the whole run
    constant  eta

and `ExponentialRange`, the learning-rate range test's rise from eta_min to
eta_max (`kbn lr-find`), which no training run uses.

Each schedule keeps its numbers in variables that the compiled training step
reads, not in constants traced into it: `assign` gives an already compiled
model a new schedule of the same kind without tracing its training step
again, which is what lets a search run its trials back to back.
"""

import math

import keras
import tensorflow as tf
from keras import ops

SCHEDULES = ("exp", "cyclic", "cosine", "constant")


class _Schedule(keras.optimizers.schedules.LearningRateSchedule):
    """A schedule whose numbers (`_fields`) live in float32 variables.

    The Python values stay as attributes too: `get_config` gives them back
    exactly as they were passed.
    """

    _fields: tuple[str, ...] = ()

    def __init__(self, **values: float) -> None:
        self._variables = {}
        for name in self._fields:
            setattr(self, name, values[name])
            self._variables[name] = tf.Variable(
                float(values[name]), trainable=False, dtype=tf.float32
            )

    def _read(self, name: str) -> tf.Tensor:
        return self._variables[name].read_value()

    def assign(self, other: "_Schedule") -> None:
        """Take `other`'s numbers (a schedule of the same class), in place."""
        if type(other) is not type(self):
            raise TypeError(f"cannot assign a {type(other).__name__} to a {type(self).__name__}")
        for name in self._fields:
            setattr(self, name, getattr(other, name))
            self._variables[name].assign(float(getattr(other, name)))

    def get_config(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in self._fields}


@keras.saving.register_keras_serializable(package="kbn")
class Exponential(_Schedule):
    """The report's decay: `eta_t = eta * decay ** floor(t / steps_per_epoch)`.

    Args:
        eta: float > 0, the rate of the first epoch.
        decay: float in (0, 1], the factor per epoch.
        steps_per_epoch: positive int, optimizer steps in one epoch.
    """

    _fields = ("eta", "decay", "steps_per_epoch")

    def __init__(self, eta: float, decay: float, steps_per_epoch: int) -> None:
        if not eta > 0 or not 0 < decay <= 1 or steps_per_epoch < 1:
            raise ValueError(
                f"Exponential needs eta > 0, 0 < decay <= 1, steps_per_epoch >= 1. "
                f"Received: eta={eta}, decay={decay}, steps_per_epoch={steps_per_epoch}"
            )
        super().__init__(eta=float(eta), decay=float(decay), steps_per_epoch=int(steps_per_epoch))

    def __call__(self, step: int | tf.Tensor) -> tf.Tensor:
        epoch = ops.floor(ops.cast(step, "float32") / self._read("steps_per_epoch"))
        return self._read("eta") * ops.power(self._read("decay"), epoch)


@keras.saving.register_keras_serializable(package="kbn")
class Triangular(_Schedule):
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

    _fields = ("eta_min", "eta_max", "step_size")

    def __init__(self, eta_min: float, eta_max: float, step_size: int) -> None:
        if not 0 < eta_min <= eta_max:
            raise ValueError(
                f"Triangular needs 0 < eta_min <= eta_max. "
                f"Received: eta_min={eta_min}, eta_max={eta_max}"
            )
        if step_size < 1:
            raise ValueError(f"Triangular needs step_size >= 1. Received: {step_size}")
        super().__init__(eta_min=float(eta_min), eta_max=float(eta_max), step_size=int(step_size))

    def __call__(self, step: int | tf.Tensor) -> tf.Tensor:
        t = ops.cast(step, "float32") / self._read("step_size")
        phase = 1.0 - ops.abs(ops.mod(t, 2.0) - 1.0)  # 0 -> 1 -> 0 per cycle
        eta_min = self._read("eta_min")
        return eta_min + (self._read("eta_max") - eta_min) * phase


@keras.saving.register_keras_serializable(package="kbn")
class Cosine(_Schedule):
    """Half a cosine from eta down to eta_min over `decay_steps`, then eta_min.

    `eta_t = eta_min + (eta - eta_min) * (1 + cos(pi * min(t / decay_steps, 1))) / 2`
    (Loshchilov and Hutter, SGDR, 2017, without restarts).

    Args:
        eta: float > 0, the first rate.
        eta_min: float in [0, eta], the last.
        decay_steps: positive int, the run's length in steps.
    """

    _fields = ("eta", "eta_min", "decay_steps")

    def __init__(self, eta: float, eta_min: float, decay_steps: int) -> None:
        if not 0 <= eta_min <= eta or not eta > 0 or decay_steps < 1:
            raise ValueError(
                f"Cosine needs 0 <= eta_min <= eta, eta > 0, decay_steps >= 1. "
                f"Received: eta={eta}, eta_min={eta_min}, decay_steps={decay_steps}"
            )
        super().__init__(eta=float(eta), eta_min=float(eta_min), decay_steps=int(decay_steps))

    def __call__(self, step: int | tf.Tensor) -> tf.Tensor:
        done = ops.minimum(ops.cast(step, "float32") / self._read("decay_steps"), 1.0)
        eta_min = self._read("eta_min")
        return eta_min + (self._read("eta") - eta_min) * 0.5 * (1.0 + ops.cos(math.pi * done))


@keras.saving.register_keras_serializable(package="kbn")
class ExponentialRange(_Schedule):
    """The range test's rise: `eta_t = eta_min * (eta_max / eta_min) ** (t / (steps - 1))`.

    Geometric from eta_min at step 0 to eta_max at step `steps - 1`, then
    eta_max: equal steps on a log axis, so that each decade of eta gets as
    many mini-batches (Smith, 2017, section 3.3; `kbn.lr_find`).

    Args:
        eta_min: float > 0, the rate of the first step.
        eta_max: float > eta_min, the rate of the last.
        steps: int >= 2, the steps from the first to the last.

    Reference:
        Smith, Cyclical Learning Rates for Training Neural Networks, 2017,
        https://arxiv.org/abs/1506.01186
    """

    _fields = ("eta_min", "eta_max", "steps")

    def __init__(self, eta_min: float, eta_max: float, steps: int) -> None:
        if not 0 < eta_min < eta_max or steps < 2:
            raise ValueError(
                f"ExponentialRange needs 0 < eta_min < eta_max and steps >= 2. "
                f"Received: eta_min={eta_min}, eta_max={eta_max}, steps={steps}"
            )
        super().__init__(eta_min=float(eta_min), eta_max=float(eta_max), steps=int(steps))

    def __call__(self, step: int | tf.Tensor) -> tf.Tensor:
        done = ops.minimum(ops.cast(step, "float32") / (self._read("steps") - 1.0), 1.0)
        log_min = ops.log(self._read("eta_min"))
        return ops.exp(log_min + done * (ops.log(self._read("eta_max")) - log_min))


def learning_rate(
    schedule: str,
    *,
    eta: float,
    steps_per_epoch: int,
    decay: float = 0.8,
    eta_min: float | None = None,
    step_size: int | None = None,
    epochs: int | None = None,
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The optimizer's learning rate for a kbn schedule name.

    Args:
        schedule: one of `exp`, `cyclic`, `cosine`, `constant`.
        eta: the initial rate (exp, cosine, constant) or the top of the
            cycle (cyclic).
        steps_per_epoch: optimizer steps in one epoch.
        decay: exp's factor per epoch.
        eta_min: cyclic's bottom, default eta / 10; cosine's end, default 0.
        step_size: cyclic's half cycle in steps; default 2 epochs.
        epochs: the run's length, over which cosine decays.

    Returns:
        a float (constant) or a kbn `LearningRateSchedule`.
    """
    if schedule == "constant":
        return eta
    if schedule == "exp":
        return Exponential(eta, decay, steps_per_epoch)
    if schedule == "cosine":
        if not epochs:
            raise ValueError("the cosine schedule needs the run's number of epochs")
        return Cosine(eta, eta_min or 0.0, epochs * steps_per_epoch)
    if schedule == "cyclic":
        return Triangular(
            eta_min if eta_min is not None else eta / 10,
            eta,
            step_size or 2 * steps_per_epoch,
        )
    raise ValueError(
        f"schedule must be one of {', '.join(SCHEDULES)}. Received: schedule={schedule!r}"
    )
