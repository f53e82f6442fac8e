"""RunLog: a run's record on disk, summary.json, from its first epoch to its final metrics.

    run_dir/summary.json
        config            the run's TrainConfig
        started           when the run's first epoch began (ISO 8601, local time)
        data, network     what it trained on and what it trained (`Dataset.describe()`,
                          `kbn.nn.builder.describe(model)`)
        history           one list per key (loss, accuracy, val_loss, val_accuracy,
                          learning_rate, seconds, ...), one entry per epoch
        epochs_run, seconds_per_epoch, diverged, stopped_early, model_path
        finished, final   at the end: loss and accuracy of every split

The file is replaced whole each time: at the epochs the run's `Cadence`
names, and once more when training ends. A finished summary is the run's
commit record: a run restarted with `--resume` after it trains nothing. A run
resumes only with the settings, data and network its summary records
(`RunLog.resume_changes`), so that it is the uninterrupted run.
"""

import dataclasses
import json
import statistics

import keras
import numpy as np
import tensorflow as tf

from kbn.fileio import read_json, write_json

SUMMARY = "summary.json"


class RunLog(keras.callbacks.Callback):
    """The run's history and summary.json; the final metrics when training ends.

    Each epoch's logs join the history (one entry per epoch in every list,
    None where an epoch has no value: a gradient check every N epochs, a
    validation every N epochs), with the epoch's `seconds` from the timer.
    When training ends it measures loss and accuracy on every split in
    inference mode and writes the finished summary. The last epoch's
    validation metrics are the run's final ones, not measured a second
    time, unless a callback changed the weights after that epoch (Keras's
    `EarlyStopping(restore_best_weights=True)` does).

    Args:
        run_dir: the run's folder.
        config: the run's `TrainConfig`.
        cadence: the run's `Cadence`: summary.json is written at the epochs
            it names.
        timer: the run's `EpochTimer`.
        guard: the run's `DivergenceGuard`: its `reason` says whether it
            stopped the run.
        loop: the model's `kbn.training.loop.TrainingLoop`, which measures
            the final metrics.
        splits: {"train" | "val" | "test": (x (N, ...), y (N,))}: a tensor x
            is taken as the loop's input, an array goes through the loop's
            fixed stages first; empty or None splits are skipped.
        batch_size: examples per evaluation batch.
        history: the epochs run before this process (a resumed run), by key.
        model_path: where the model is saved when training ends, or None.
        about: {"started", "data", "network"}: what the run records beside its
            config, written as given.
    """

    def __init__(
        self,
        run_dir,
        config,
        cadence,
        timer,
        guard,
        loop,
        splits,
        batch_size,
        history=None,
        model_path=None,
        about=None,
    ):
        super().__init__()
        self.run_dir = run_dir
        self.config = config
        self.cadence = cadence
        self.timer = timer
        self.guard = guard
        self.loop = loop
        self.splits = splits
        self.batch_size = batch_size
        self.history = {key: list(values) for key, values in (history or {}).items()}
        self.model_path = model_path
        self.about = dict(about or {})
        self.summary = self._summary()
        self._last_validation = None  # (metrics, the weights they were measured with)

    @staticmethod
    def previous(run_dir, epochs):
        """The history of a run's summary.json cut to its first `epochs` epochs, and whether it
        finished.

        Returns:
            (history by key, the summary or None, finished).
        """
        summary = read_json(run_dir / SUMMARY)
        history = (summary or {}).get("history") or {}
        cut = {key: list(values[:epochs]) for key, values in history.items()}
        return cut, summary, bool(summary and summary.get("finished"))

    @staticmethod
    def resume_changes(previous, config, about):
        """What resuming a run with `config`, on `about`'s data and network, would change.

        Args:
            previous: the run's summary.json (`RunLog.previous`).
            config: the `TrainConfig` to resume it with.
            about: {"data": `Dataset.describe()`, "network": `describe(model)`}.

        Returns:
            ["eta 0.0864 -> 0.01", "data val 500 -> 400", ...], one entry per value the
            summary records that would change (`HOW_RUN`'s settings aside); empty when none.
        """
        before = {k: v for k, v in (previous.get("config") or {}).items() if k not in HOW_RUN}
        before.update({part: previous[part] for part in ("data", "network") if part in previous})
        return record_changes(before, {**config_record(config), **about})

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if self.timer.seconds:
            logs["seconds"] = self.timer.seconds[-1]
        done = len(self.history.get("loss", []))
        for key in {*self.history, *logs}:
            values = self.history.setdefault(key, [None] * done)
            values.append(float(logs[key]) if key in logs else None)
        if self.cadence.due(epoch + 1):
            self._write()
        if "val_loss" in logs and (epoch + 1 == self.config.epochs or self.model.stop_training):
            metrics = {
                name.removeprefix("val_"): value
                for name, value in logs.items()
                if name.startswith("val_")
            }
            self._last_validation = (metrics, [v.numpy() for v in self.model.variables])

    def on_train_end(self, logs=None):
        self._write(final=self._final_metrics())

    def _final_validation(self):
        if self._last_validation is None:
            return None
        metrics, weights = self._last_validation
        now = [v.numpy() for v in self.model.variables]
        return metrics if all(np.array_equal(a, b) for a, b in zip(weights, now)) else None

    def _final_metrics(self):
        """Loss and accuracy of the trained model on every split, in inference mode."""
        final = {}
        for name, split in self.splits.items():
            if split is None or not len(split[1]):
                continue
            metrics = self._final_validation() if name == "val" else None
            if metrics is None:
                x, y = split
                x = x if tf.is_tensor(x) else self.loop.inputs(x)
                metrics = self.loop.evaluate(x, y, self.batch_size)
            final[f"{name}_loss"] = metrics["loss"]
            final[f"{name}_acc"] = metrics["accuracy"]
        return final

    def _write(self, final=None):
        self.summary = self._summary(final)
        write_json(self.run_dir / SUMMARY, self.summary)

    def _summary(self, final=None):
        seconds = [s for s in self.history.get("seconds", []) if s is not None]
        epochs_run = len(self.history.get("loss", []))
        diverged = self.guard.reason if self.guard is not None else None
        return {
            "config": config_record(self.config),
            "run_dir": str(self.run_dir),
            **self.about,
            "epochs_run": epochs_run,
            "seconds_per_epoch": statistics.median(seconds[1:] or seconds) if seconds else None,
            "finished": final is not None,
            "diverged": diverged,
            "stopped_early": final is not None
            and diverged is None
            and epochs_run < self.config.epochs,
            "final": final,
            "model_path": str(self.model_path) if self.model_path and final is not None else None,
            "history": self.history,
        }


