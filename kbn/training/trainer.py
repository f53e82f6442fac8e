"""train(): the report's mini-batch SGD with momentum, on Keras's `fit`.

    Dataset + model --train()--> run dir logs/<run name>/
        train/, validation/   TensorBoard events (loss, accuracy, learning rate)
        events at the top     the run's HParams session (settings and status)
        summary.json          config, per-epoch history, final metrics, timing
        curves.png            loss and accuracy per epoch, as the report's figures
        backup/               the last epochs' state while the run is unfinished
        .lock                 held while a process writes the folder
        model.keras           with `save`, or wherever `save` points

`fit` runs the epochs, the callbacks (kbn's and the caller's), the progress
bar and TensorBoard; each call of the model's `train_function` is kbn's
compiled loop over up to `steps_per_execution` mini-batches
(`kbn.training.loop.TrainingLoop`), per replica under the model's `tf.distribute`
strategy, with the validation split evaluated at the last call of each
epoch that `config.validation_freq` names (every epoch by default), so that
the callbacks find `val_*` in those epochs' logs. kbn adds the report's
divergence guard, an optional periodic gradient check, atomic files, one
writer per run folder, and a resume that keeps every epoch exactly once.

Keras's private attributes: none. The train function is installed through
`Model.train_function`, the attribute `make_train_function` fills, and
removed after the run, so the caller's own `fit` gets Keras's step again.
"""

import dataclasses
import datetime
import pathlib
import shutil
import statistics
import time
import weakref
from collections.abc import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from kbn.nn import builder as model_lib
from kbn import plots
from kbn.training.backup import Backup
from kbn.training.callbacks import DivergenceGuard, EpochTensorBoard, GradientCheck
from kbn.training.config import TrainConfig
from kbn.data import Dataset
from kbn.errors import KbnError
from kbn.fileio import atomic_path, read_json, write_json
from kbn.training.hparams import run_hparams, write_hparams
from kbn.training.loop import EpochOrder, TrainingLoop, fit_data
from kbn.nn.precision import model_precision as precision_of
from kbn.nn.precision import resolve as resolve_precision
from kbn.training.runlock import RunLock
from kbn.optim.schedules import learning_rate
from kbn.optim.sgd import SGD

# The TrainConfig fields traced into the compiled loop: the schedule's kind
# (its numbers live in variables), SGD's momentum, the loss's smoothing, the
# optimizer, the calls' length. A model trained again with all of them
# unchanged keeps its loop; any change builds a new one.
TRACED = ("schedule", "momentum", "label_smoothing", "optimizer", "steps_per_execution")


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


def train(
    model: keras.Model,
    dataset: Dataset,
    config: TrainConfig | None = None,
    *,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    hparams: Mapping[str, object] | None = None,
    strategy: tf.distribute.Strategy | None = None,
) -> "TrainResult":
    """Train `model` on `dataset` with mini-batch SGD with momentum.

    The run reads `config.seed` for the order of the examples only: the
    weights are the model's (`build_mlp(seed=...)` makes them repeatable).
    It changes one thing in the process: TensorFlow's op determinism is
    turned on (`tf.config.experimental.enable_op_determinism`), so that the
    same seed gives the same numbers; TensorFlow has no public way to turn
    it off again. Global seeds (Python, NumPy, TensorFlow) are not touched.

    Args:
        model: a Keras model from raw inputs to logits, e.g. `build_mlp`,
            built under the `tf.distribute` strategy it is to train with
            (`with kbn.training.distribute.make_strategy(...).scope():`). It is
            compiled here with softmax cross-entropy on its logits,
            accuracy, and the optimizer: `config.optimizer` when given, else
            the one the model was compiled with unless that is kbn's `SGD`
            (`build_mlp` compiles with one), else `SGD(eta schedule,
            momentum)` with its fused update. Another optimizer keeps its own
            learning rate: eta and the schedule drive kbn's SGD only.
        dataset: a `kbn.Dataset`; its val split drives the validation curves.
        config: a `TrainConfig`; defaults to the report's protocol.
        callbacks: Keras callbacks run by `fit` after kbn's gradient check
            and divergence guard and before kbn's run log and TensorBoard;
            their epoch logs hold the validation metrics (`val_loss`,
            `val_accuracy`), and one that sets `model.stop_training` ends
            the run cleanly after that epoch (`stopped_early` in the summary).
        hparams: extra hparams for the run's HParams session (a search's
            round, trial id, ...), beside those read from the model and config.
        strategy: the model's strategy, when the caller wants it checked.

    Returns:
        a `TrainResult`. Under `MultiWorkerMirroredStrategy` only the chief
        writes the run folder; every other worker writes its backup and
        summary under `run_dir/workers/<task id>/`.
    """
    config = config or TrainConfig()
    config.validate()
    if strategy is not None and strategy is not model.distribute_strategy:
        raise KbnError(
            "the model was built outside the strategy it is to train with; "
            "build it inside `with strategy.scope():`"
        )
    run_dir = pathlib.Path(config.logdir) / (
        config.run_name or datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    )
    worker = _worker_id(model.distribute_strategy)
    if worker is not None:
        run_dir = run_dir / "workers" / str(worker)
    with RunLock(run_dir):
        return _train(model, dataset, config, run_dir, list(callbacks or []), hparams, chief=worker is None)


