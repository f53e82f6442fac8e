"""GradientCheck: the gradient check run again during training, every N epochs."""

import keras
import numpy as np

from kbn.gradcheck import check_gradients


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
