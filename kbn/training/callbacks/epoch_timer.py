"""EpochTimer: the wall time of each epoch, training and validation together."""

import time

import keras


class EpochTimer(keras.callbacks.Callback):
    """Seconds of wall time per epoch, from its start to the end of its validation.

    Put it first in the callback list: its `on_epoch_end` then runs before
    the other callbacks' epoch-end work, which the time leaves out.

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