def _train(model, dataset, config, run_dir, user_callbacks, hparams, chief):
    previous = read_json(run_dir / "summary.json") if config.resume else None
    if previous and previous.get("finished"):  # a scheduler restarted a finished job
        return _result(previous, run_dir)
    history = (previous or {}).get("history") or {}
    _clear_run_dir(run_dir, config.resume)
    if config.save and chief:  # fail now, not after the training, on an unwritable path
        pathlib.Path(config.save).parent.mkdir(parents=True, exist_ok=True)
    tf.config.experimental.enable_op_determinism()

    x, y = dataset.train.x, dataset.train.y
    order = EpochOrder(len(x), config.batch_size, config.seed)
    rate = learning_rate(
        config.schedule,
        eta=config.eta,
        steps_per_epoch=order.steps,
        decay=config.decay,
        eta_min=config.eta_min,
        step_size=config.step_size,
        epochs=max(config.epochs, 1),
    )
    # Calls no longer than an epoch: the progress bar counts what fit was told.
    steps_per_execution = min(config.steps_per_execution, order.steps)
    loop = _compile(model, rate, dataclasses.replace(config, steps_per_execution=steps_per_execution))
    backup = Backup(run_dir / "backup")
    done = backup.restore(model) if config.resume else 0
    done = _agree_on_epoch(model, backup, done)
    history = {key: list(values[:done]) for key, values in history.items()}
    if done and chief:
        _replay_tensorboard(run_dir, history)

    # The data as the loop takes it: through the model's fixed input stages.
    x_in = loop.inputs(x)
    x_val = loop.inputs(dataset.val.x) if len(dataset.val) else None
    batch = max(config.batch_size, 1000)

    def validate(epoch):
        if not config.validates(epoch + 1):
            return None
        return loop.evaluate(x_val, dataset.val.y, batch)

    guard = DivergenceGuard(
        config.divergence_factor,
        first_loss=_first(history, "loss"),
        initial_loss=loop.evaluate(x_in[:1000], y[:1000], batch)["loss"],  # J before training
    )
    # Workers of one run must back up the same epochs (`_agree_on_epoch`); their clocks differ.
    multi_worker = isinstance(model.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy)
    run_log = _RunLog(run_dir, config, history, backup, 0.0 if multi_worker else config.backup_interval)
    callbacks = [GradientCheck(x[:20], y[:20], every=config.gradcheck_every)] if config.gradcheck_every else []
    callbacks += [guard, *user_callbacks, run_log]
    if chief:
        callbacks.append(EpochTensorBoard(run_dir))

    # fit runs kbn's loop as the model's train function, from epoch `done`.
    model.train_function = loop.train_function(
        x_in, y, order, done, steps_per_execution, validate=validate if x_val is not None else None
    )
    try:
        model.fit(
            fit_data(model.distribute_strategy),
            steps_per_epoch=order.steps,
            epochs=config.epochs,
            initial_epoch=done,
            shuffle=False,  # EpochOrder does it, a new order each epoch
            callbacks=callbacks,
            verbose=config.verbose,
        )
    finally:
        model.train_function = None  # the user's own fit gets Keras's own step again
    model_path = _save_model(model, config.save) if config.save and chief else None
    epochs_run = len(run_log.history.get("loss", []))
    summary = run_log.summary(
        final=_final_metrics(loop, dataset, batch, {"train": x_in, "val": x_val}, run_log.final_validation()),
        diverged=guard.reason,
        stopped_early=guard.reason is None and epochs_run < config.epochs,
        model_path=model_path,
    )
    write_json(run_dir / "summary.json", summary)
    backup.remove()
    if chief:
        status = "diverged" if guard.reason else "stopped" if summary["stopped_early"] else "finished"
        write_hparams(run_dir, {**run_hparams(model, config), **(hparams or {})}, status)
        if run_log.history.get("loss") and config.plot_curves:
            plots.plot_curves(run_log.history, run_dir / "curves.png", title=_title(model, config))
    return _result(summary, run_dir)


