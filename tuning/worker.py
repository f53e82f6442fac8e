"""One worker of a distributed search: `python -m tuning.worker PROJECT_DIR`.

Started by `tuning.search` with KerasTuner's variables (KERASTUNER_TUNER_ID,
KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT) set; it rebuilds the chief's
tuner from the settings and data the chief wrote in PROJECT_DIR and runs
trials until the chief's oracle has none left. It exits with
`tuning.search.RECYCLE_EXIT` after `recycle_after` trials, for the chief to
start a fresh one, and at once if the chief dies.
"""

import dataclasses
import os
import sys
import threading
import time

import kbn  # noqa: F401  (quiet TensorFlow start-up, layers registered)
from tuning.search import read_worker_files, search


def _exit_with_parent(parent):
    """A chief killed with SIGKILL cannot stop its workers: they stop themselves."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    dataset, config, train_config = read_worker_files(argv[0])
    search(dataset, dataclasses.replace(config, workers=0, verbose=0), train_config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
