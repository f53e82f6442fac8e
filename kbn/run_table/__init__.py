"""Every training run and search trial under a log folder, read back as one table.

    record.py   Run: one row, and how a run folder's files give its status
    table.py    runs(*logdirs) -> RunTable: finding the folders; sorting, filtering,
                text, CSV, JSON and DataFrame output

`kbn runs` is the command line over `runs`.
"""

from kbn.run_table.record import COLUMNS, STATUSES, Run, read_run
from kbn.run_table.table import FILTERS, RunTable, runs

__all__ = ["COLUMNS", "FILTERS", "STATUSES", "Run", "RunTable", "read_run", "runs"]
