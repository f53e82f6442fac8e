"""The compiled training loop under `fit`: chunks of mini-batches, one call each.

Tiny networks on a CPU are bound by per-step framework work, not arithmetic:
Keras's `fit` pays for each mini-batch a `tf.data` hand-off and a nested
function call, even with `steps_per_execution`, and for each epoch a new input
pipeline (`kbn bench` times both against plain NumPy: docs/performance.md).
`TrainingLoop` is the model's `train_function` instead: `fit` still runs the
epochs, the callbacks and the progress bar (which counts mini-batches, since
the model is compiled with `steps_per_execution=S`), and each call of the
train function runs up to S mini-batches in one `tf.function`, gathering them
from the training tensors:

    x --fixed input stages, once per run--> x' (N, D)         TrainingLoop.inputs
    call c of epoch e: mini-batches b = cS .. cS + S - 1 of that epoch
      order = permutation of (seed, e)                         EpochOrder
      each replica r of R: examples order[bB + rB/R : bB + (r+1)B/R]
      step(x'[those], y[those]) under `strategy.run`, metrics once per call
        (with MixUp: those mixed by w(seed, e, b) first)         kbn.training.mixup

The fixed stages (flatten, scale, subtract the mean) learn nothing, so their
output is computed once, as NumPy code centres its data once; the step runs
the rest of the model (`split_fixed_stages`). A model without such stages, or
with its own `train_step`, gets Keras's `train_step` on raw inputs instead
(with MixUp, kbn's step on raw inputs, unless the model has its own).

Every step runs per replica under the model's `tf.distribute` strategy, and
everything is reduced as Keras reduces it: the loss is scaled by 1/R
(`model.compute_loss`), the optimizer sums the gradients over replicas, and
the metrics' variables sum their updates. The default strategy has one replica
and costs nothing. Each replica slices its part of every mini-batch from the
same permutation, so the examples (and, with kbn's synchronized BatchNorm, the
numbers) are those of one device with the same global batch; under
`MultiWorkerMirroredStrategy` every worker holds the whole data set and
computes the same permutation.

Keras's private attributes: none are read or written here. `fit` is fed a
dummy one-element dataset that the train function never reads, because the
mini-batches come from the permutation, not from an iterator.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from kbn._quiet import tensorflow_warnings_off
from kbn.errors import KbnError
from kbn.training.mixup import mix, mixed_loss, mixup_weight
from kbn.training.order import batch_indices, epoch_order
from kbn.training.stages import split_fixed_stages


@dataclasses.dataclass(frozen=True)
class Validation:
    """The validation split as the loop evaluates it, and the epochs that do.

    Attributes:
        x: inputs (N, ...), from `TrainingLoop.inputs`.
        y: labels (N,).
        epochs: the 1-based epochs after which the split is evaluated.
        batch_size: examples per evaluation batch.
    """

    x: object
    y: object
    epochs: frozenset
    batch_size: int


def train_step(model, trunk, x, y, w=None):
    """One SGD step: Keras's TensorFlow `train_step`, its forward pass `trunk(x)`.

    The model's compiled loss (with its penalties, scaled by 1/R under a
    strategy of R replicas, as Keras scales it) and optimizer (which sums the
    replicas' gradients), on x already through the fixed stages
    (`split_fixed_stages`). The metrics are left to `update_metrics`, once
    per call.

    Args:
        model: the compiled model.
        trunk: the model after its fixed stages (the whole model when it has none).
        x: this replica's mini-batch (B/R, D) from the stages.
        y: its labels (B/R,).
        w: None, or MixUp's weight () for this mini-batch: the step trains
            on the batch mixed with itself reversed, against both labels
            (`kbn.training.mixup`).

    Returns:
        (loss (), y_pred (B/R, K)): the replica's loss, unscaled, and its
        predictions, before the step's update.
    """
    if w is not None:
        x = mix(x, w)
    with tf.GradientTape() as tape:
        y_pred = trunk(x, training=True)
        if w is None:
            loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
        else:
            loss = mixed_loss(model, x, y, y_pred, w)
        scaled = model.optimizer.scale_loss(loss)
    variables = model.trainable_variables
    model.optimizer.apply(tape.gradient(scaled, variables), variables)
    return _unscaled(loss), y_pred


def evaluation_step(model, trunk, x, y):
    """Keras's TensorFlow `test_step`, its forward pass `trunk(x)`, metrics updated."""
    y_pred = trunk(x, training=False)
    loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=False)
    update_metrics(model, _unscaled(loss)[None], tf.shape(x)[:1], y, y_pred)


