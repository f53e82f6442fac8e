"""One worker process of a distributed search: the entry point `tuning.chief.worker_command` starts.

Started by the chief with KerasTuner's variables (KERASTUNER_TUNER_ID,
KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT) set; it rebuilds the chief's
tuner from the settings and data the chief wrote in PROJECT_DIR and runs
trials until the chief's oracle has none left. It exits with
`tuning.tuner.RECYCLE_EXIT` after `recycle_after` trials, for the chief to
start a fresh one, and at once if the chief dies.
"""

import os
import sys
import threading
import time

import kbn  # noqa: F401  (quiet TensorFlow start-up, layers registered)
from tuning.chief import read_worker_files
from tuning.search import SearchConfig, search


def _exit_with_parent(parent):
    """A chief killed with SIGKILL cannot stop its workers: they stop themselves."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def main(argv=None):
    """Run the worker of the search in `argv[0]` (its project folder); return 0."""
    argv = sys.argv[1:] if argv is None else argv
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    dataset, settings, train_config = read_worker_files(argv[0])
    search(dataset, SearchConfig(**settings), train_config)
    return 0
