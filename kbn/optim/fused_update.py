"""The kernels' update in one pass: the L2 penalty's gradient and the 16-bit copy folded in.

The report's update of a kernel W under the penalty `lambda ||W||^2`:

    g = dL/dW + 2 lambda W            (the data loss's gradient, plus the penalty's)
    v = momentum * v - eta * g
    W = W + v

Autodiff runs the first line as two ops (`2 lambda W`, then the sum), each a
full pass over W, before the fused momentum kernel reads W, v and g again.
Under a mixed precision each step also casts W to 16 bits for the matmul and
the 16-bit dL/dW back to float32. On a wide net these passes are memory-bound
and cost more than the momentum kernel itself (`benchmarks/step_profile.py`,
docs/performance.md). `momentum_update` is the three lines above, and the
cast of the new W to 16 bits, compiled by XLA into one loop over W.

It takes a step that knows about it: inside `fused_update(kernels)` (kbn's
training step),

- kbn's `L2Penalty` gives its value but no gradient for a listed kernel
  (`fold_penalty`), and kbn's `SGD` adds `2 lambda W` in its update;
- kbn's `Dense` multiplies by the kernel's 16-bit copy instead of casting W
  (`kernel_copy`), its gradient passed on in 16 bits; `SGD` casts it inside
  its update and writes the new copy there.

Both record what they did, so the update adds exactly what the tape left out.
The loss, and so every reported figure, is unchanged; the update is the same
arithmetic, in an order that differs only by float rounding (XLA may contract
`a * b + c` into one fused multiply-add).

    kernels = [FusedKernel(layer.kernel, layer.penalty.coefficient, copy)]
    with fused_update(kernels):
        with tf.GradientTape() as tape:
            loss = model.compute_loss(...)      # penalty value, no penalty gradient
        optimizer.apply(tape.gradient(loss, variables), variables)
"""

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import keras
import tensorflow as tf

_state = threading.local()

