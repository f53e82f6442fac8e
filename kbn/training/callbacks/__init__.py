"""The Keras callbacks `train` adds to `fit`, one job each, each owning its whole lifecycle.

In the order `train` lists them (the caller's own callbacks go after the
divergence guard):

    learning_rate.py     LearningRateLogger  the rate each epoch ran at, into its logs
    epoch_timer.py       EpochTimer          each epoch's wall time
    gradient_check.py    GradientCheck       the gradient check every N epochs (--gradcheck-every)
    divergence_guard.py  DivergenceGuard     the report's stopping rule for a blown-up cost
    save_model.py        SaveModel           the trained model, when training ends
    run_log.py           RunLog              history and summary.json, final metrics at the end
    backup.py            BackupAndResume     restore before fit, save at recorded epochs,
                                             remove at the end
    tensorboard.py       EpochTensorBoard    the curves, flushed every epoch, replayed on resume
    progress_bar.py      ProgressBar         Keras's progress bar, counting the epoch's true steps
    cadence.py           Cadence             when the run log and the backup record (shared by both)

The validation metrics are not a callback: kbn's train function adds them to
the logs of the epochs that validate (`kbn.training.loop`), so every
callback, whatever its place in the list, finds `val_*` there.
"""

from kbn.training.callbacks.backup import Backup, BackupAndResume
from kbn.training.callbacks.cadence import Cadence
from kbn.training.callbacks.divergence_guard import DivergenceGuard
from kbn.training.callbacks.epoch_timer import EpochTimer
from kbn.training.callbacks.gradient_check import GradientCheck
from kbn.training.callbacks.learning_rate import LearningRateLogger
from kbn.training.callbacks.progress_bar import ProgressBar
from kbn.training.callbacks.run_log import RunLog
from kbn.training.callbacks.save_model import SaveModel
from kbn.training.callbacks.tensorboard import EpochTensorBoard

__all__ = [
    "Backup",
    "BackupAndResume",
    "Cadence",
    "DivergenceGuard",
    "EpochTensorBoard",
    "EpochTimer",
    "GradientCheck",
    "LearningRateLogger",
    "ProgressBar",
    "RunLog",
    "SaveModel",
]
