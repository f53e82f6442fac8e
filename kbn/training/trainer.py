"""train(): the report's mini-batch SGD with momentum, on Keras's `fit`.

    Dataset + model --train()--> run dir logs/<run name>/
        train/, validation/   TensorBoard curves (loss, accuracy, learning rate)
        events at the top     the run's HParams session (settings and status)
        summary.json          config, per-epoch history, final metrics, timing
        curves.png            loss and accuracy per epoch, as the report's figures
        backup/               the last recorded epochs' state while the run is unfinished
        .lock                 held while a process writes the folder
        model.keras           with `save`, wherever `save` points, with the run's record
        model.card.md         beside it, its model card and confusion matrix (`model_card`)

`train` is the one function that puts a run together, top to bottom: it
compiles the model (`LoopCache`), restores a backup when resuming, installs
kbn's compiled loop as the model's `train_function` (`kbn.training.loop`),
and runs `fit` with one callback per job (`kbn.training.callbacks`): the
learning rate, the timer, the gradient check, the divergence guard, the
caller's callbacks, the model file, the run log, the backup, TensorBoard.
After `fit` it writes the run's HParams session and its curves.

Keras's private attributes: none. The train function is installed through
`Model.train_function`, the attribute `make_train_function` fills, and
removed after the run, so the caller's own `fit` gets Keras's step again.
"""

import dataclasses
import datetime
import pathlib
from collections.abc import Mapping, Sequence

import keras
import tensorflow as tf

from kbn import plots
from kbn.data import Dataset
from kbn.errors import KbnError
from kbn.inference.card import write_card
from kbn.inference.record import environment, store_record
from kbn.nn.builder import describe
from kbn.optim.schedules import learning_rate
from kbn.training.callbacks import (
    BackupAndResume,
    Cadence,
    DivergenceGuard,
    EpochTensorBoard,
    EpochTimer,
    GradientCheck,
    LearningRateLogger,
    ProgressBar,
    RunLog,
    SaveModel,
)
from kbn.training.config import TrainConfig
from kbn.training.distribute import is_multi_worker, lost_workers_named, worker_id
from kbn.training.hparams import run_hparams, write_hparams
from kbn.training.loop import Validation, fit_data
from kbn.training.loop_cache import LoopCache
from kbn.training.order import EpochOrder
from kbn.training.runlock import RunLock

# Examples per evaluation batch, at least: evaluation keeps no activations
# for a backward pass, so bigger batches cost no memory worth counting.
EVALUATION_BATCH = 1000


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

    def as_json(self) -> dict:
        """The run's outcome as `kbn train --json` prints it: a dict of plain values.

        Returns:
            `train_acc`, `val_acc`, `test_acc`, `train_loss`, `val_loss` (those
            the run measured), `epochs_run`, `seconds_per_epoch`, `diverged`,
            `run_dir` and `model_path`.
        """
        final = self.summary.get("final") or {}
        return {
            **{
                k: final[k]
                for k in ("train_acc", "val_acc", "test_acc", "train_loss", "val_loss")
                if k in final
            },
            "epochs_run": self.summary["epochs_run"],
            "seconds_per_epoch": self.summary["seconds_per_epoch"],
            "diverged": self.diverged,
            "run_dir": str(self.run_dir),
            "model_path": str(self.model_path) if self.model_path else None,
        }


