"""EpochTensorBoard: Keras's TensorBoard callback, flushed at every epoch end and resumable.

    run_dir/train/, run_dir/validation/   epoch_loss, epoch_accuracy, epoch_learning_rate, ...

Keras's writers flush every few events and close only on a clean end, so a
killed run would lose its last epochs' curves: this one flushes at each
epoch end. A resumed run starts its curves afresh and first writes the
epochs it recorded before, so the curves hold every epoch exactly once,
whatever moment the previous process died at.
"""

import pathlib
import shutil

import keras
import tensorflow as tf

from kbn import _compat


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras's `TensorBoard` with one point per epoch, flushed at every epoch end.

    The learning rate logged is the one the epoch ran at: the `learning_rate`
    that `LearningRateLogger` puts in the logs (Keras's own callback would
    read the optimizer after the epoch, i.e. the next epoch's rate).

    Args:
        log_dir: the run's folder; the curves go to its `train/` and
            `validation/` sub-folders, which are started afresh.
        history: the epochs recorded before this process, by key (a resumed
            run's summary.json history); written first.
        **kwargs: `keras.callbacks.TensorBoard`'s other arguments.
    """

    def __init__(self, log_dir, history=None, **kwargs):
        super().__init__(log_dir=str(log_dir), write_graph=False, **kwargs)
        self.history = history or {}
        self._per_epoch = self.update_freq == "epoch" and not kwargs.get("profile_batch")

    def on_train_begin(self, logs=None):
        for split in ("train", "validation"):
            shutil.rmtree(pathlib.Path(self.log_dir) / split, ignore_errors=True)
        _replay(pathlib.Path(self.log_dir), self.history)
        super().on_train_begin(logs)

    def on_train_batch_end(self, batch, logs=None):
        # Keras writes every call's logs as `batch_*` summaries, which no
        # writer takes when logging per epoch: work for nothing.
        if not self._per_epoch:
            super().on_train_batch_end(batch, logs)

    def _collect_learning_rate(self, logs):  # Keras's private hook (kbn._compat.OVERRIDDEN)
        return logs if "learning_rate" in logs else super()._collect_learning_rate(logs)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        for writer in _compat.tensorboard_writers(self):
            writer.flush()


def _replay(run_dir, history):
    """Write recorded epochs into new event files of `run_dir/train` and `run_dir/validation`."""
    validation = [key for key in history if key.startswith("val_")]
    training = [key for key in history if key not in validation and key != "seconds"]
    for split, keys in (("train", training), ("validation", validation)):
        if not keys:
            continue
        writer = tf.summary.create_file_writer(str(run_dir / split))
        with writer.as_default():
            for key in keys:
                name = f"epoch_{key.removeprefix('val_')}"  # as Keras's TensorBoard names it
                for epoch, value in enumerate(history[key]):
                    if value is not None:
                        tf.summary.scalar(name, value, step=epoch)
        writer.close()
