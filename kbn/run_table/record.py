"""One run's row: what its folder says about it, read back for a person.

A training run's folder (`kbn train`, `kbn.train`) and a search trial's
(`PROJECT/runs/trial_<id>/`) are the same kind of folder: summary.json, the
TensorBoard events, `.lock`. `read_run` turns one into a `Run`, and never
raises on what it finds there: a summary.json that is not JSON makes an
`unreadable` row that says so.

The status, from the first rule that holds:

    unreadable  summary.json (or the trial's trial.json) is there but is not a JSON object
    running     a live process holds the folder's `.lock` (`kbn.training.runlock`)
    killed      unfinished, and nobody holds it: `--resume` carries it on
    diverged    the divergence guard stopped it (a search records it as FAILED)
    failed      the search recorded the trial as FAILED for another reason
    stopped     finished before its last epoch: early stopping, or the search's pruning
    finished    every epoch run
"""

import dataclasses
import datetime
import pathlib

from kbn.fileio import read_json
from kbn.training.callbacks.run_log import SUMMARY
from kbn.training.runlock import is_held

STATUSES = ("running", "killed", "diverged", "failed", "stopped", "finished", "unreadable")


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run or search trial, as its folder records it.

    Accuracies are fractions (0.9233, not 92.33); a field the folder does not
    record (a run killed before its first epoch, a run written by kbn 0.1,
    which kept no data or network in summary.json) is None.

    Args:
        name: the run's name: its folder's name (`trial_<id>` for a trial).
        project: the search project's folder name, for a trial; None for a run.
        trial: the trial's id, for a trial.
        status: one of `STATUSES`.
        started: when its first epoch began, ISO 8601 local time.
        data: the data SPEC it trained on.
        network: hidden widths and batch norm, e.g. "50-30 BN" ("10 BN" with one
            hidden layer, "-" with none).
        eta: the initial learning rate.
        lam: the L2 factor, lambda.
        epochs: epochs run.
        planned_epochs: epochs the run was set to train.
        train_acc, val_acc, test_acc: the final accuracies; while unfinished, the last
            epoch's training and validation accuracy.
        seconds: seconds of training, all epochs together.
        path: the run folder.
        note: why a row is unreadable, or what stopped a diverged run.
    """

    name: str
    project: str | None = None
    trial: str | None = None
    status: str = "unreadable"
    started: str | None = None
    data: str | None = None
    network: str | None = None
    eta: float | None = None
    lam: float | None = None
    epochs: int | None = None
    planned_epochs: int | None = None
    train_acc: float | None = None
    val_acc: float | None = None
    test_acc: float | None = None
    seconds: float | None = None
    path: str = ""
    note: str | None = None

    def as_dict(self) -> dict:
        """The row as a JSON object, one key per field."""
        return dataclasses.asdict(self)


COLUMNS = tuple(field.name for field in dataclasses.fields(Run))


def read_run(folder, project=None, trial=None, trial_record=None):
    """The `Run` a run folder records; never raises on its content.

    Args:
        folder: the run folder (pathlib.Path or str).
        project: the search project's name, for a trial.
        trial: the trial's id, for a trial.
        trial_record: the trial's KerasTuner trial.json, a dict, for a trial; False
            when it is there but not JSON.

    Returns:
        A `Run`.
    """
    folder = pathlib.Path(folder)
    base = {"name": folder.name, "project": project, "trial": trial, "path": str(folder)}
    summary_file = folder / SUMMARY
    summary = read_json(summary_file) if summary_file.exists() else {}
    if not isinstance(summary, dict):
        return Run(**base, note=f"{SUMMARY} is not a JSON object")
    if trial_record is False:
        return Run(**base, note="trial.json is not a JSON object")
    try:
        return Run(**base, **_fields(folder, summary, trial_record or {}))
    except (TypeError, ValueError, AttributeError, KeyError) as error:
        # Valid JSON of the wrong shape (a hand-edited or foreign file).
        return Run(**base, note=f"{SUMMARY} has an unexpected shape: {error}")


def _fields(folder, summary, trial_record):
    config = summary.get("config") or {}
    network = summary.get("network") or {}
    history = summary.get("history") or {}
    final = summary.get("final") or {}
    values = (trial_record.get("hyperparameters") or {}).get("values") or {}
    lam = network.get("lam", values.get("lam"))
    seconds = [s for s in history.get("seconds") or [] if s is not None]
    return {
        "status": _status(folder, summary, trial_record),
        "started": summary.get("started") or _first_event_time(folder),
        "data": (summary.get("data") or {}).get("spec"),
        "network": _network(network),
        "eta": _number(config.get("eta", values.get("eta"))),
        "lam": _number(lam),
        "epochs": summary.get("epochs_run"),
        "planned_epochs": config.get("epochs"),
        "train_acc": _number(final.get("train_acc", _last(history.get("accuracy")))),
        "val_acc": _number(final.get("val_acc", _last(history.get("val_accuracy")))),
        "test_acc": _number(final.get("test_acc")),
        "seconds": float(sum(seconds)) if seconds else None,
        "note": summary.get("diverged") or None,
    }


def _status(folder, summary, trial_record):
    if is_held(folder):
        return "running"
    if not summary.get("finished"):
        return "killed"
    if summary.get("diverged"):
        return "diverged"
    if trial_record.get("status") == "FAILED":
        return "failed"
    return "stopped" if summary.get("stopped_early") else "finished"


def _network(network):
    """ "50-30 BN" from summary.json's network record; None when it has none."""
    if "hidden" not in network:
        return None
    widths = "-".join(str(width) for width in network["hidden"]) or "-"
    return f"{widths} BN" if network.get("batch_norm") else widths


def _first_event_time(folder):
    """When the run's first TensorBoard event file was created, for summaries without
    `started` (kbn 0.1): the file's name carries the time it was opened."""
    stamps = []
    for path in folder.glob("**/events.out.tfevents.*"):
        try:
            stamps.append(int(path.name.split(".")[3]))
        except (IndexError, ValueError):
            continue
    if not stamps:
        return None
    return datetime.datetime.fromtimestamp(min(stamps)).isoformat(timespec="seconds")


def _last(values):
    present = [v for v in values or [] if v is not None]
    return present[-1] if present else None


def _number(value):
    return None if value is None else float(value)
