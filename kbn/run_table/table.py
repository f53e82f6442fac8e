"""`kbn.runs(logdir)`: every training run and search trial under some folders, as a table.

    logs/                             runs(["logs"]) finds
        20261205-101500/              a run: summary.json or .lock in it
        k3-bn/                        another run
        search/cifar/                 a search project: oracle.json in it
            runs/trial_0/, ...        its trials, one row each
        any/other/folder/             looked into, to any depth

A run's own sub-folders (train/, validation/, backup/, workers/) are never
taken for runs. The rows are `kbn.run_table.record.Run`s, in the order their runs
started; `RunTable` sorts and filters them and writes them as text, CSV,
JSON or a pandas DataFrame (pandas only if it is installed: kbn does not
depend on it).
"""

import csv
import io
import os
import pathlib
from typing import TYPE_CHECKING

from kbn.errors import KbnError
from kbn.fileio import read_json
from kbn.run_table.record import COLUMNS, STATUSES, read_run
from kbn.training.callbacks.run_log import SUMMARY
from kbn.training.runlock import LOCK_NAME

if TYPE_CHECKING:  # pandas is optional: kbn never imports it unless asked for a DataFrame
    import pandas

ORACLE = "oracle.json"  # KerasTuner's state: a folder holding it is a search project

# The columns `--filter` takes: those with few values a user names.
FILTERS = ("status", "project", "data", "name")

# The console table: column, header, format of a present value.
SHOWN = (
    ("name", "name", "{}"),
    ("started", "started", "{}"),
    ("data", "data", "{}"),
    ("network", "network", "{}"),
    ("eta", "eta", "{:.4g}"),
    ("lam", "lambda", "{:.3g}"),
    ("epochs", "epochs", "{}"),
    ("status", "status", "{}"),
    ("train_acc", "train", "{:.2%}"),
    ("val_acc", "val", "{:.2%}"),
    ("test_acc", "test", "{:.2%}"),
    ("seconds", "seconds", "{:.1f}"),
)


class RunTable(list):
    """A list of `Run`s with the table's operations; each returns a new table.

    Example:

    >>> table = kbn.runs("logs")
    >>> best = table.where(status=["finished"]).sorted_by("val_acc", descending=True)
    >>> best[0].eta, best[0].val_acc
    """

    def sorted_by(self, column: str, descending: bool = False) -> "RunTable":
        """The rows ordered by `column`; rows without a value come last either way.

        Raises:
            KbnError: for a column `Run` does not have.
        """
        _check_column(column, COLUMNS, "sort by")
        present = [run for run in self if getattr(run, column) is not None]
        missing = [run for run in self if getattr(run, column) is None]
        present.sort(key=lambda run: getattr(run, column), reverse=descending)
        return RunTable(present + missing)

    def where(self, **allowed: list[str]) -> "RunTable":
        """The rows whose `column` is one of the values given, for each column named.

        Args:
            **allowed: {column: [values]}, columns from `FILTERS`; e.g.
                `where(status=["finished", "stopped"], project=["cifar"])`.

        Raises:
            KbnError: for a column not in `FILTERS`, or a status not in `STATUSES`.
        """
        for column, values in allowed.items():
            _check_column(column, FILTERS, "filter on")
            if column == "status":
                for value in values:
                    _check_column(value, STATUSES, "filter on status")
        return RunTable(
            run
            for run in self
            if all(getattr(run, column) in values for column, values in allowed.items())
        )

    def as_dicts(self) -> list[dict]:
        """One JSON object per row (`Run.as_dict`)."""
        return [run.as_dict() for run in self]

    def to_csv(self) -> str:
        """The rows as CSV text, a header of every `Run` field first."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(
            {key: "" if value is None else value for key, value in row.items()}
            for row in self.as_dicts()
        )
        return out.getvalue()

    def to_text(self) -> str:
        """The rows as an aligned table for a terminal; a trial's name is `project/trial_<id>`."""
        rows = [[header for _, header, _ in SHOWN]]
        for run in self:
            row = []
            for column, _, form in SHOWN:
                value = getattr(run, column)
                if column == "name" and run.project:
                    value = f"{run.project}/{run.name}"
                if column == "epochs" and value is not None and run.planned_epochs is not None:
                    value = f"{value}/{run.planned_epochs}"
                row.append("" if value is None else form.format(value))
            rows.append(row)
        widths = [max(len(row[i]) for row in rows) for i in range(len(SHOWN))]
        return "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
            for row in rows
        )

    def to_dataframe(self) -> "pandas.DataFrame":
        """The rows as a pandas DataFrame, one column per `Run` field.

        Raises:
            KbnError: when pandas is not installed (kbn does not require it).
        """
        try:
            import pandas
        except ImportError:
            raise KbnError(
                "RunTable.to_dataframe needs pandas, which kbn does not install: "
                "pip install pandas (or use the list of rows as it is)"
            ) from None
        return pandas.DataFrame(self.as_dicts(), columns=list(COLUMNS))


def runs(*logdirs: str | os.PathLike) -> RunTable:
    """Every training run and search trial under `logdirs`, one `Run` each.

    Args:
        *logdirs: folders to look into, to any depth (a run folder or a search
            project itself too); none: `logs`.

    Returns:
        A `RunTable` (a list of `Run`s), in the order the runs started.

    Raises:
        KbnError: when a folder does not exist or is not a folder, or when none of
            them holds a run or a search project.
    """
    folders = [pathlib.Path(d) for d in logdirs] or [pathlib.Path("logs")]
    found = []
    for folder in folders:
        if not folder.is_dir():
            what = "is not a folder" if folder.exists() else "does not exist"
            raise KbnError(f"{folder} {what}: give the folder kbn wrote runs into (--logdir)")
        found += _scan(folder)
    if not found:
        names = ", ".join(str(f) for f in folders)
        raise KbnError(
            f"no kbn runs or search projects in {names}: a run folder holds {SUMMARY}, "
            f"a search project {ORACLE}"
        )
    unique = {run.path: run for run in found}.values()  # a folder given twice, or nested
    return RunTable(
        sorted(unique, key=lambda run: (run.started is None, run.started or "", run.path))
    )


def _scan(top):
    """The rows under `top`: its runs and its projects' trials."""
    rows = []
    for here, subfolders, files in os.walk(top):
        here = pathlib.Path(here)
        if ORACLE in files:
            rows += _trials(here)
            subfolders.clear()
        elif SUMMARY in files or LOCK_NAME in files:
            rows.append(read_run(here))
            subfolders.clear()  # train/, validation/, backup/, workers/
        else:
            subfolders.sort()
    return rows


def _trials(project):
    """One row per trial that has a run folder under `project/runs/`."""
    rows = []
    for folder in sorted((project / "runs").glob("trial_*")):
        trial = folder.name.removeprefix("trial_")
        record_file = project / folder.name / "trial.json"
        record = read_json(record_file) if record_file.exists() else {}
        rows.append(
            read_run(
                folder,
                project=project.name,
                trial=trial,
                trial_record=record if isinstance(record, dict) else False,
            )
        )
    return rows


def _check_column(name, allowed, what):
    if name not in allowed:
        raise KbnError(f"cannot {what} {name!r}: choose one of {', '.join(allowed)}")
