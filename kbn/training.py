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

import keras
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
    # Steps per call of the compiled train function: tiny nets on a CPU are
    # bound by per-step overhead (seed net: 0.34 s/epoch at 1, 0.15 at 100).
    steps_per_execution: int = 50
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
            (self.steps_per_execution >= 1, f"steps_per_execution must be positive, got {self.steps_per_execution}"),
            (self.divergence_factor > 1, f"divergence factor must exceed 1, got {self.divergence_factor}"),
            (self.gradcheck_every >= 0, f"gradcheck_every must be 0 or more, got {self.gradcheck_every}"),
            (not self.resume or self.run_name, "--resume needs --run-name, the run to continue"),
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
            it is compiled here with softmax cross-entropy on its logits,
            the run's SGD and accuracy (`kbn.model.compile_model`).
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
    if config.save:  # fail now, not after the training, on an unwritable path
        pathlib.Path(config.save).parent.mkdir(parents=True, exist_ok=True)

    x, y = dataset.train.x, dataset.train.y
    validation = (dataset.val.x, dataset.val.y) if len(dataset.val) else None
    steps_per_epoch = -(-len(x) // config.batch_size)
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    batches = _shuffled_batches(x, y, config.batch_size, config.seed, epoch)
    rate = learning_rate(
        config.schedule,
        eta=config.eta,
        steps_per_epoch=steps_per_epoch,
        decay=config.decay,
        eta_min=config.eta_min,
        step_size=config.step_size,
    )
    model_lib.compile_model(
        model,
        keras.optimizers.SGD(rate, momentum=config.momentum),
        steps_per_execution=config.steps_per_execution,
    )

    guard = DivergenceGuard(
        config.divergence_factor,
        first_loss=_first(previous, "loss"),
        initial_loss=_cost(model, x[:1000], y[:1000]),
    )
    timer = EpochTimer()
    run_log = _RunLog(run_dir, config, previous, timer)
    callbacks = [keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, _: epoch.assign(e)), guard]
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

    model._initial_epoch = None  # Keras keeps a restored epoch across fits
    model.fit(
        batches,
        epochs=config.epochs,
        validation_data=validation,
        validation_batch_size=max(config.batch_size, 1000),
        shuffle=False,  # _shuffled_batches does it, a new order each epoch
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


def _shuffled_batches(x, y, batch_size, seed, epoch):
    """Mini-batches of (x, y), in a new order each epoch.

    Keras's own shuffle of arrays repeats one permutation in every epoch once
    a global seed is set (its shuffle op restarts with each epoch's
    iterator), and the same batches every epoch cost the seed net about a
    point of validation accuracy. Here the order is a stateless function of
    (seed, epoch): new each epoch, the same for the same seed, and the same
    for a resumed run as for an uninterrupted one. The data stays one tensor;
    each batch is a gather.

    Args:
        x: inputs of shape (N, ...).
        y: labels of shape (N,).
        batch_size: examples per batch; the last batch may be short.
        seed: int.
        epoch: int64 tf.Variable holding the current epoch index.

    Returns:
        a `tf.data.Dataset` of (x_batch, y_batch).
    """
    x = tf.constant(x)
    y = tf.constant(y)
    n = int(x.shape[0])

    def permutation(_):
        key = tf.stack([tf.constant(seed, tf.int64), epoch.read_value()])
        return tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=key)

    return (
        tf.data.Dataset.range(1)
        .map(permutation)
        .flat_map(lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
        .map(lambda idx: (tf.gather(x, idx), tf.gather(y, idx)))
        .apply(tf.data.experimental.assert_cardinality(-(-n // batch_size)))
        .prefetch(tf.data.AUTOTUNE)
    )


def _start_run_dir(run_dir, resume):
    """Prepare the run folder; return the history of the run being resumed.

    A run started afresh under an existing name drops the old run's backup
    and curves, so they cannot mix with the new ones. A resumed run replays
    its recorded history into fresh TensorBoard files: the curves then hold
    every epoch exactly once, whatever moment the previous process died at.
    """
    summary = read_json(run_dir / "summary.json") if resume else None
    if summary and summary.get("finished"):
        raise KbnError(
            f"run {run_dir} has already finished; train under another --run-name, "
            "or without --resume to start it over"
        )
    history = (summary or {}).get("history") or {}
    for stale in ("train", "validation") if resume else ("backup", "train", "validation"):
        shutil.rmtree(run_dir / stale, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    return history


def _cost(model, x, y):
    """The model's training cost J (loss plus penalties) on (x, y), now."""
    logits = model(x, training=False)
    penalty = sum(float(p) for p in model.losses)
    return float(model_lib.loss()(y, logits)) + penalty


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
        self._restored = False

    def _restore(self):
        """Take over the previous history up to the epoch the backup restored.

        Runs once, after every callback's on_train_begin: BackupAndRestore,
        later in the list, sets the model's initial epoch there.
        """
        if self._restored:
            return
        self._restored = True
        done = self.model._initial_epoch or 0
        self.history = {k: list(v[:done]) for k, v in self.previous.items()}
        if done:
            _replay_tensorboard(self.run_dir, self.history)

    def on_train_end(self, logs=None):
        self._restore()  # the backup may hold every epoch already

    def on_epoch_begin(self, epoch, logs=None):
        self._restore()
        self._rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        logs["learning_rate"] = self._rate  # the rate this epoch ran at
        logs["seconds"] = self.timer.seconds[-1]
        # One entry per epoch in every list, None where an epoch has no value
        # (a gradient check every N epochs), so lists stay indexed by epoch.
        done = len(self.history.get("loss", []))
        for key in {*self.history, *logs}:
            values = self.history.setdefault(key, [None] * done)
            values.append(float(logs[key]) if key in logs else None)
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
    validation = [k for k in history if k.startswith("val_")]
    training = [k for k in history if k not in validation and k != "seconds"]
    for split, keys in (("train", training), ("validation", validation)):
        writer = tf.summary.create_file_writer(str(run_dir / split))
        with writer.as_default():
            for key in keys:
                name = f"epoch_{key.removeprefix('val_')}"  # as Keras's TensorBoard names it
                for epoch, value in enumerate(history[key]):
                    if value is not None:
                        tf.summary.scalar(name, value, step=epoch)
        writer.close()


class _AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """BackupAndRestore whose backup survives a kill at any moment.

    Keras writes its two backup files in place, one after the other, so a
    kill can leave a torn file, or new weights beside the old epoch count.
    Here the weights alternate between two files, each written whole and
    renamed into place; then `training_metadata.json`, also replaced whole,
    names the epoch and the weights file that go together. It is the commit
    record: until it is replaced, the files it names are untouched. A record
    or weights file that cannot be read is dropped, and the run starts from
    its beginning with the model as it was.
    """

    def __init__(self, backup_dir):
        super().__init__(str(backup_dir), save_freq="epoch", double_checkpoint=False)
        self.backup_dir = pathlib.Path(backup_dir)

    def _save_model(self):
        name = f"epoch-{self._current_epoch % 2}.weights.h5"
        with atomic_path(self.backup_dir / name) as tmp:
            self.model.save_weights(str(tmp), overwrite=True)
        write_json(
            self._training_metadata_path,
            {"epoch": self._current_epoch, "batch": self._last_batch_seen, "weights": name},
        )

    def on_train_begin(self, logs=None):
        record = read_json(self._training_metadata_path)
        if not record:
            return
        before = self.model.get_weights()
        optimizer = self.model.optimizer
        try:
            if not optimizer.built:
                optimizer.build(self.model.trainable_variables)
            self.model.load_weights(str(self.backup_dir / record["weights"]))
            self.model._initial_epoch = int(record["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            self.model.set_weights(before)
            for variable in optimizer.variables:  # momentum and step count start at 0
                variable.assign(keras.ops.zeros_like(variable))
            self.model._initial_epoch = None
            shutil.rmtree(self.backup_dir, ignore_errors=True)


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
