"""lr_find(): the learning-rate range test (Smith, 2017) on a copy of a model.

    model --copy--> copy, compiled with kbn's SGD on ExponentialRange(eta_min, eta_max, T)
    step t = 0, 1, ...: one mini-batch of EpochOrder(seed) at eta_t, its loss recorded
    after each call: smoothed loss; stop at the first blow-up (kbn.lr_range.suggest)
    curve -> the suggested eta (the config's rule), the figure

Keras offers no per-step hook that kbn's training can use: `fit` runs kbn's
compiled loop many mini-batches per call, so a callback's `on_train_batch_end`
would see one call, not one step, and could neither set each step's eta nor
read each step's loss. Here eta is a `LearningRateSchedule` of the optimizer's
own step counter (`kbn.optim.schedules.ExponentialRange`), which the optimizer
reads at every step inside the compiled loop, and the loop returns every
step's loss. The calls are short (`CHUNK` steps), so a test that blows up
stops soon after.

The test trains a copy of the model (`keras.models.clone_model` with the
model's weights), never the model: its weights, its moving statistics, its
optimizer and its compiled state are as they were afterwards, even when the
test is interrupted.
"""

import pathlib
import time

import keras
import numpy as np
import tensorflow as tf

from kbn.data import Dataset
from kbn.errors import KbnError
from kbn.lr_range.config import MIN_STEPS, LrFindConfig
from kbn.lr_range.result import LrFindResult
from kbn.lr_range.suggest import RULES, blow_up, smooth, suggest
from kbn.nn.builder import compile_model
from kbn.nn.precision import model_precision
from kbn.optim.schedules import ExponentialRange
from kbn.optim.sgd import SGD
from kbn.training.loop import train_step
from kbn.training.order import EpochOrder, batch_indices, epoch_order
from kbn.training.stages import split_fixed_stages

# Steps per call of the compiled loop: the test notices a blow-up at the end
# of a call, and a short call wastes few steps past it while its per-call
# cost stays small next to its steps'.
CHUNK = 10


