"""ProgressBar: Keras's progress bar, counting the mini-batches an epoch really has."""

import keras


class ProgressBar(keras.callbacks.ProgbarLogger):
    """`keras.callbacks.ProgbarLogger` that never counts past the epoch's mini-batches.

    `fit` numbers each call of the train function by its last step as if
    every call ran `steps_per_execution` mini-batches. kbn's loop runs the
    epoch's true count, so its last call is often shorter (180 mini-batches
    run as 50 + 50 + 50 + 30), and Keras's own bar then shows "200/180"
    with a negative time left. This bar takes the step for what it is,
    capped at the epoch's last.
    """

    def on_train_batch_end(self, batch, logs=None):
        if self.target is not None:
            batch = min(batch, self.target - 1)
        super().on_train_batch_end(batch, logs)
