"""The gradient check: hand-written vs autodiff vs numerical gradients, and the report's table.

The report: DD2424 assignment 3, k-layer networks with batch normalization.

    check.py  check_gradients and the relative error of the report's formula (1)
"""

from kbn.gradcheck.check import (
    ParamCheck,
    check_gradients,
    check_inputs,
    format_table,
    gradient_table,
    max_entry_error,
    param_names,
    relative_error,
)

__all__ = [
    "ParamCheck",
    "check_gradients",
    "check_inputs",
    "format_table",
    "gradient_table",
    "max_entry_error",
    "param_names",
    "relative_error",
]
