"""The switch between kbn's hand-written backward passes and TensorFlow's autodiff.

kbn's layers keep their math as pairs of plain functions, the forward pass
and, right under it, the backward pass (as cs231n's `affine_forward` /
`affine_backward`). A `tf.custom_gradient` op joins each pair, so that
`tf.GradientTape`, `model.fit` and every Keras optimizer use the
hand-written gradients. Inside `autodiff_backward()` the same forward math
runs without the custom gradients and TensorFlow differentiates it: that is
the reference the gradient checker compares against.
"""

import contextlib
import threading
from collections.abc import Iterator

_state = threading.local()


@contextlib.contextmanager
def autodiff_backward() -> Iterator[None]:
    """Differentiate kbn layers by TensorFlow autodiff instead of by hand.

    Only calls traced inside the block are affected: a `tf.function` traced
    before keeps the gradients it was traced with.

    >>> with autodiff_backward():
    ...     with tf.GradientTape() as tape:
    ...         loss = ...  # reference gradients, no custom_gradient involved
    """
    previous = getattr(_state, "autodiff", False)
    _state.autodiff = True
    try:
        yield
    finally:
        _state.autodiff = previous


def use_autodiff() -> bool:
    """Whether calls traced now differentiate by autodiff (inside `autodiff_backward`)."""
    return getattr(_state, "autodiff", False)
