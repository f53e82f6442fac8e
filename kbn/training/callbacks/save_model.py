"""SaveModel: the trained model written to a `.keras` file when training ends."""

import pathlib

import keras

from kbn.fileio import atomic_path


class SaveModel(keras.callbacks.Callback):
    """Writes the model to `path` at the end of training, whole or not at all.

    It saves the weights the run ends with: put it after any callback that
    changes them at the end (Keras's `EarlyStopping(restore_best_weights=True)`)
    and before the run log, whose finished summary names the file. A run
    that fails or is interrupted does not reach `on_train_end` and leaves
    any earlier file as it was.

    Args:
        path: the `.keras` file; its folder is made if missing.
    """

    def __init__(self, path):
        super().__init__()
        self.path = pathlib.Path(path)

    def on_train_end(self, logs=None):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            self.model.save(tmp)
