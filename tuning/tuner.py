"""KbnTuner: a KerasTuner `Tuner` whose trials are kbn training runs.

    trial --KbnTuner.run_trial--> kbn.train(model, dataset, config, callbacks=[ReportEpochs])
        runs/trial_<id>/     the trial's kbn run: TensorBoard curves and HParams
                             session, summary.json, model.keras, backup while unfinished
        ReportEpochs         after each validated epoch (the pruning rule's rungs and the
                             last): oracle.update_trial(val_accuracy, step=epochs);
                             an answer STOPPED ends the run after that epoch

The oracle decides (see `tuning.oracle` and `tuning.pruning`); the tuner
only reports and obeys, so the same trial stops alike in one process and
on a worker, whose oracle is KerasTuner's gRPC client of the chief's.
"""

import dataclasses
import pathlib
import resource
from collections.abc import Iterable
from typing import Any

import keras
import keras_tuner
import numpy as np
from keras_tuner.engine.trial import Trial, TrialStatus

from kbn import _compat
from kbn._quiet import tensorflow_warnings_off
from kbn.data import Dataset
from kbn.fileio import read_json, write_json
from kbn.inference.evaluate import load_model
from kbn.nn import Dense
from kbn.training import LoopCache, TrainConfig, train
from tuning.finalists import FINALIST_KEYS

OBJECTIVE = keras_tuner.Objective("val_accuracy", direction="max")

# The values of a trial that its model does not depend on: trials differing only in these
# share one model (`KbnTuner._model_for`).
NOT_ARCHITECTURE = ("eta", "lam", *FINALIST_KEYS)

RECYCLE_EXIT = 75  # a worker that ends this way asks to be started afresh


class ReportEpochs(keras.callbacks.Callback):
    """Reports the validation accuracy after each validated epoch; stops the run when the oracle
    says so.

    Args:
        oracle: the search's oracle, or a worker's client of it.
        trial_id: the trial being trained.
        reported: the epochs the oracle already holds (a resumed trial does
            not report them twice).
    """

    def __init__(
        self, oracle: keras_tuner.Oracle, trial_id: str, reported: Iterable[int] = ()
    ) -> None:
        super().__init__()
        self.oracle = oracle
        self.trial_id = trial_id
        self.reported = set(reported)

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        step = epoch + 1  # epochs run, as the pruning rules count them
        if "val_accuracy" not in logs or step in self.reported:
            return
        answer = self.oracle.update_trial(
            self.trial_id, {"val_accuracy": float(logs["val_accuracy"])}, step=step
        )
        self.reported.add(step)
        if answer.status == TrialStatus.STOPPED:
            self.model.stop_training = True


def read_only(dataset: Dataset) -> Dataset:
    """`dataset` with read-only views of its inputs (N, ...): the same pixels, not copied.

    kbn's compiled loop keeps a read-only split's pass through the model's
    fixed stages (flatten, scale, centre) from one run to the next
    (`kbn.training.loop.TrainingLoop.inputs`): the trials of a search that share a
    model skip it after the first.
    """

    def frozen(split):
        if split is None:
            return None
        x = split.x.view()
        x.flags.writeable = False
        return dataclasses.replace(split, x=x)

    return dataclasses.replace(
        dataset, train=frozen(dataset.train), val=frozen(dataset.val), test=frozen(dataset.test)
    )


