"""TrainConfig + train(): the report's mini-batch SGD with momentum on `fit`.

    Dataset + model --train()--> run dir logs/<run name>/
        train/, validation/   TensorBoard events (loss, accuracy, learning rate)
        summary.json          config, per-epoch history, final metrics, timing
        curves.png            loss and accuracy per epoch, as the report's figures
        backup/               BackupAndRestore state while the run is unfinished
        model.keras           with `save`, or wherever `save` points

Everything else is Keras's: `SGD(momentum)`, a `LearningRateSchedule`, the
progress bar, `TensorBoard`, `BackupAndRestore`. kbn adds the report's
divergence guard, an optional periodic gradient check, atomic files, and a
resume that keeps every epoch exactly once.
"""

import dataclasses
import datetime
import pathlib
import shutil
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from kbn import model as model_lib
from kbn import plots
from kbn.callbacks import DivergenceGuard, EpochTensorBoard, EpochTimer, GradientCheck
from kbn.errors import KbnError
from kbn.fileio import atomic_path, read_json, write_json
from kbn.schedules import SCHEDULES, learning_rate


@dataclasses.dataclass
class TrainConfig:
    """Every training setting in one place, printed and saved with each run."""

    # Mini-batch SGD with momentum, the report's protocol.
    eta: float = 0.0864  # initial learning rate (top of the cycle for `cyclic`)
    momentum: float = 0.9
    schedule: str = "exp"  # exp: eta * decay**epoch | cyclic | constant
    decay: float = 0.8  # exp's factor per epoch
    eta_min: float | None = None  # cyclic's bottom; default eta / 10
    step_size: int | None = None  # cyclic's half cycle in steps; default 2 epochs
    epochs: int = 20
    batch_size: int = 100
    seed: int = 0  # weights, shuffling: same seed, same numbers
    # Guards and checks.
    divergence_factor: float = 3.0  # stop when the cost exceeds this x epoch 1's
    gradcheck_every: int = 0  # re-run the gradient check every N epochs; 0: never
    # Where things go.
    logdir: str = "logs"
    run_name: str | None = None  # default: a timestamp
    save: str | None = None  # .keras path for the trained model
    resume: bool = False  # continue the run named run_name where it stopped
    verbose: int = 1  # Keras progress bar: 0 silent, 1 bar, 2 one line per epoch

    def validate(self):
        """Raise KbnError naming the first setting out of range."""
        checks = [
            (self.eta > 0, f"eta must be positive, got {self.eta}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (0 < self.decay <= 1, f"decay must be in (0, 1], got {self.decay}"),
            (self.eta_min is None or 0 < self.eta_min <= self.eta, f"eta_min must be in (0, eta], got {self.eta_min}"),
            (self.step_size is None or self.step_size >= 1, f"step_size must be a positive number of steps, got {self.step_size}"),
            (self.epochs >= 0, f"epochs must be 0 or more, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be a positive integer, got {self.batch_size}"),
            (self.divergence_factor > 1, f"divergence factor must exceed 1, got {self.divergence_factor}"),
            (self.gradcheck_every >= 0, f"gradcheck_every must be 0 or more, got {self.gradcheck_every}"),
            (not self.resume or self.run_name, "resume needs the run_name of the run to continue"),
        ]
        for ok, message in checks:
            if not ok:
                raise KbnError(message)
        if self.save and not str(self.save).endswith(".keras"):
            raise KbnError(f"the model file must end in .keras, got {self.save}")


@dataclasses.dataclass
class TrainResult:
    """What `train` gives back.

    Attributes:
        history: per-epoch lists (loss, accuracy, val_loss, val_accuracy,
            learning_rate, ...), every epoch of the run once, resumed or not.
        summary: the content of summary.json.
        run_dir: the run's folder.
        model_path: where the model was saved, or None.
        diverged: None, or why the divergence guard stopped the run.
    """

    history: dict
    summary: dict
    run_dir: pathlib.Path
    model_path: pathlib.Path | None
    diverged: str | None


def train(model, dataset, config=None):
    """Train `model` on `dataset` with mini-batch SGD with momentum.

    Args:
        model: a Keras model from raw inputs to logits, e.g. `build_mlp`;
            its compiled loss is kept (softmax cross-entropy by default).
        dataset: a `kbn.Dataset`; its val split drives the validation curves.
        config: a `TrainConfig`; defaults to the report's protocol.

    Returns:
        a `TrainResult`.
    """
    config = config or TrainConfig()
    config.validate()
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()

    run_dir = pathlib.Path(config.logdir) / (
        config.run_name or datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    )
    previous = _start_run_dir(run_dir, config.resume)

    x, y = dataset.train.x, dataset.train.y
    validation = (dataset.val.x, dataset.val.y) if len(dataset.val) else None
    steps_per_epoch = -(-len(x) // config.batch_size)
    model.compile(
        optimizer=keras.optimizers.SGD(
            learning_rate(
                config.schedule,
                eta=config.eta,
                steps_per_epoch=steps_per_epoch,
                decay=config.decay,
                eta_min=config.eta_min,
                step_size=config.step_size,
            ),
            momentum=config.momentum,
        ),
        loss=getattr(model, "loss", None) or model_lib.loss(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )

    guard = DivergenceGuard(config.divergence_factor, first_loss=_first(previous, "loss"))
    timer = EpochTimer()
    run_log = _RunLog(run_dir, config, previous, timer)
    callbacks = [guard]
    if config.gradcheck_every:
        callbacks.append(GradientCheck(x[:20], y[:20], every=config.gradcheck_every))
    callbacks += [
        timer,
        # The history reaches disk before the backup does: a resume never
        # finds a backup ahead of the history it continues.
        run_log,
        _AtomicBackupAndRestore(run_dir / "backup"),
        EpochTensorBoard(run_dir),
    ]

    model.fit(
        x,
        y,
        batch_size=config.batch_size,
        epochs=config.epochs,
        validation_data=validation,
        shuffle=True,
        callbacks=callbacks,
        verbose=config.verbose,
    )
    history = run_log.history
    model_path = _save_model(model, config.save) if config.save else None
    summary = run_log.summary(
        final=_final_metrics(model, dataset, config.batch_size),
        diverged=guard.reason,
        model_path=model_path,
    )
    write_json(run_dir / "summary.json", summary)
    if history.get("loss"):
        plots.plot_curves(history, run_dir / "curves.png", title=_title(model, config))
    return TrainResult(history, summary, run_dir, model_path, guard.reason)


def _start_run_dir(run_dir, resume):
    """Prepare the run folder; return the history of the run being resumed.

    A run started afresh under an existing name drops the old run's backup
    and curves, so they cannot mix with the new ones. A resumed run replays
    its recorded history into fresh TensorBoard files: the curves then hold
    every epoch exactly once, whatever moment the previous process died at.
    """
    summary = read_json(run_dir / "summary.json") if resume else None
    history = (summary or {}).get("history") or {}
    for stale in ("backup", "train", "validation"):
        if not resume or stale != "backup":
            shutil.rmtree(run_dir / stale, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    return history


def _first(history, key):
    values = history.get(key) or []
    return values[0] if values else None


class _RunLog(keras.callbacks.Callback):
    """Keeps the run's history and writes summary.json at every epoch end.

    On resume it starts from the recorded history, cut to the epoch the
    backup restored, and replays it into TensorBoard.
    """

    def __init__(self, run_dir, config, previous, timer):
        super().__init__()
        self.run_dir = run_dir
        self.config = config
        self.previous = previous
        self.timer = timer
        self.history = {}
        self._rate = None

    def on_train_begin(self, logs=None):
        done = self.model._initial_epoch or 0  # set by BackupAndRestore
        self.history = {k: list(v[:done]) for k, v in self.previous.items()}
        if done:
            _replay_tensorboard(self.run_dir, self.history)

    def on_epoch_begin(self, epoch, logs=None):
        self._rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        logs["learning_rate"] = self._rate  # the rate this epoch ran at
        logs["seconds"] = self.timer.seconds[-1]
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        write_json(self.run_dir / "summary.json", self.summary())

    def summary(self, final=None, diverged=None, model_path=None):
        seconds = self.history.get("seconds", [])
        return {
            "config": dataclasses.asdict(self.config),
            "run_dir": str(self.run_dir),
            "epochs_run": len(self.history.get("loss", [])),
            "seconds_per_epoch": statistics.median(seconds[1:] or seconds) if seconds else None,
            "finished": final is not None,
            "diverged": diverged,
            "final": final,
            "model_path": str(model_path) if model_path else None,
            "history": self.history,
        }


def _replay_tensorboard(run_dir, history):
    """Write the recorded epochs into fresh TensorBoard event files."""
    for split, prefix in (("train", ""), ("validation", "val_")):
        writer = tf.summary.create_file_writer(str(run_dir / split))
        with writer.as_default():
            for key, values in history.items():
                if key == "seconds" or (prefix and not key.startswith(prefix)):
                    continue
                if not prefix and key.startswith("val_"):
                    continue
                for epoch, value in enumerate(values):
                    tf.summary.scalar(f"epoch_{key[len(prefix):]}", value, step=epoch)
        writer.close()


class _AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """BackupAndRestore whose files are replaced whole, never torn.

    Keras writes the backup in place, so a kill during the write leaves a
    truncated file that breaks the next restore. Here each file is written
    beside its target and renamed over it; a backup that cannot be read
    anyway is dropped and the run starts from its beginning.
    """

    def __init__(self, backup_dir):
        super().__init__(str(backup_dir), save_freq="epoch", double_checkpoint=False)

    def _save_model(self):
        pathlib.Path(self.backup_dir).mkdir(parents=True, exist_ok=True)
        with atomic_path(self._weights_path) as tmp:
            self.model.save_weights(str(tmp), overwrite=True)
        write_json(
            self._training_metadata_path,
            {"epoch": self._current_epoch, "batch": self._last_batch_seen},
        )

    def on_train_begin(self, logs=None):
        try:
            super().on_train_begin(logs)
        except (OSError, ValueError, KeyError):
            shutil.rmtree(self.backup_dir, ignore_errors=True)
            self.model._initial_epoch = None


def _final_metrics(model, dataset, batch_size):
    """Loss and accuracy of the trained model on every split, in inference mode."""
    final = {}
    splits = {"train": dataset.train, "val": dataset.val, "test": dataset.test}
    for name, split in splits.items():
        if split is None or not len(split):
            continue
        loss, accuracy = model.evaluate(split.x, split.y, batch_size=max(batch_size, 1000), verbose=0)
        final[f"{name}_loss"] = float(loss)
        final[f"{name}_acc"] = float(accuracy)
    return final


def _save_model(model, path):
    path = pathlib.Path(path)
    with atomic_path(path) as tmp:
        model.save(tmp)
    return path


def _title(model, config):
    batch_norms = sum(1 for layer in model.layers if "batch_norm" in layer.name)
    k = sum(1 for layer in model.layers if layer.__class__.__name__ == "Dense")
    bn = "with" if batch_norms else "without"
    lam = next((layer.l2 for layer in model.layers if hasattr(layer, "l2")), 0.0)
    return f"{k}-layer network {bn} batch normalization, eta={config.eta:g}, lambda={lam:g}"
