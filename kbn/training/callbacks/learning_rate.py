"""LearningRateLogger: the learning rate each epoch ran at, in the epoch's logs."""

import keras


class LearningRateLogger(keras.callbacks.Callback):
    """Adds `learning_rate` to each epoch's logs: the rate the epoch started with.

    The optimizer's rate is read once, when the epoch begins, and shared
    through the logs with every callback after this one (the run log, the
    TensorBoard curves, the user's callbacks), as Keras's own
    `LearningRateScheduler` shares it. Read at the epoch's end instead, a
    schedule would already give the next epoch's rate.
    """

    def __init__(self):
        super().__init__()
        self._rate = None

    def on_epoch_begin(self, epoch, logs=None):
        self._rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = self._rate