class KbnTuner(keras_tuner.Tuner):
    """A KerasTuner `Tuner` whose trials are kbn training runs.

    Each trial is `kbn.train` in `runs/trial_<id>` under the project folder,
    with the trial's eta and the base `TrainConfig` (schedule, epochs,
    divergence guard), reporting each validated epoch to the oracle
    (`ReportEpochs`). A trial that was interrupted resumes from its last
    backup; one that finished before the kill is not run again.

    Args:
        dataset: the `kbn.Dataset` every trial trains on.
        train_config: the base `TrainConfig`; eta, run_name, logdir, save
            and resume are set per trial.
        trials_before_exit: a worker process exits after this many trials
            (the chief starts a fresh one); None: never.
        **kwargs: `keras_tuner.Tuner` arguments (oracle, hypermodel,
            directory, project_name, overwrite).
    """

    def __init__(
        self,
        dataset: Dataset,
        train_config: TrainConfig,
        trials_before_exit: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.dataset = read_only(dataset)
        self.train_config = train_config
        self.trials_before_exit = trials_before_exit
        self._trials_run = 0
        # (architecture values, model, its initial weights)
        self._warm: tuple[dict[str, Any], keras.Model, list[np.ndarray]] | None = None
        self._loops = LoopCache()  # the shared model's compiled loop, kept across trials

    def on_trial_end(self, trial: Trial) -> None:
        super().on_trial_end(trial)  # the trial is recorded by the oracle first
        self._trials_run += 1
        if self.trials_before_exit and self._trials_run >= self.trials_before_exit:
            raise SystemExit(RECYCLE_EXIT)  # the chief starts a fresh worker

    def run_dir(self, trial_id: str) -> pathlib.Path:
        return pathlib.Path(self.project_dir) / "runs" / f"trial_{trial_id}"

    def run_trial(self, trial: Trial, *args, **kwargs) -> dict[str, float]:
        run_dir = self.run_dir(trial.trial_id)
        summary = read_json(run_dir / "summary.json")
        if summary and summary.get("finished"):
            # Killed after the run, before the oracle's record: report its end again.
            if not summary["diverged"]:
                self.oracle.update_trial(
                    trial.trial_id,
                    {"val_accuracy": summary["final"]["val_acc"]},
                    step=summary["epochs_run"],
                )
        else:
            summary = self._train(trial, run_dir)
        if summary["diverged"]:
            raise keras_tuner.errors.FailedTrialError(summary["diverged"])
        return {"val_accuracy": summary["final"]["val_acc"]}

    def _train(self, trial, run_dir):
        """Train (or resume) the trial's model in run_dir; return its summary."""
        hp = trial.hyperparameters
        model = self._model_for(hp)
        config = dataclasses.replace(
            self.train_config,
            eta=hp.get("eta"),
            # A finalist's new seed: new initial weights (`_model_for`) and a new order.
            seed=hp.values.get("seed", self.train_config.seed),
            logdir=str(run_dir.parent),
            run_name=run_dir.name,
            save=str(run_dir / "model.keras"),
            resume=run_dir.exists(),
            verbose=0,
            # TensorBoard and search.png show the trials; a PNG each would slow every trial.
            plot_curves=False,
            # The trial's record still goes into its model.keras: `kbn evaluate --card` reads it.
            model_card=False,
        )
        reported = []
        if trial.metrics.exists(OBJECTIVE.name):
            reported = [o.step for o in trial.metrics.get_history(OBJECTIVE.name)]
        report = ReportEpochs(self.oracle, trial.trial_id, reported)
        # The searched values and the round (the oracle's), beside kbn's own HParams.
        extras = {"trial_id": trial.trial_id, **hp.values}
        with tensorflow_warnings_off():  # a new model, new graphs, every trial
            result = train(
                model, self.dataset, config, callbacks=[report], hparams=extras, loops=self._loops
            )
        # Who ran it, and the process's peak memory so far: flat across
        # trials, or KerasTuner's known growth (its issues 395, 873, 1031).
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        write_json(
            run_dir / "process.json", {"worker": self.tuner_id, "peak_rss_mb": peak_kib / 1024}
        )
        return result.summary

    def _model_for(self, hp):
        """The trial's model, at its initial weights.

        Trials that differ only in eta and lambda share one model: it goes back
        to the weights it was built with, its kernels take the trial's lambda,
        and `kbn.train` reuses its compiled training step. Tracing a new model
        costs more than its ten epochs, and every model built stays in
        TensorFlow's memory.
        """
        architecture = {k: v for k, v in hp.values.items() if k not in NOT_ARCHITECTURE}
        if self._warm and self._warm[0] == architecture:
            _, model, initial = self._warm
            if "seed" in hp.values:  # a finalist: the weights its seed draws, on the same model
                initial = self.hypermodel.build(hp, seed=hp.values["seed"]).get_weights()
            model.set_weights(initial)
            for layer in model.layers:
                if isinstance(layer, Dense):
                    layer.lam = hp.get("lam")
            return model
        keras.backend.clear_session()  # Keras's global state; flat memory needs workers
        model = self.hypermodel.build(hp)
        self._warm = (architecture, model, model.get_weights())
        if "seed" in hp.values:
            model.set_weights(self.hypermodel.build(hp, seed=hp.values["seed"]).get_weights())
        return model

    def save(self) -> None:
        """KerasTuner's save, with files replaced whole (see the oracle's `save`)."""
        if not _compat.tuner_is_worker(self):
            self.oracle.save()
        write_json(_compat.tuner_state_file(self), self.get_state())

    def save_model(self, trial_id: str, model: keras.Model, step: int = 0) -> None:
        """kbn's training already saved the trial's model in its run dir."""

    def load_model(self, trial: Trial) -> keras.Model:
        return load_model(self.run_dir(trial.trial_id) / "model.keras")
