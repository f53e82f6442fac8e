"""The learning-rate range test: `kbn.lr_find(model, dataset, LrFindConfig)`, `kbn lr-find`.

config.py      LrFindConfig: the range of eta, the steps, the SGD, the rule (-> kbn lr-find's flags)
suggest.py     the curve read: the smoothed loss, the blow-up, the suggestion rules
result.py      LrFindResult: the curve, the suggestion, the figure, the JSON
range_test.py  lr_find(): the test itself, on a copy of the model

The package is not called `lr_find`: `kbn.lr_find` is the function, and a
package of the same name would be hidden behind it.
"""

from kbn.lr_range.config import MIN_STEPS, LrFindConfig
from kbn.lr_range.range_test import lr_find
from kbn.lr_range.result import LrFindResult
from kbn.lr_range.suggest import RULES

__all__ = ["MIN_STEPS", "RULES", "LrFindConfig", "LrFindResult", "lr_find"]
