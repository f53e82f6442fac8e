"""One worker of a distributed search: `python -m tuning.worker PROJECT_DIR`.

Started by `tuning.search` with KerasTuner's variables (KERASTUNER_TUNER_ID,
KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT) set; it rebuilds the chief's
tuner from the settings and data the chief wrote in PROJECT_DIR and runs
trials until the chief's oracle has none left.
"""

import dataclasses
import sys

import kbn  # noqa: F401  (quiet TensorFlow start-up, layers registered)
from tuning.search import read_worker_files, search


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    dataset, config, train_config = read_worker_files(argv[0])
    search(dataset, dataclasses.replace(config, workers=0, verbose=0), train_config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
