"""Optimisation: kbn's SGD with momentum and the learning-rate schedules.

sgd.py        SGD: Keras's SGD, its momentum update as one fused TensorFlow op
schedules.py  exp, cyclic (triangular), cosine and constant learning rates
"""

from kbn.optim.schedules import SCHEDULES, learning_rate
from kbn.optim.sgd import SGD

__all__ = ["SCHEDULES", "SGD", "learning_rate"]
