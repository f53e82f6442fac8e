"""Training: `train(model, dataset, TrainConfig)` on Keras's `fit` with kbn's compiled loop.

config.py      TrainConfig: every setting of a run, its help and check (-> kbn train's flags)
presets.py     named recipes: the report's, cifar10-mlp
distribute.py  make_strategy: default, mirrored, multi-worker
order.py       EpochOrder: each epoch's permutation and its mini-batches
stages.py      the model's fixed input stages, run once per split
loop.py        TrainingLoop: the compiled training and evaluation loops under fit
loop_cache.py  LoopCache: a compiled loop kept for the next run of the same model
callbacks/     one Keras callback per job around fit (run log, backup, TensorBoard, ...)
hparams.py     each run's HParams session, beside its curves
runlock.py     RunLock: one writer per run folder
trainer.py     train(): the one function that puts a run together
"""

from kbn.training.config import TrainConfig
from kbn.training.distribute import make_strategy
from kbn.training.loop_cache import TRACED, LoopCache
from kbn.training.trainer import TrainResult, train

__all__ = ["TRACED", "LoopCache", "TrainConfig", "TrainResult", "make_strategy", "train"]
