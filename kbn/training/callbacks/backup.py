"""BackupAndResume: the state of a run at its last recorded epochs, and the resume from it.

    run_dir/backup/
        epoch-0.state, epoch-1.state   every model and optimizer variable's bytes, alternately
        record.json                    the commit record: which file holds which epoch,
                                       and each variable's shape and dtype

A resumed run restores the newest state and starts `fit` at its epoch
(`fit(initial_epoch=...)`), so it continues exactly where the uninterrupted
run would be: weights, moving statistics, momentum and step count.

`BackupAndResume` is the callback that owns the folder, as Keras's
`BackupAndRestore` owns its own: it restores the newest state before `fit`,
saves one at the epochs its `Cadence` names, and removes the folder when
training ends. `Backup` is the folder's format.
"""

import pathlib
import shutil

import keras
import numpy as np

from kbn.errors import KbnError
from kbn.fileio import atomic_path, read_json, write_json
from kbn.training.distribute import smallest_across_workers


class Backup:
    """The last two epochs' state of one run, each file written whole.

    States alternate between two files, each written beside its place and
    renamed into it; then `record.json`, also replaced whole, names the
    epochs and the files that go together. It is the commit record: until it
    is replaced, the files it names are untouched. A record or state that
    cannot be read counts as no backup, and the run starts from its
    beginning.

    Two epochs are kept, not one, so that the workers of a multi-worker run
    killed between two of their writes can all go back to the newest epoch
    every one of them has (`restore(epoch=...)`).

    The state is every model variable and every optimizer variable, their
    bytes one after the other in one file, in the order of `model.variables`
    then `model.optimizer.variables`; the record lists each one's shape and
    dtype, so a restore checks that the state fits the model. One flat file
    is the cheapest save measured (a `.npz` pays zip headers and checksums
    per array; Keras's `BackupAndRestore` writes `.weights.h5` and a JSON
    file in place, which a kill can tear): `benchmarks/search_overhead.py`
    times it, and a search writes one at every recorded epoch of every trial.

    Args:
        folder: the backup folder, made when first written.
    """

    def __init__(self, folder):
        self.folder = pathlib.Path(folder)

    @property
    def _record_path(self):
        return self.folder / "record.json"

    def epochs(self):
        """The epochs whose state is on disk, newest first: [] when there is none."""
        record = read_json(self._record_path) or {}
        return [entry["epoch"] for entry in record.get("states", [])]

    def save(self, model, epoch):
        """Write the state of `model` (and its optimizer) after `epoch` epochs."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch % 2}.state"
        arrays = [variable.numpy() for variable in _variables(model)]
        with atomic_path(self.folder / name) as tmp, open(tmp, "wb") as f:
            for array in arrays:
                f.write(array.tobytes())  # C order, as `restore` reads it
        record = read_json(self._record_path) or {}
        kept = [s for s in record.get("states", []) if s["state"] != name][:1]
        write_json(
            self._record_path,
            {"layout": _layout(arrays), "states": [{"epoch": epoch, "state": name}, *kept]},
        )

    def restore(self, model, epoch=None):
        """Load the newest state (or that of `epoch`) into `model`; its epoch.

        Returns:
            the number of epochs the restored state had finished, or 0 when
            there is no usable backup (the model is then left as it was and
            the folder removed).
        """
        record = read_json(self._record_path) or {}
        states = record.get("states", [])
        if epoch is not None:
            states = [s for s in states if s["epoch"] == epoch]
        if not states:
            return 0
        optimizer = model.optimizer
        if not optimizer.built:
            with model.distribute_strategy.scope():
                optimizer.build(model.trainable_variables)
        everything = _variables(model)
        before = [variable.numpy() for variable in everything]
        try:
            if record.get("layout") != _layout(before):
                raise ValueError("the backup holds another model's state")
            data = (self.folder / states[0]["state"]).read_bytes()
            if len(data) != sum(array.nbytes for array in before):
                raise ValueError("the state file is torn")
            offset = 0
            for variable, array in zip(everything, before):
                saved = np.frombuffer(data, array.dtype, array.size, offset).reshape(array.shape)
                variable.assign(saved)
                offset += array.nbytes
            return int(states[0]["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            for variable, array in zip(everything, before):
                variable.assign(array)
            self.remove()
            return 0

    def remove(self):
        shutil.rmtree(self.folder, ignore_errors=True)


def _variables(model):
    """Every variable of the model, then every variable of its optimizer."""
    return [*model.variables, *model.optimizer.variables]


def _layout(arrays):
    """Each array's shape and dtype, as JSON keeps them: [[[3072, 50], "float32"], ...]."""
    return [[list(array.shape), array.dtype.str] for array in arrays]


class BackupAndResume(keras.callbacks.Callback):
    """The run's backup, from restore to removal: Keras's `BackupAndRestore`, kill-safe.

    Call `restore(model)` before `fit`: it gives the epoch to start from,
    `fit(initial_epoch=...)`, which Keras offers no public way for a
    callback to move. Then, as a callback, it saves the state at every
    epoch end its `cadence` names, and removes the folder when training
    ends: a finished run keeps no backup. Put it after the run log, which
    asks the same cadence and writes summary.json first.

    Under `MultiWorkerMirroredStrategy` every worker restores the newest
    epoch all of them have: workers write their backups one after the
    other, so a kill can leave one an epoch ahead; each keeps its two last
    states, and the one ahead goes back.

    Args:
        folder: the backup folder (`run_dir/backup`).
        cadence: the run's `Cadence`.
        resume: False: a backup left by an earlier run of the same name is
            removed and the run starts at epoch 0.
    """

    def __init__(self, folder, cadence, resume=False):
        super().__init__()
        self.backup = Backup(folder)
        self.cadence = cadence
        self.resume = resume

    def restore(self, model):
        """Load the newest usable state into `model`; the number of epochs it had run (0: none)."""
        if not self.resume:
            self.backup.remove()
            return 0
        done = self.backup.restore(model)
        agreed = smallest_across_workers(model.distribute_strategy, done)
        if agreed == done:
            return done
        if agreed in self.backup.epochs():
            return self.backup.restore(model, epoch=agreed)
        raise KbnError(
            f"the workers' backups are too far apart to resume (this one: epoch {done}, "
            f"another: epoch {agreed}); start the run over without --resume"
        )

    def on_epoch_end(self, epoch, logs=None):
        if self.cadence.due(epoch + 1):
            self.backup.save(self.model, epoch + 1)

    def on_train_end(self, logs=None):
        self.backup.remove()
