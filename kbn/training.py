"""TrainConfig + train(): the report's mini-batch SGD with momentum on `fit`.

    Dataset + model --train()--> run dir logs/<run name>/
        train/, validation/   TensorBoard events (loss, accuracy, learning rate)
        summary.json          config, per-epoch history, final metrics, timing
        curves.png            loss and accuracy per epoch, as the report's figures
        backup/               BackupAndRestore state while the run is unfinished
        model.keras           with `save`, or wherever `save` points

Everything else is Keras's: `SGD(momentum)` (`kbn.sgd.SGD`: the same
update fused into one op), a `LearningRateSchedule`, the progress bar,
`TensorBoard`, `BackupAndRestore`. kbn adds the report's divergence guard,
an optional periodic gradient check, atomic files, and a resume that keeps
every epoch exactly once.
"""

import dataclasses
import datetime
import pathlib
import random
import shutil
import statistics

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.eager import context as tf_context

from kbn import model as model_lib
from kbn import plots
from kbn.config import TrainConfig
from kbn.callbacks import DivergenceGuard, EpochTensorBoard, EpochTimer, GradientCheck, ValidationMetrics
from kbn.errors import KbnError
from kbn.fileio import atomic_path, read_json, write_json
from kbn.loop import EpochChunks, Loops
from kbn.schedules import learning_rate
from kbn.sgd import SGD


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
    _seed(config.seed)
    tf.config.experimental.enable_op_determinism()

    run_dir = pathlib.Path(config.logdir) / (
        config.run_name or datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    )
    previous = _start_run_dir(run_dir, config.resume)
    if config.save:  # fail now, not after the training, on an unwritable path
        pathlib.Path(config.save).parent.mkdir(parents=True, exist_ok=True)

    x, y = dataset.train.x, dataset.train.y
    steps_per_epoch = -(-len(x) // config.batch_size)
    chunks = EpochChunks(len(x), config.batch_size, config.steps_per_execution, config.seed)
    rate = learning_rate(
        config.schedule,
        eta=config.eta,
        steps_per_epoch=steps_per_epoch,
        decay=config.decay,
        eta_min=config.eta_min,
        step_size=config.step_size,
        epochs=max(config.epochs, 1),
    )
    loops = _compile(model, rate, config)
    # The data as the loops take it: through the model's fixed input stages.
    x_in = loops.inputs(x)
    # fit runs the train_function it finds: kbn's loop over chunks of this data.
    model.train_function = loops.train_function(x_in, y)
    batch = max(config.batch_size, 1000)

    guard = DivergenceGuard(
        config.divergence_factor,
        first_loss=_first(previous, "loss"),
        initial_loss=loops.evaluate(x_in[:1000], y[:1000], batch)["loss"],  # J before training
    )
    timer = EpochTimer()
    run_log = _RunLog(run_dir, config, previous, timer)
    callbacks = [guard]
    x_val = loops.inputs(dataset.val.x) if len(dataset.val) else None
    if x_val is not None:
        callbacks.append(ValidationMetrics(lambda: loops.evaluate(x_val, dataset.val.y, batch)))
    if config.gradcheck_every:
        callbacks.append(GradientCheck(x[:20], y[:20], every=config.gradcheck_every))
    callbacks += [
        timer,
        # The history reaches disk before the backup does: a resume never
        # finds a backup ahead of the history it continues.
        run_log,
        _AtomicBackupAndRestore(run_dir / "backup"),
        # After the backup has restored its epoch: the chunks start there.
        keras.callbacks.LambdaCallback(
            on_train_begin=lambda _: chunks.first_epoch.assign(model._initial_epoch or 0)
        ),
        EpochTensorBoard(run_dir),
    ]

    model._initial_epoch = None  # Keras keeps a restored epoch across fits
    try:
        model.fit(
            chunks.dataset(),
            steps_per_epoch=chunks.per_epoch,
            epochs=config.epochs,
            shuffle=False,  # EpochChunks does it, a new order each epoch
            callbacks=callbacks,
            verbose=config.verbose,
        )
    finally:
        model.train_function = None  # the user's own fit gets Keras's own step again
    history = run_log.history
    model_path = _save_model(model, config.save) if config.save else None
    summary = run_log.summary(
        final=_final_metrics(loops, dataset, batch, {"train": x_in, "val": x_val}),
        diverged=guard.reason,
        model_path=model_path,
    )
    write_json(run_dir / "summary.json", summary)
    if history.get("loss") and config.plot_curves:
        plots.plot_curves(history, run_dir / "curves.png", title=_title(model, config))
    return TrainResult(history, summary, run_dir, model_path, guard.reason)


def _seed(seed):
    """`keras.utils.set_random_seed(seed)`, unless `seed` is already TensorFlow's.

    TensorFlow's `set_seed` also clears the kernel cache of every compiled
    function: the next call of the training loop is instantiated anew, 0.17 s
    for the seed net, which a search's trials (one seed for all) would pay
    every trial. kbn's own randomness never reads the global seed (the
    shuffle is stateless, the layers' seeds are their own), so Python's and
    NumPy's seeds are set every time, TensorFlow's only when it changes.
    """
    if tf_context.global_seed() != seed:
        keras.utils.set_random_seed(seed)
    else:
        random.seed(seed)
        np.random.seed(seed)


def _compile(model, rate, config):
    """Compile `model` for this run, or reuse the training loop it already has.

    Returns the model's compiled `kbn.loop.Loops`: over a chunk of
    mini-batches for training, over a split for evaluation.

    Tracing the loops costs as much as seven epochs of the seed net, so a
    model that kbn compiled before with the same traced structure (schedule
    kind, momentum, label smoothing) keeps its loops: the schedule's numbers
    are assigned into them and the optimizer starts again from step 0 with
    no momentum. A search's trials run back to back this way.
    """
    key = (config.schedule, config.momentum, config.label_smoothing)
    previous = getattr(model, "_kbn_compiled", None)
    optimizer = model.optimizer
    if previous and previous[0] == key and previous[1] is optimizer:
        if isinstance(rate, float):
            optimizer.learning_rate = rate
        else:
            optimizer._learning_rate.assign(rate)
        _reset_optimizer(optimizer)
        return previous[2]
    model_lib.compile_model(
        model,
        SGD(rate, momentum=config.momentum),
        label_smoothing=config.label_smoothing,
    )
    loops = Loops(model)
    # Past Keras's attribute tracking: a note for kbn, not part of the model.
    object.__setattr__(model, "_kbn_compiled", (key, model.optimizer, loops))
    return loops


def _reset_optimizer(optimizer):
    """Step counter and momentum back to 0; the learning rate stays."""
    for variable in optimizer.variables:
        if variable is not getattr(optimizer, "_learning_rate", None):
            variable.assign(keras.ops.zeros_like(variable))


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
    Here the state alternates between two files, each written whole and
    renamed into place; then `training_metadata.json`, also replaced whole,
    names the epoch and the state file that go together. It is the commit
    record: until it is replaced, the files it names are untouched. A record
    or state file that cannot be read is dropped, and the run starts from
    its beginning with the model as it was.

    The state is every model variable and every optimizer variable (step
    count, momentum) in one `.npz`: a resumed run continues exactly where
    the uninterrupted one would be, and writing it takes a few milliseconds
    where Keras's `.weights.h5` took 30 for the seed net.
    """

    def __init__(self, backup_dir):
        super().__init__(str(backup_dir), save_freq="epoch", double_checkpoint=False)
        self.backup_dir = pathlib.Path(backup_dir)

    def _variables(self):
        return {"model": self.model.variables, "optimizer": self.model.optimizer.variables}

    def _save_model(self):
        name = f"epoch-{self._current_epoch % 2}.npz"
        arrays = {
            f"{group}/{i}": keras.ops.convert_to_numpy(variable)
            for group, variables in self._variables().items()
            for i, variable in enumerate(variables)
        }
        with atomic_path(self.backup_dir / name) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        write_json(
            self._training_metadata_path,
            {"epoch": self._current_epoch, "batch": self._last_batch_seen, "state": name},
        )

    def on_train_begin(self, logs=None):
        record = read_json(self._training_metadata_path)
        if not record:
            return
        optimizer = self.model.optimizer
        if not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        before = [keras.ops.convert_to_numpy(v) for v in self.model.variables]
        try:
            with np.load(self.backup_dir / record["state"]) as saved:
                arrays = {key: saved[key] for key in saved.files}
            pairs = [
                (variable, arrays[f"{group}/{i}"])
                for group, variables in self._variables().items()
                for i, variable in enumerate(variables)
            ]
            if len(pairs) != len(arrays) or any(v.shape != a.shape for v, a in pairs):
                raise ValueError("the backup holds another model's state")
            for variable, array in pairs:
                variable.assign(array)
            self.model._initial_epoch = int(record["epoch"])
        except (OSError, ValueError, KeyError, TypeError, EOFError):
            for variable, array in zip(self.model.variables, before):
                variable.assign(array)
            _reset_optimizer(optimizer)
            self.model._initial_epoch = None
            shutil.rmtree(self.backup_dir, ignore_errors=True)


def _final_metrics(loops, dataset, batch_size, inputs):
    """Loss and accuracy of the trained model on every split, in inference mode.

    `inputs` holds the splits already through the loops' `inputs`, by name.
    """
    final = {}
    splits = {"train": dataset.train, "val": dataset.val, "test": dataset.test}
    for name, split in splits.items():
        if split is None or not len(split):
            continue
        x = inputs.get(name)
        x = loops.inputs(split.x) if x is None else x
        metrics = loops.evaluate(x, split.y, batch_size)
        final[f"{name}_loss"] = metrics["loss"]
        final[f"{name}_acc"] = metrics["accuracy"]
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