# A kernel's penalty coefficient `2 lambda` in a dtype, as a tensor: `L2Penalty.coefficient`.
Coefficient = Callable[[tf.DType], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class FusedKernel:
    """A kernel whose update `SGD` may fuse, with what it may fold in.

    Attributes:
        variable: the kernel W (D, M), float32 or float64.
        coefficient: None, or `2 lambda` of its L2 penalty as a function of
            a dtype (`L2Penalty.coefficient`).
        copy: None, or a 16-bit variable (D, M) the layer multiplies by
            instead of casting W at every step; `refresh_copies` makes it W.
    """

    variable: Any
    coefficient: Coefficient | None = None
    copy: tf.Variable | None = None


@dataclasses.dataclass
class _Folding:
    """The kernels of the block, and what the step traced so far folded for each."""

    kernels: dict[int, FusedKernel]  # id of the Keras variable, and of the backend's
    penalties: set[int] = dataclasses.field(default_factory=set)  # id(FusedKernel)
    copies: set[int] = dataclasses.field(default_factory=set)


def _ids(variable: Any) -> tuple[int, ...]:
    """The ids a kernel is seen by: the Keras variable's, and the backend variable's.

    The regularizer and the layer see the Keras variable, the optimizer's
    `update_step` the backend variable it wraps. Taken on entering the block,
    outside any layer: inside one, a mixed policy's `value` is a cast copy.
    """
    if isinstance(variable, keras.Variable):
        return id(variable), id(variable.value)
    return (id(variable),)


@contextlib.contextmanager
def fused_update(kernels: Iterable[FusedKernel]) -> Iterator[None]:
    """Trace a training step whose update of `kernels` folds in what the tape leaves out.

    Only what is traced inside the block is affected (the loss, its
    gradient and the optimizer's `apply` of one training step): a
    `tf.function` traced before keeps what it was traced with. The copies
    must hold the kernels' values when the step runs (`refresh_copies`).

    Args:
        kernels: `FusedKernel`s.
    """
    previous = getattr(_state, "folding", None)
    _state.folding = _Folding({key: k for k in kernels for key in _ids(k.variable)})
    try:
        yield
    finally:
        _state.folding = previous


def _listed(variable: Any) -> tuple[_Folding, FusedKernel] | None:
    folding = getattr(_state, "folding", None)
    if folding is None or id(variable) not in folding.kernels:
        return None
    return folding, folding.kernels[id(variable)]


def fold_penalty(kernel: Any) -> bool:
    """Whether `kernel`'s penalty gradient goes to the update; `L2Penalty` asks.

    True inside `fused_update` for a kernel listed with a coefficient: the
    penalty must then stop its gradient, and the update adds it.
    """
    listed = _listed(kernel)
    if listed is None or listed[1].coefficient is None:
        return False
    listed[0].penalties.add(id(listed[1]))
    return True


def kernel_copy(kernel: Any, dtype: tf.DType) -> tf.Tensor | None:
    """The 16-bit copy of `kernel` to multiply by, or None to cast it; `Dense` asks.

    Inside `fused_update`, for a kernel listed with a copy of `dtype`: the
    copy's value, as an op whose gradient for the kernel is the incoming
    16-bit gradient itself (the update casts it). None otherwise.

    Args:
        kernel: the layer's kernel variable (D, M).
        dtype: the layer's compute dtype.

    Returns:
        a tensor (D, M) of `dtype`, or None.
    """
    listed = _listed(kernel)
    if listed is None or listed[1].copy is None or listed[1].copy.dtype != dtype:
        return None
    listed[0].copies.add(id(listed[1]))
    return _read_copy(kernel, listed[1].copy.read_value())


@tf.custom_gradient
def _read_copy(kernel, copy):
    """`copy` in the forward pass; its gradient, in its own dtype, goes to `kernel`."""
    return tf.identity(copy), lambda d_copy: (d_copy, None)


@dataclasses.dataclass(frozen=True)
class Folded:
    """What the traced step left to the update of one kernel.

    Attributes:
        coefficient: `2 lambda` in the kernel's dtype (a scalar tensor), or
            None when the tape added the penalty's gradient.
        copy: the 16-bit copy to write the new W to, or None. With a copy
            the gradient arrives in its 16-bit dtype.
    """

    coefficient: tf.Tensor | None
    copy: tf.Variable | None


def folded(variable: Any) -> Folded | None:
    """What the traced step left to `variable`'s update; None when nothing; `SGD` asks."""
    listed = _listed(variable)
    if listed is None:
        return None
    folding, kernel = listed
    key = id(kernel)
    if key not in folding.penalties and key not in folding.copies:
        return None
    coefficient = kernel.coefficient if key in folding.penalties else None
    return Folded(
        coefficient(variable.dtype) if coefficient else None,
        kernel.copy if key in folding.copies else None,
    )


def refresh_copies(kernels: Iterable[FusedKernel]) -> None:
    """Each kernel's 16-bit copy set to its kernel, cast: before steps that read the copies.

    Anything may have written the kernels since the last update (a resume,
    `set_weights`, a new trial): one cast per call of the compiled loop
    keeps the copies right at a fraction of a cast per step.
    """
    for kernel in kernels:
        if kernel.copy is not None:
            kernel.copy.assign(tf.cast(kernel.variable, kernel.copy.dtype))


def penalty_gradient(gradient: tf.Tensor, variable: Any, folds: Folded) -> tf.Tensor:
    """The gradient the tape would have given: cast to W's dtype, the penalty's added.

    For the updates `momentum_update` does not do (Nesterov, no momentum).
    """
    gradient = tf.cast(gradient, variable.dtype)
    if folds.coefficient is None:
        return gradient
    return gradient + folds.coefficient * variable


def momentum_update(variable, velocity, gradient, learning_rate, momentum, coefficient, copy=None):
    """`v = momentum v - eta (g + 2 lambda W); W = W + v; copy = W`, one fused loop over W.

    Compiled by XLA, which fuses the element-wise lines into one loop. A new
    compiled function per call (per variable, per trace of the step): one
    shared across steps traced for other variables would keep referring to
    theirs.

    Args:
        variable: W, a float variable of any shape.
        velocity: v, a variable of W's shape and dtype.
        gradient: the data loss's gradient (W's shape), without the
            penalty's, in W's dtype or the copy's.
        learning_rate: eta, a scalar of W's dtype.
        momentum: a scalar of W's dtype.
        coefficient: `2 lambda`, a scalar of W's dtype (0: no penalty).
        copy: None, or a 16-bit variable of W's shape to set to the new W.
    """
    tf.function(_momentum_update, jit_compile=True)(
        variable, velocity, gradient, learning_rate, momentum, coefficient, copy
    )


def _momentum_update(variable, velocity, gradient, learning_rate, momentum, coefficient, copy):
    g = tf.cast(gradient, variable.dtype) + coefficient * variable
    v = momentum * velocity - learning_rate * g
    velocity.assign(v)
    w = variable + v
    variable.assign(w)
    if copy is not None:
        copy.assign(tf.cast(w, copy.dtype))