def train(
    model: keras.Model,
    dataset: Dataset,
    config: TrainConfig | None = None,
    *,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    hparams: Mapping[str, object] | None = None,
    strategy: tf.distribute.Strategy | None = None,
    loops: LoopCache | None = None,
) -> TrainResult:
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
            (`with kbn.make_strategy(...).scope():`). It is compiled here
            with softmax cross-entropy on its logits, accuracy, and the
            optimizer: `config.optimizer` when given, else the one the model
            was compiled with unless that is kbn's `SGD` (`build_mlp`
            compiles with one), else `SGD(eta schedule, momentum)` with its
            fused update. Another optimizer keeps its own learning rate: eta
            and the schedule drive kbn's SGD only.
        dataset: a `kbn.Dataset`; its val split drives the validation curves.
        config: a `TrainConfig`; defaults to the report's protocol.
        callbacks: Keras callbacks run by `fit` after kbn's gradient check
            and divergence guard and before kbn's model file, run log and
            TensorBoard; their epoch logs hold the validation metrics
            (`val_loss`, `val_accuracy`) and the `learning_rate`, and one
            that sets `model.stop_training` ends the run cleanly after that
            epoch (`stopped_early` in the summary).
        hparams: extra hparams for the run's HParams session (a search's
            round, trial id, ...), beside those read from the model and config;
            TensorBoard's HParams table shows them first, with eta and lambda.
        strategy: the model's strategy, when the caller wants it checked.
        loops: a `kbn.training.LoopCache` that keeps the model's compiled
            loop for the next `train` of the same model (a search's trials);
            None traces the loop for this run only.

    Returns:
        a `TrainResult`. Under `MultiWorkerMirroredStrategy` only the chief
        writes the run folder; every other worker writes its backup and
        summary under `run_dir/workers/<task id>/`.

    Raises:
        KbnError: a setting the run cannot take, a run folder in use.
        kbn.errors.WorkerLost: under `MultiWorkerMirroredStrategy`, when
            another worker stops or cannot be reached: the run cannot go on,
            and every worker must be started again with `resume=True`.
    """
    config = config or TrainConfig()
    config.check()
    if strategy is not None and strategy is not model.distribute_strategy:
        raise KbnError(
            "the model was built outside the strategy it is to train with; "
            "build it inside `with strategy.scope():`"
        )
    run_dir = pathlib.Path(config.logdir) / (
        config.run_name or datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    )
    worker = worker_id(model.distribute_strategy)
    if worker is not None:
        run_dir = run_dir / "workers" / str(worker)
    with RunLock(run_dir), lost_workers_named(model.distribute_strategy):
        return _train(
            model, dataset, config, run_dir, list(callbacks or []), hparams, worker is None, loops
        )


def _train(model, dataset, config, run_dir, user_callbacks, hparams, chief, loops):
    about = {"data": dataset.describe(), "network": describe(model)}
    if config.resume:
        _, previous, finished = RunLog.previous(run_dir, 0)
        changes = RunLog.resume_changes(previous, config, about) if previous else []
        if changes:
            raise KbnError(
                f"run {run_dir} resumes only with the settings, data and network it started "
                f"with, and this one changes {', '.join(changes)}: give the run's own, or "
                "train a new run (another run name)"
            )
        if finished:  # a scheduler restarted a finished job: its result, nothing trained
            return _result(previous, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if config.save and chief:  # fail now, not after the training, on an unwritable path
        pathlib.Path(config.save).parent.mkdir(parents=True, exist_ok=True)
    tf.config.experimental.enable_op_determinism()

    # The model, compiled for this run, and its loop.
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
    loop = (loops or LoopCache()).compile(
        model, rate, dataclasses.replace(config, steps_per_execution=steps_per_execution)
    )

    # Where the run starts: epoch 0, or the backup's epoch with the history before it.
    # Workers of one run must record the same epochs; their clocks differ.
    cadence = Cadence(0.0 if is_multi_worker(model.distribute_strategy) else config.backup_interval)
    backup = BackupAndResume(run_dir / "backup", cadence, resume=config.resume)
    done = backup.restore(model)
    history, previous, _ = RunLog.previous(run_dir, done) if done else ({}, None, False)
    about = {
        "started": (previous or {}).get("started")
        or datetime.datetime.now().isoformat(timespec="seconds"),
        **about,
    }

    # The data as the loop takes it: through the model's fixed input stages, once.
    x_in = loop.inputs(x)
    x_val = loop.inputs(dataset.val.x) if len(dataset.val) else None
    batch = max(config.batch_size, EVALUATION_BATCH)
    validation = (
        None
        if x_val is None
        else Validation(x_val, dataset.val.y, config.validation_epochs(), batch)
    )
    test = dataset.test

    # One callback per job, in the order their epoch ends must run.
    timer = EpochTimer()
    guard = DivergenceGuard(
        config.divergence_factor,
        first_loss=(history.get("loss") or [None])[0],
        initial_loss=loop.evaluate(x_in[:EVALUATION_BATCH], y[:EVALUATION_BATCH], batch)["loss"],
    )
    save = config.save if config.save and chief else None
    run_log = RunLog(
        run_dir,
        config,
        cadence,
        timer,
        guard,
        loop,
        splits={
            "train": (x_in, y),
            "val": None if x_val is None else (x_val, dataset.val.y),
            "test": None if test is None else (test.x, test.y),
        },
        batch_size=batch,
        history=history,
        model_path=save,
        about=about,
    )
    callbacks = [LearningRateLogger(), timer]
    if config.gradcheck_every:
        callbacks.append(GradientCheck(x[:20], y[:20], every=config.gradcheck_every))
    callbacks += [guard, *user_callbacks]
    callbacks += [SaveModel(save)] if save else []
    callbacks += [run_log, backup]  # summary.json before the backup of the same epoch
    callbacks += [EpochTensorBoard(run_dir, history=history)] if chief else []
    if not any(isinstance(c, keras.callbacks.ProgbarLogger) for c in user_callbacks):
        callbacks.append(ProgressBar())  # where fit would add its own, last

    # fit runs kbn's loop as the model's train function, from epoch `done`.
    model.train_function = loop.train_function(
        x_in, y, order, done, steps_per_execution, validation
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

    summary = run_log.summary
    if chief:
        status = (
            "diverged"
            if summary["diverged"]
            else "stopped"
            if summary["stopped_early"]
            else "finished"
        )
        extra = dict(hparams or {})
        write_hparams(run_dir, {**run_hparams(model, config), **extra}, status, compared=extra)
        if run_log.history.get("loss") and config.plot_curves:
            plots.plot_curves(run_log.history, run_dir / "curves.png", title=_title(model, config))
        if save:
            _record_and_card(save, dataset, summary, run_dir, config.model_card)
    return _result(summary, run_dir)


def _record_and_card(save, dataset, summary, run_dir, card):
    """The run's record into the saved model file, then, if `card`, the model's card beside it.

    The card measures the file as saved, loaded outside the run's strategy: under
    several workers the chief alone evaluates, and a collective would wait for the rest.
    """
    seconds = [s for s in summary["history"].get("seconds", []) if s is not None]
    record = {
        "settings": summary["config"],
        "data": dataset.describe(),
        "run_dir": str(run_dir),
        "started": summary.get("started"),
        "epochs_run": summary["epochs_run"],
        "seconds": sum(seconds) if seconds else None,
        "seconds_per_epoch": summary["seconds_per_epoch"],
        "diverged": summary["diverged"],
        "stopped_early": summary["stopped_early"],
        **environment(),
    }
    store_record(save, record)
    if card:
        write_card(save, dataset, training=record)


def _result(summary, run_dir):
    model_path = summary.get("model_path")
    return TrainResult(
        summary.get("history") or {},
        summary,
        pathlib.Path(run_dir),
        pathlib.Path(model_path) if model_path else None,
        summary.get("diverged"),
    )


def _title(model, config):
    batch_norms = sum(1 for layer in model.layers if "batch_norm" in layer.name)
    k = sum(1 for layer in model.layers if layer.__class__.__name__ == "Dense")
    bn = "with" if batch_norms else "without"
    lam = next((layer.lam for layer in model.layers if hasattr(layer, "lam")), 0.0)
    return f"{k}-layer network {bn} batch normalization, eta={config.eta:g}, lambda={lam:g}"
