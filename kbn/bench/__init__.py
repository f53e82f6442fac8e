"""Speed references: seconds per epoch of NumPy, Keras and kbn, and the plain NumPy network.

    epoch_time.py       `kbn bench`: the same epochs timed in each implementation
    numpy_reference.py  the report's network in plain NumPy, forward and hand backward
    numpy_layers.py     its layers in NumPy, each forward pass with its backward pass

The report: DD2424 assignment 3, k-layer networks with batch normalization; its network
is 3072-50-30-10 with batch norm (`SEED_NET`).
"""

from kbn.bench.epoch_time import IMPLEMENTATIONS, SEED_NET, BenchResult, epoch_times, format_result

__all__ = ["IMPLEMENTATIONS", "SEED_NET", "BenchResult", "epoch_times", "format_result"]
