"""Training: `train(model, dataset, TrainConfig)` on Keras's `fit` with kbn's compiled loop."""

from kbn.training.config import TrainConfig
from kbn.training.distribute import make_strategy
from kbn.training.trainer import TRACED, TrainResult, compiled_loop, train

__all__ = ["TRACED", "TrainConfig", "TrainResult", "compiled_loop", "make_strategy", "train"]