def config_record(config):
    """The config as JSON: the optimizer, when given, by its class name.

    `asdict` deep-copies every value, and a deep copy of a Keras optimizer
    goes through its saving code (slow, and it warns): the optimizer is
    left out of the copy.
    """
    record = dataclasses.asdict(dataclasses.replace(config, optimizer=None))
    if config.optimizer is not None:
        record["optimizer"] = type(config.optimizer).__name__
    return record


# TrainConfig fields that say how a run is run and kept, not what it computes: a
# resumed run may take other values of them.
HOW_RUN = frozenset(
    {
        "logdir",
        "run_name",
        "resume",
        "verbose",
        "save",
        "plot_curves",
        "model_card",
        "backup_interval",
        "steps_per_execution",
        "gradcheck_every",
    }
)


def record_changes(before, after):
    """What `after` changes of the JSON record `before`: ["eta 0.0864 -> 0.01", ...].

    A dict inside is compared key by key, each key named after it ("data val 500 ->
    400"). A key `before` lacks is not compared: an older record may hold fewer.

    Args:
        before: a dict as read from a JSON file.
        after: a dict of JSON-serializable values (tuples compare as the lists a JSON
            file holds).
    """
    after = json.loads(json.dumps(after))
    changes = []
    for key, value in before.items():
        new = after.get(key)
        if isinstance(value, dict) and isinstance(new, dict):
            changes += [f"{key} {change}" for change in record_changes(value, new)]
        elif new != value:
            changes.append(f"{key} {value} -> {new}")
    return changes