def _result(summary, run_dir):
    model_path = summary.get("model_path")
    return TrainResult(
        summary.get("history") or {},
        summary,
        pathlib.Path(run_dir),
        pathlib.Path(model_path) if model_path else None,
        summary.get("diverged"),
    )


def _worker_id(strategy):
    """None for the process that writes the run folder (the chief), else its task id.

    Keras's multi-worker convention: the chief (task `chief`, or worker 0
    when the cluster names no chief) writes files; the others only keep
    what they need to resume.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return None
    cluster = resolver.cluster_spec().as_dict()
    if resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster
    ):
        return None
    return f"{resolver.task_type}-{resolver.task_id}"


def _agree_on_epoch(model, backup, done):
    """The epoch every worker can resume from: the oldest of their newest backups.

    Workers write their backups one after the other, so a kill can leave one
    an epoch ahead of another; each keeps its two last states, and the one
    ahead goes back. One process, or workers that agree, change nothing.
    """
    strategy = model.distribute_strategy
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return done
    reported = strategy.run(lambda: tf.constant([done], tf.int64))
    agreed = int(tf.reduce_min(strategy.gather(reported, axis=0)))
    if agreed == done:
        return done
    if agreed in backup.epochs():
        return backup.restore(model, epoch=agreed)
    raise KbnError(
        f"the workers' backups are too far apart to resume (this one: epoch {done}, "
        f"another: epoch {agreed}); start the run over without --resume"
    )


def _compile(model, rate, config):
    """Compile `model` for this run, or reuse the training loop it already has.

    Returns the model's `kbn.training.loop.TrainingLoop`.

    Tracing the loop costs as much as seven epochs of the seed net, so a
    model that kbn compiled before with the same traced settings (`TRACED`)
    keeps its loop: the schedule's numbers are assigned into the schedule the
    loop reads, and kbn's SGD starts again from step 0 with no momentum. A
    search's trials run back to back this way.
    """
    computes, wanted = precision_of(model), resolve_precision(config.precision)[0]
    if computes != wanted and (computes.startswith("mixed") or wanted.startswith("mixed")):
        raise KbnError(
            f"the model computes in {computes} and the config asks for {wanted}: build the model "
            f"with build_mlp(precision={wanted!r}) or set TrainConfig(precision={computes!r})"
        )
    # float16 overflows past 65504 and flushes gradients under 6e-8 to zero:
    # the loss is scaled up before the gradient and the gradients down after
    # it, and a step with a non-finite gradient is skipped (with a smaller
    # scale next time). bfloat16 has float32's range and needs none of it.
    scaled = computes == "mixed_float16"

    def unscaled(optimizer):
        return optimizer.inner_optimizer if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else optimizer

    key = tuple(getattr(config, name) for name in TRACED)
    kept = _LOOPS.get(model)
    if kept and kept.key == key and kept.optimizer is model.optimizer:
        if isinstance(kept.schedule, float):  # constant: the optimizer's own variable
            kept.optimizer.learning_rate = rate
        elif kept.schedule is not None:
            kept.schedule.assign(rate)
        if kept.schedule is not None:
            _reset_optimizer(unscaled(kept.optimizer))  # the loss scale carries on
        return kept.loop
    optimizer, schedule = config.optimizer, None
    if optimizer is None and model.optimizer is not None and not isinstance(unscaled(model.optimizer), SGD):
        optimizer = model.optimizer  # the caller's own, as compiled
    if optimizer is None:
        with model.distribute_strategy.scope():
            optimizer = SGD(rate, momentum=config.momentum)
        schedule = rate
    if scaled and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        with model.distribute_strategy.scope():
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    with model.distribute_strategy.scope():
        model_lib.compile_model(
            model,
            optimizer,
            steps_per_execution=config.steps_per_execution,
            label_smoothing=config.label_smoothing,
        )
    loop = TrainingLoop(model)
    _LOOPS[model] = _Kept(key, model.optimizer, schedule, loop)
    return loop


@dataclasses.dataclass
class _Kept:
    """What a model's compiled loop depends on, beside the loop itself.

    `schedule` is the learning rate kbn's SGD reads (a float for the
    constant schedule, or a schedule whose numbers live in variables), None
    for the caller's own optimizer.
    """

    key: tuple
    optimizer: object
    schedule: object
    loop: TrainingLoop


_LOOPS = weakref.WeakKeyDictionary()  # model -> _Kept; a model's loop dies with it


def compiled_loop(model):
    """The `kbn.training.loop.TrainingLoop` kbn keeps for `model`, or None before its first run."""
    kept = _LOOPS.get(model)
    return kept.loop if kept else None


def _reset_optimizer(optimizer):
    """kbn's SGD back to step 0 and no momentum; its learning rate stays."""
    for variable in optimizer.variables:
        if "learning_rate" not in variable.path:
            variable.assign(keras.ops.zeros_like(variable))