def update_metrics(model, losses, sizes, y, y_pred):
    """The model's loss tracker and compiled metrics, over S batches at once.

    Keras updates them after every step, a dozen small ops each time, which
    a short step pays for in full; the means come out the same when the
    steps' losses are weighted by their batch sizes, as Keras does. Under a
    strategy the metrics' variables sum every replica's update.

    Args:
        model: the compiled model.
        losses: each batch's mean loss (S,).
        sizes: each batch's size (S,).
        y: the labels of all S batches (N,).
        y_pred: their predictions (N, K).
    """
    loss_tracker(model).update_state(losses, sample_weight=tf.cast(sizes, losses.dtype))
    model.compute_metrics(None, y, y_pred)


def loss_tracker(model):
    """The compiled model's running mean of the loss, the `Mean` named "loss"."""
    return next(metric for metric in model.metrics if metric.name == "loss")


def _unscaled(loss):
    """A replica's loss without Keras's 1/R scaling: its own examples' mean."""
    replicas = _replicas()
    return loss if replicas == 1 else loss * tf.cast(replicas, loss.dtype)


def _replicas():
    return tf.distribute.get_replica_context().num_replicas_in_sync


def _replica_id():
    return tf.distribute.get_replica_context().replica_id_in_sync_group


class TrainingLoop:
    """The compiled loops of one compiled model, traced once, run for every run.

    Training runs a call's mini-batches (`EpochOrder`), evaluation a whole
    split, each in one `tf.function` call, per replica under the model's
    strategy. When the model starts with fixed stages (`split_fixed_stages`),
    both take the data through them once (`inputs`) and run the rest of the
    model per batch with the model's compiled loss, optimizer and metrics
    (`train_step`, `evaluation_step`); otherwise they call the model's own
    `train_step` and `test_step` on raw inputs.

    What is traced into the loops (the model, its optimizer and loss, the
    strategy) is fixed for the object's life; everything else (data, order,
    batch size, step range) is an argument. A `kbn.training.LoopCache` keeps
    one per model and traced settings (`kbn.training.TRACED`) and builds a new one when one
    of them changes.

    Args:
        model: a compiled Keras model (TensorFlow backend).
        mixup: MixUp's alpha (`kbn.training.mixup`), 0 for none. A model
            without fixed stages then trains through kbn's step on raw
            inputs; one with its own `train_step` cannot mix.

    Attributes:
        strategy: the model's `tf.distribute.Strategy`.
        stages: the fixed stages, a functional model, or None.
    """

    def __init__(self, model, mixup=0.0):
        self.model = model
        self.strategy = model.distribute_strategy
        self.mixup = float(mixup)
        split = split_fixed_stages(model)
        self.stages = split[0] if split else None
        self._kept_inputs = {}  # id(x) -> (x, stage weights, output): see `inputs`
        if split:
            self._through_stages = tf.function(
                lambda x: split[0](x, training=False), reduce_retracing=True
            )
            check = lambda x, y: evaluation_step(model, split[1], x, y)
        else:
            check = lambda x, y: model.test_step((x, y))
        # MixUp changes the step's inputs and loss: a model without fixed
        # stages trains through kbn's step too, on raw inputs, unless the
        # model brings its own step.
        trunk = split[1] if split else (model if self.mixup else None)
        if trunk is model and type(model).train_step is not keras.Model.train_step:
            raise KbnError(
                f"mixup cannot change {type(model).__name__}'s own train_step: "
                "train it with mixup=0, or mix the data in its train_step"
            )
        step = None if trunk is None else lambda x, y, w: train_step(model, trunk, x, y, w)
        self._run_chunk = self._chunk_loop(model, step)
        self._run_split = self._split_loop(model, check)

    def _chunk_loop(self, model, step):
        strategy = self.strategy

        def weight(seed, epoch, b):
            # MixUp's weight for mini-batch b of the epoch; None without MixUp.
            return mixup_weight(self.mixup, seed, epoch, b) if self.mixup else None

        def one_replica_chunk(x, y, seed, epoch, order, first, count, batch_size):
            # One replica: the whole call in one loop, the metrics once at
            # its end (see `update_metrics`).
            dtype = model.outputs[0].dtype
            losses = tf.TensorArray(dtype, size=count)
            predictions = tf.TensorArray(
                dtype,
                size=count,
                infer_shape=False,
                element_shape=[None, model.outputs[0].shape[-1]],
            )
            for i in tf.range(count):
                b = first + tf.cast(i, tf.int64)
                index = batch_indices(order, b, batch_size)
                loss, y_pred = step(
                    tf.gather(x, index), tf.gather(y, index), weight(seed, epoch, b)
                )
                losses = losses.write(i, tf.cast(loss, dtype))
                predictions = predictions.write(i, y_pred)
            # The call's batches are one run of the order: their labels and sizes at once.
            n = tf.shape(order, out_type=tf.int64)[0]
            starts = (first + tf.range(tf.cast(count, tf.int64))) * batch_size  # (S,)
            sizes = tf.minimum(batch_size, n - starts)  # (S,): B, or less for the epoch's last
            labels = tf.gather(y, order[starts[0] : starts[-1] + sizes[-1]])
            update_metrics(model, losses.stack(), sizes, labels, predictions.concat())

        def replica_step(x, y, seed, epoch, order, b, batch_size):
            # Several replicas: one step per `strategy.run`, since replicas
            # synchronise (gradients, batch statistics) only outside loops.
            index = batch_indices(order, b, batch_size, _replica_id(), _replicas())
            if step is None:  # Keras's own train_step, metrics included
                model.train_step((tf.gather(x, index), tf.gather(y, index)))
                return
            loss, y_pred = step(tf.gather(x, index), tf.gather(y, index), weight(seed, epoch, b))
            update_metrics(model, loss[None], tf.shape(index)[:1], tf.gather(y, index), y_pred)

        def run_chunk(x, y, seed, epoch, first, count, batch_size):
            order = epoch_order(seed, epoch, tf.shape(x)[0])
            if strategy.num_replicas_in_sync == 1 and step is not None:
                strategy.run(
                    one_replica_chunk, args=(x, y, seed, epoch, order, first, count, batch_size)
                )
            else:
                for i in tf.range(count):
                    b = first + tf.cast(i, tf.int64)
                    strategy.run(replica_step, args=(x, y, seed, epoch, order, b, batch_size))
            return model.get_metrics_result()

        return tf.function(run_chunk, reduce_retracing=True)

    def _split_loop(self, model, check):
        strategy = self.strategy

        def replica_check(x, y, start, size):
            r = tf.cast(_replica_id(), tf.int64)
            replicas = tf.cast(_replicas(), tf.int64)
            lo, hi = start + size * r // replicas, start + size * (r + 1) // replicas
            check(x[lo:hi], y[lo:hi])

        # Keras's `evaluate` builds a new input pipeline on every call and
        # pays a function call per batch: one loop over the split pays neither.
        def run_split(x, y, batch_size):
            n = tf.shape(x, out_type=tf.int64)[0]
            for start in tf.range(0, n, batch_size):
                size = tf.minimum(start + batch_size, n) - start
                strategy.run(replica_check, args=(x, y, start, size))
            return model.get_metrics_result()

        return tf.function(run_split, reduce_retracing=True)

    def inputs(self, x):
        """`x` as the loops take it: through the fixed stages, once, as a tensor.

        One compiled call over the whole split: TensorFlow reuses the
        buffer of each elementwise stage for the next, so the result is the
        only large new tensor: N x D float32 numbers.

        A read-only NumPy array's result is kept for the next runs of this
        loop while the stages' weights stay the same: a search's trials
        share one model, and would otherwise pass the same images through
        the same stages once per trial (`benchmarks/search_overhead.py`).
        Read-only is the caller's promise that the array will not change; a
        writable one goes through the stages every time.

        Args:
            x: raw inputs (N, ...), as the model takes them.

        Returns:
            a tensor (N, D) of the stages' output, or x itself as a tensor
            when the model has no fixed stages.
        """
        if self.stages is None or len(x) == 0:
            return tf.convert_to_tensor(x)
        frozen = isinstance(x, np.ndarray) and not x.flags.writeable
        if frozen:
            weights = [w.numpy() for w in self.stages.weights]  # e.g. Centering's mean (D,)
            kept = self._kept_inputs.get(id(x))
            if kept and kept[0] is x and _equal(kept[1], weights):
                return kept[2]
        # Each model's stages and loops trace anew, by design: TensorFlow
        # counts the traces of every model's function together and would warn
        # of "frequent retracing" in a study of many models.
        with tensorflow_warnings_off():
            out = self._through_stages(x)
        if frozen:
            # A few splits (train, val, test); the array itself is kept, so
            # its id names no other array while the entry lives.
            if len(self._kept_inputs) >= _KEPT_SPLITS:
                self._kept_inputs.pop(next(iter(self._kept_inputs)))
            self._kept_inputs[id(x)] = (x, weights, out)
        return out

    def train_function(self, x, y, order_of, first_epoch, steps_per_execution, validation=None):
        """A `model.train_function` for `fit(steps_per_epoch=order_of.steps)`.

        `fit` calls it once per `steps_per_execution` mini-batches (the
        model's compiled setting, which the progress bar counts in); each
        call runs the next ones of the epoch, up to the epoch's end. The
        calls are counted from `first_epoch` on, so they must come from one
        `fit` that starts at that epoch. With `validation`, the last call of
        each epoch it names also evaluates the validation split and adds
        its metrics as `val_<name>`: `fit`'s callbacks find them in their
        epoch logs, as with `fit(validation_data=...)`.

        Args:
            x: training inputs (N, ...), from `inputs`.
            y: training labels (N,).
            order_of: the run's `EpochOrder`.
            first_epoch: the epoch `fit` starts at (after a resume).
            steps_per_execution: S, as the model is compiled.
            validation: None, or a `Validation`: the split and the epochs
                that evaluate it.

        Returns:
            a function of Keras's (unread) iterator giving the logs dict.
        """
        y = tf.convert_to_tensor(y)
        calls_per_epoch = -(-order_of.steps // steps_per_execution)
        seed = tf.constant(order_of.seed, tf.int64)
        batch_size = tf.constant(order_of.batch_size, tf.int64)
        calls = 0

        def run(iterator):
            nonlocal calls
            epoch, call = divmod(calls, calls_per_epoch)
            calls += 1
            first = call * steps_per_execution
            count = min(steps_per_execution, order_of.steps - first)
            with tensorflow_warnings_off():  # a new model's loops trace anew (see `inputs`)
                logs = self._run_chunk(
                    x,
                    y,
                    seed,
                    tf.constant(first_epoch + epoch, tf.int64),
                    tf.constant(first, tf.int64),
                    tf.constant(count, tf.int32),
                    batch_size,
                )
            epochs_run = first_epoch + epoch + 1
            if (
                validation is None
                or call != calls_per_epoch - 1
                or epochs_run not in validation.epochs
            ):
                return logs
            logs = {
                name: float(value) for name, value in logs.items()
            }  # before `evaluate` resets them
            metrics = self.evaluate(validation.x, validation.y, validation.batch_size)
            return {**logs, **{f"val_{name}": value for name, value in metrics.items()}}

        return run

    def evaluate(self, x, y, batch_size):
        """Loss (with penalties) and metrics in inference mode, as `model.evaluate`'s.

        Args:
            x: inputs (N, ...), N > 0, from `inputs`.
            y: labels (N,).
            batch_size: examples per batch (global, split over the replicas).

        Returns:
            {"loss": float, "accuracy": float, ...}, as Keras names them.
        """
        self.model.reset_metrics()
        with tensorflow_warnings_off():  # a new model's loops trace anew (see `inputs`)
            results = self._run_split(x, tf.convert_to_tensor(y), tf.constant(batch_size, tf.int64))
        return {name: float(value) for name, value in results.items()}

    def tracing_counts(self):
        """How often each compiled loop has been traced: (chunk, split)."""
        return (
            self._run_chunk.experimental_get_tracing_count(),
            self._run_split.experimental_get_tracing_count(),
        )


_KEPT_SPLITS = 3


def _equal(arrays, others):
    return len(arrays) == len(others) and all(np.array_equal(a, b) for a, b in zip(arrays, others))


def fit_data(strategy):
    """The dataset `fit` iterates over while kbn's train function runs the steps.

    `fit` needs data to make its epoch iterator; kbn's train function never
    reads it (the mini-batches come from `EpochOrder`), so one constant
    element, repeated, distributed over the replicas as `fit` would.
    """
    dataset = tf.data.Dataset.from_tensors(tf.zeros((strategy.num_replicas_in_sync,))).repeat()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return strategy.experimental_distribute_dataset(dataset.with_options(options))