def lr_find(
    model: keras.Model, dataset: Dataset, config: LrFindConfig | None = None
) -> LrFindResult:
    """Run the learning-rate range test: raise eta step by step, watch the loss, suggest an eta.

    Trains a copy of `model` with kbn's SGD with momentum for `config.steps`
    mini-batches (by default one epoch of `dataset.train`), eta rising
    geometrically from `eta_range[0]` at the first step to `eta_range[1]` at
    the last (`eta_t = eta_min * (eta_max / eta_min) ** (t / (T - 1))`),
    and records each mini-batch's training loss (the compiled loss with the
    L2 penalties, before the step's update). It stops at the first step whose
    loss is not finite or whose smoothed loss exceeds `config.stop_factor`
    times the lowest so far, and suggests an eta by `config.rule`
    (`kbn.lr_range.suggest`). The mini-batches are those of
    `kbn.train(..., TrainConfig(seed=config.seed))`'s first epoch.

    The model itself is not changed: the test trains a copy made with
    `keras.models.clone_model` and the model's weights (its input stages,
    BatchNorm's moving statistics and augmentation included), compiled with
    its own optimizer. The model must be functional or `Sequential`, and
    the test runs on one device whatever strategy built the model.

    Args:
        model: a Keras classifier from raw inputs to logits, e.g. `build_mlp`'s.
        dataset: a `kbn.Dataset`; the test reads its training split only.
        config: an `LrFindConfig`; defaults to eta from 1e-5 to 10 over one
            epoch, batch 100, momentum 0.9, the `min/10` rule.

    Returns:
        an `LrFindResult`: the curve, the suggestion, where the test stopped.
        With `config.plot` the figure is written there (`LrFindResult.plot`).

    Raises:
        KbnError: a setting out of range, an empty training split, a model
            that cannot be copied, a call inside a `tf.distribute` scope.

    Reference:
        Smith, Cyclical Learning Rates for Training Neural Networks, 2017,
        section 3.3, https://arxiv.org/abs/1506.01186
    """
    config = config or LrFindConfig()
    config.check()
    x, y = dataset.train.x, dataset.train.y
    if not len(x):
        raise KbnError("lr_find needs training examples: the training split is empty")
    if tf.distribute.has_strategy():
        raise KbnError("call lr_find outside `strategy.scope()`: the test runs on one device")
    start = time.perf_counter()
    order = EpochOrder(len(x), config.batch_size, config.seed)
    steps = config.steps or max(order.steps, MIN_STEPS)
    schedule = ExponentialRange(*config.eta_range, steps)
    copy = _copy(model)
    optimizer = SGD(schedule, momentum=config.momentum)
    # float16 overflows without loss scaling, as in `kbn.train`.
    if model_precision(copy) == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    compile_model(copy, optimizer, label_smoothing=config.label_smoothing)
    split = split_fixed_stages(copy)
    stages, trunk = split if split else (None, copy)
    # The fixed stages learn nothing: the training split goes through them once.
    x_in = tf.convert_to_tensor(x if stages is None else stages(x, training=False))
    y_in = tf.convert_to_tensor(y)
    run_chunk = _chunk_loop(copy, trunk, order)

    losses, stopped_at, t, stepping = [], None, 0, 0.0
    while t < steps:
        epoch, first = divmod(t, order.steps)
        count = min(CHUNK, order.steps - first, steps - t)
        began = time.perf_counter()
        losses.extend(
            run_chunk(
                x_in,
                y_in,
                tf.constant(epoch, tf.int64),
                tf.constant(first, tf.int64),
                tf.constant(count, tf.int32),
            ).numpy()
        )
        stepping += time.perf_counter() - began
        t += count
        stopped_at = blow_up(losses, smooth(losses, config.smoothing), config.stop_factor)
        if stopped_at is not None:
            del losses[stopped_at + 1 :]
            break
    smoothed = smooth(losses, config.smoothing)
    etas = keras.ops.convert_to_numpy(schedule(np.arange(len(losses)))).astype(np.float64)
    finite = len(losses) if stopped_at is None else stopped_at  # the blown-up step stays out
    suggestions = {rule: suggest(etas[:finite], smoothed[:finite], rule) for rule in RULES}
    result = LrFindResult(
        etas=[float(v) for v in etas],
        losses=[float(v) for v in losses],
        smoothed=[float(v) for v in smoothed],
        suggestion=suggestions[config.rule],
        rule=config.rule,
        suggestions=suggestions,
        steps=steps,
        stopped_at=stopped_at,
        seconds=time.perf_counter() - start,
        step_seconds=stepping,
    )
    if config.plot:
        result.plot_path = result.plot(pathlib.Path(config.plot))
    return result


def _copy(model):
    """A new model with `model`'s layers' configs and all its weights."""
    try:
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
    except (TypeError, ValueError) as error:
        raise KbnError(
            f"lr_find cannot copy the model ({' '.join(str(error).split())}): "
            "it needs a functional or Sequential model whose layers have a config"
        ) from None
    return copy


def _chunk_loop(model, trunk, order):
    """The compiled call: `count` steps from mini-batch `first` of epoch `epoch`.

    Each step is `kbn.training.loop.train_step` (the compiled loss with the
    penalties, the optimizer's update at the schedule's eta for its step
    counter). Returns the steps' losses, float32 (count,).
    """
    seed = tf.constant(order.seed, tf.int64)
    batch_size = tf.constant(order.batch_size, tf.int64)

    def run(x, y, epoch, first, count):
        shuffled = epoch_order(seed, epoch, tf.shape(x)[0])  # (N,)
        losses = tf.TensorArray(tf.float32, size=count)
        for i in tf.range(count):
            index = batch_indices(shuffled, first + tf.cast(i, tf.int64), batch_size)  # (B,)
            loss, _ = train_step(model, trunk, tf.gather(x, index), tf.gather(y, index))
            losses = losses.write(i, tf.cast(loss, tf.float32))
        return losses.stack()

    return tf.function(run, reduce_retracing=True)
