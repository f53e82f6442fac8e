"""LoopCache: a model compiled for a run, and its traced loop kept for the next run.

Tracing the compiled loop costs more than several short epochs, so a caller
that trains one model again and again (a search's trials share a model) holds
a `LoopCache` and passes it to every `train`: a model trained again with the
same traced settings (`TRACED`) keeps its loop, and only the schedule's
numbers and the optimizer's state are reset. The cache holds no model alive:
an entry dies with its model.
"""

import dataclasses
import weakref

import keras

from kbn.errors import KbnError
from kbn.nn.builder import compile_model
from kbn.nn.precision import model_precision, resolve
from kbn.optim.sgd import SGD
from kbn.training.config import TrainConfig
from kbn.training.loop import TrainingLoop

# The TrainConfig fields traced into the compiled loop: the schedule's kind
# (its numbers live in variables), SGD's momentum, the loss's smoothing,
# MixUp's alpha, the optimizer, the calls' length. A model trained again with
# all of them unchanged keeps its loop; any change builds a new one.
TRACED = (
    "schedule",
    "momentum",
    "label_smoothing",
    "mixup",
    "optimizer",
    "steps_per_execution",
)


@dataclasses.dataclass
class _Entry:
    """What a model's compiled loop depends on, beside the loop itself.

    `schedule` is the learning rate kbn's SGD reads (a float for the
    constant schedule, or a schedule whose numbers live in variables), None
    for the caller's own optimizer.
    """

    key: tuple
    optimizer: keras.optimizers.Optimizer
    schedule: float | keras.optimizers.schedules.LearningRateSchedule | None
    loop: TrainingLoop


class LoopCache:
    """The compiled loops of the models one owner trains, one per model.

    >>> loops = LoopCache()
    >>> for eta in (0.01, 0.1):
    ...     kbn.train(model, dataset, TrainConfig(eta=eta), loops=loops)  # traced once
    """

    def __init__(self) -> None:
        # model -> _Entry
        self._entries: weakref.WeakKeyDictionary[keras.Model, _Entry] = weakref.WeakKeyDictionary()

    def get(self, model: keras.Model) -> TrainingLoop | None:
        """The `TrainingLoop` kept for `model`, or None before its first run."""
        entry = self._entries.get(model)
        return entry.loop if entry else None

    def compile(
        self,
        model: keras.Model,
        rate: float | keras.optimizers.schedules.LearningRateSchedule,
        config: TrainConfig,
    ) -> TrainingLoop:
        """Compile `model` for a run with `config`, or reuse the loop it already has.

        Args:
            model: the model to train.
            rate: the run's learning rate, a float or a schedule
                (`kbn.optim.learning_rate`).
            config: the run's `TrainConfig`, its `steps_per_execution` at
                most one epoch's mini-batches.

        Returns:
            the model's `kbn.training.loop.TrainingLoop`.
        """
        computes, wanted = model_precision(model), resolve(config.precision)[0]
        if computes != wanted and (computes.startswith("mixed") or wanted.startswith("mixed")):
            raise KbnError(
                f"the model computes in {computes} and the config asks for {wanted}: "
                f"build the model with build_mlp(precision={wanted!r}) "
                f"or set TrainConfig(precision={computes!r})"
            )
        key = tuple(getattr(config, name) for name in TRACED)
        entry = self._entries.get(model)
        if entry and entry.key == key and entry.optimizer is model.optimizer:
            if isinstance(entry.schedule, float):  # constant: the optimizer's own variable
                entry.optimizer.learning_rate = rate
            elif entry.schedule is not None:
                entry.schedule.assign(rate)
            if entry.schedule is not None:
                _reset(_unscaled(entry.optimizer))  # the loss scale carries on
            return entry.loop
        optimizer, schedule = config.optimizer, None
        if (
            optimizer is None
            and getattr(model, "optimizer", None) is not None  # None until compiled
            and not isinstance(_unscaled(model.optimizer), SGD)
        ):
            optimizer = model.optimizer  # the caller's own, as compiled
        if optimizer is None:
            with model.distribute_strategy.scope():
                optimizer = SGD(rate, momentum=config.momentum)
            schedule = rate
        # float16 overflows past 65504 and flushes small gradients to zero:
        # the loss is scaled up before the gradient and the gradients down
        # after it, and a step with a non-finite gradient is skipped (with a
        # smaller scale next time). bfloat16 has float32's range and needs none.
        if computes == "mixed_float16" and not isinstance(
            optimizer, keras.optimizers.LossScaleOptimizer
        ):
            with model.distribute_strategy.scope():
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        with model.distribute_strategy.scope():
            compile_model(
                model,
                optimizer,
                steps_per_execution=config.steps_per_execution,
                label_smoothing=config.label_smoothing,
            )
        loop = TrainingLoop(model, mixup=config.mixup)
        self._entries[model] = _Entry(key, model.optimizer, schedule, loop)
        return loop


def _unscaled(optimizer):
    return (
        optimizer.inner_optimizer
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        else optimizer
    )


def _reset(optimizer):
    """kbn's SGD back to step 0 and no momentum; its learning rate stays."""
    for variable in optimizer.variables:
        if "learning_rate" not in variable.path:
            variable.assign(keras.ops.zeros_like(variable))
