"""Keras callbacks kbn adds to `fit`: divergence guard, gradient check, timing,
and a TensorBoard writer that loses nothing when the process is killed.

The validation metrics are not a callback: kbn's train function adds them to
the logs of each epoch's last call (`kbn.training.loop.TrainingLoop.train_function`),
so every callback, whatever its place in the list, finds `val_*` there.

Keras's private attributes, where no public way exists: `EpochTensorBoard`
flushes Keras's `TensorBoard` writers (`_train_writer`, `_val_writer`) at each
epoch end, since the callback offers no flush, and overrides its
`_collect_learning_rate`, which would log the next epoch's rate.
"""

import math
import time

import keras
import numpy as np

from kbn.gradcheck.check import check_gradients


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


class GradientCheck(keras.callbacks.Callback):
    """Re-run the gradient check every `every` epochs during training.

    Adds `grad_rel_error` (the largest formula-(1) error over the weights,
    hand-written vs numerical) to the epoch's logs, so History, the summary
    and TensorBoard (placed after this callback) all record it.

    Args:
        x: a small batch of inputs, shape (N, ...).
        y: its labels, shape (N,).
        every: positive int, epochs between checks.
        max_entries: entries drawn per weight (see `check_gradients`).
    """

    def __init__(self, x, y, every=1, max_entries=200):
        super().__init__()
        self.x = np.asarray(x)
        self.y = np.asarray(y)
        self.every = every
        self.max_entries = max_entries

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or (epoch + 1) % self.every:
            return
        checks = check_gradients(
            self.model, self.x, self.y, max_entries=self.max_entries, seed=epoch
        )
        logs["grad_rel_error"] = max(c.rel_error for c in checks)


class EpochTimer(keras.callbacks.Callback):
    """Seconds of wall time per epoch (training and validation together).

    Attributes:
        seconds: list of float, one per epoch run in this process.
    """

    def __init__(self):
        super().__init__()
        self.seconds = []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras's TensorBoard callback, flushed at every epoch end.

    Keras's writers flush every 2 minutes or 10 events and close only on a
    clean end, so a killed run would lose its last epochs' curves. The
    learning rate logged is the one the epoch ran at.
    """

    def __init__(self, log_dir, **kwargs):
        super().__init__(log_dir=str(log_dir), write_graph=False, **kwargs)
        self._rate = None
        self._per_epoch = self.update_freq == "epoch" and not kwargs.get("profile_batch")

    def on_train_batch_end(self, batch, logs=None):
        # Keras writes every call's logs as `batch_*` summaries, and with
        # update_freq="epoch" no writer takes them: work for nothing, 2.4 of
        # the report's search's 215 CPU seconds (benchmarks/search_overhead.py).
        if not self._per_epoch:
            super().on_train_batch_end(batch, logs)

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self._rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def _collect_learning_rate(self, logs):
        # Keras logs the rate at the epoch's end, i.e. the next epoch's; the
        # curve shows the rate each epoch ran at, as summary.json does.
        return {**logs, "learning_rate": self._rate}

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        for writer in (self._train_writer, self._val_writer):
            writer.flush()

