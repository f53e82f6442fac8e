"""Seconds per epoch of the report's network in plain NumPy, with Keras's own layers and with kbn.

    python benchmarks/epoch_time.py                      # synthetic CIFAR-10-shaped data
    python benchmarks/epoch_time.py --data folder:../shared/data/cifar10-jpeg/train
    python benchmarks/epoch_time.py --json               # last line: one JSON object

The same as `kbn bench` (and `make bench`); the measuring lives in `kbn.bench`.
"""

import sys

from kbn.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