def _clear_run_dir(run_dir, resume):
    """Prepare the run folder for a new process.

    A run started afresh under an existing name drops the old run's backup
    and curves, so they cannot mix with the new ones. A resumed run replays
    its recorded history into fresh TensorBoard files: the curves then hold
    every epoch exactly once, whatever moment the previous process died at.
    """
    for stale in ("train", "validation") if resume else ("backup", "train", "validation"):
        shutil.rmtree(run_dir / stale, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)


def _first(history, key):
    values = history.get(key) or []
    return values[0] if values else None


class _RunLog(keras.callbacks.Callback):
    """The run's history, and its record on disk: summary.json, then the backup, when due.

    One callback writes both, in this order, so a resume never finds a
    backup ahead of the history it continues (a history ahead of the backup
    is cut back to it). They are due at every epoch end, or with a
    `backup_interval`, at the end of the first epoch that long after the
    last record; the run's end writes summary.json in any case.

    Args:
        run_dir: the run's folder.
        config: the run's `TrainConfig`.
        history: the epochs before this process's first, by key.
        backup: the run's `kbn.training.backup.Backup`.
        backup_interval: seconds between records (0: every epoch).
    """

    def __init__(self, run_dir, config, history, backup, backup_interval=0.0):
        super().__init__()
        self.run_dir = run_dir
        self.config = config
        self.history = history
        self.backup = backup
        self.backup_interval = backup_interval
        self._rate = None
        self._start = None
        self._last_backup = time.perf_counter()
        self._last_validation = None  # (figures, the weights they were computed with)

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        logs["learning_rate"] = self._rate  # the rate this epoch ran at
        now = time.perf_counter()
        logs["seconds"] = now - self._start  # training and validation
        # One entry per epoch in every list, None where an epoch has no value
        # (a gradient check every N epochs), so lists stay indexed by epoch.
        done = len(self.history.get("loss", []))
        for key in {*self.history, *logs}:
            values = self.history.setdefault(key, [None] * done)
            values.append(float(logs[key]) if key in logs else None)
        if now - self._last_backup >= self.backup_interval:
            write_json(self.run_dir / "summary.json", self.summary())
            self.backup.save(self.model, epoch + 1)
            self._last_backup = now
        if "val_loss" in logs and (epoch + 1 == self.config.epochs or self.model.stop_training):
            figures = {"loss": logs["val_loss"], "accuracy": logs["val_accuracy"]}
            self._last_validation = (figures, [v.numpy() for v in self.model.variables])

    def final_validation(self):
        """The last epoch's validation figures, or None when the weights changed since.

        They are the run's final validation metrics, not computed a second
        time, unless a callback changed the weights after the epoch (Keras's
        `EarlyStopping(restore_best_weights=True)` does).
        """
        if self._last_validation is None:
            return None
        figures, weights = self._last_validation
        now = [v.numpy() for v in self.model.variables]
        return figures if all(np.array_equal(a, b) for a, b in zip(weights, now)) else None

    def summary(self, final=None, diverged=None, stopped_early=False, model_path=None):
        seconds = self.history.get("seconds", [])
        return {
            "config": _config_record(self.config),
            "run_dir": str(self.run_dir),
            "epochs_run": len(self.history.get("loss", [])),
            "seconds_per_epoch": statistics.median(seconds[1:] or seconds) if seconds else None,
            "finished": final is not None,
            "diverged": diverged,
            "stopped_early": stopped_early,
            "final": final,
            "model_path": str(model_path) if model_path else None,
            "history": self.history,
        }


def _config_record(config):
    """The config as JSON: the optimizer, when given, by its class name.

    `asdict` deep-copies every value, and a deep copy of a Keras optimizer
    goes through its saving code (slow, and it warns): the optimizer is
    left out of the copy.
    """
    record = dataclasses.asdict(dataclasses.replace(config, optimizer=None))
    if config.optimizer is not None:
        record["optimizer"] = type(config.optimizer).__name__
    return record


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


def _final_metrics(loops, dataset, batch_size, inputs, val=None):
    """Loss and accuracy of the trained model on every split, in inference mode.

    `inputs` holds the splits already through the loops' `inputs`, by name;
    `val`, the validation figures of the model as it is, when the last
    epoch computed them.
    """
    final = {}
    splits = {"train": dataset.train, "val": dataset.val, "test": dataset.test}
    for name, split in splits.items():
        if split is None or not len(split):
            continue
        x = inputs.get(name)
        if name == "val" and val is not None:
            metrics = val
        else:
            metrics = loops.evaluate(loops.inputs(split.x) if x is None else x, split.y, batch_size)
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
