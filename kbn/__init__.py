"""kbn: k-layer networks with hand-written batch-norm backward passes, in Keras 3.

The Python API: `load_data` -> `build_mlp` -> `train`, `check_gradients` and
`lr_find` (the learning-rate range test);
the layers `Dense` and `BatchNorm`; `flip_averaged`, test-time flip
averaging of a built or saved model. docs/architecture.md shows the modules
behind it, level by level, and where to add to them.
"""

from kbn._quiet import import_tensorflow

import_tensorflow()  # before anything imports TensorFlow: its start-up notices stay quiet

from kbn import _moved  # noqa: E402

_moved.install()  # the 0.1 module names, for one release

from kbn.data import Dataset, Split, load_data  # noqa: E402
from kbn.errors import KbnError  # noqa: E402
from kbn.gradcheck.check import check_gradients  # noqa: E402
from kbn.lr_range.config import LrFindConfig  # noqa: E402
from kbn.lr_range.range_test import lr_find  # noqa: E402
from kbn.lr_range.result import LrFindResult  # noqa: E402
from kbn.nn import BatchNorm, Dense, flip_averaged  # noqa: E402
from kbn.nn.builder import build_mlp  # noqa: E402
from kbn.run_table import Run, RunTable, runs  # noqa: E402
from kbn.training.config import TrainConfig  # noqa: E402
from kbn.training.distribute import make_strategy  # noqa: E402
from kbn.training.trainer import TrainResult, train  # noqa: E402

# The one place the version is written: pyproject.toml reads it from here.
__version__ = "0.2.0"

__all__ = [
    "BatchNorm",
    "Dataset",
    "Dense",
    "KbnError",
    "LrFindConfig",
    "LrFindResult",
    "Run",
    "RunTable",
    "Split",
    "TrainConfig",
    "TrainResult",
    "build_mlp",
    "check_gradients",
    "flip_averaged",
    "load_data",
    "lr_find",
    "make_strategy",
    "runs",
    "train",
]
