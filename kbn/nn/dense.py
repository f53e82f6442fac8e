"""Dense: the affine layer `s = x W + b`, its backward pass written by hand.

The forward pass and, right under it, the backward pass are plain functions
(`dense_forward`, `dense_backward`); a `tf.custom_gradient` op joins them, so
`tf.GradientTape`, `fit` and every Keras optimizer use the hand-written
gradients. The op takes the weights as explicit tensor arguments and returns
one gradient per argument (as `keras.layers.Dense._int8_call` does); it never
captures a variable, so it works under `tf.function`, `tf.distribute` and
`Model.stateless_call` alike.
"""

import warnings
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kbn.nn.autodiff import use_autodiff
from kbn.nn.precision import island_dtype

# --------------------------------------------------------------------------
# Dense: s = x W + b
# --------------------------------------------------------------------------


def dense_forward(x: tf.Tensor, W: tf.Tensor, b: tf.Tensor | None = None) -> tf.Tensor:
    """Affine map `s = x W + b`.

    Args:
        x: inputs of shape (N, D).
        W: kernel of shape (D, M).
        b: optional bias of shape (M,).

    Returns:
        s: scores of shape (N, M).
    """
    s = tf.matmul(x, W)
    return s if b is None else tf.nn.bias_add(s, b)


def dense_backward(
    ds: tf.Tensor, x: tf.Tensor, W: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Gradients of the loss through `s = x W + b`.

    Args:
        ds: gradient of the loss with respect to s, of shape (N, M).
        x: the forward inputs, of shape (N, D).
        W: the kernel, of shape (D, M).

    Returns:
        dx: gradient with respect to x, of shape (N, D): `ds W^T`.
        dW: gradient with respect to W, of shape (D, M): `x^T ds`.
        db: gradient with respect to b, of shape (M,): `sum_n ds`, summed in
            float32 when ds is 16-bit (bfloat16 keeps 8 bits: a sum of
            hundreds of terms would lose most of them).

    Each gradient has the dtype of its input (the matmuls accumulate in
    float32 inside the kernel either way).
    """
    dx = tf.matmul(ds, W, transpose_b=True)
    dW = tf.matmul(x, ds, transpose_a=True)
    db = tf.cast(tf.reduce_sum(tf.cast(ds, island_dtype(ds.dtype)), axis=0), ds.dtype)
    return dx, dW, db


@tf.custom_gradient
def _dense_op(x, W, *b):
    """`dense_forward` with `dense_backward` as its gradient; b is optional."""
    s = dense_forward(x, W, *b)

    def grad(ds):
        dx, dW, db = dense_backward(ds, x, W)
        return (dx, dW, db) if b else (dx, dW)

    return s, grad


# Arguments renamed for one name per concept across kbn (lambda is `lam` everywhere, as
# `build_mlp`'s `RENAMED_ARGUMENTS`): kbn 0.1's `l2=` of Dense and L2Penalty works, with a
# DeprecationWarning, until kbn 0.3; a config saved by kbn 0.1 (its key
# "l2") loads silently.
RENAMED_ARGUMENTS = {"l2": "lam"}


def _renamed(owner: str, renamed: Mapping[str, float]) -> dict[str, float]:
    """{new name: value} of the old-named keywords `renamed`, each with a DeprecationWarning."""
    new = {}
    for old, value in renamed.items():
        if old not in RENAMED_ARGUMENTS:
            raise TypeError(f"{owner}() got an unexpected keyword argument {old!r}")
        name = RENAMED_ARGUMENTS[old]
        warnings.warn(
            f"{owner}'s {old}= is now {name}=; use {name}= ({old}= goes in kbn 0.3)",
            DeprecationWarning,
            stacklevel=3,
        )
        new[name] = value
    return new


def _current_config(config: dict[str, Any]) -> dict[str, Any]:
    """A config saved by kbn 0.1 with its old keys renamed; a current one as it is."""
    if not set(config) & set(RENAMED_ARGUMENTS):
        return config
    return {RENAMED_ARGUMENTS.get(key, key): value for key, value in config.items()}


@keras.saving.register_keras_serializable(package="kbn")
class L2Penalty(keras.regularizers.Regularizer):
    """The report's penalty `lam * sum(W ** 2)`, with lam held in a variable.

    The report: DD2424 assignment 3, k-layer networks with batch normalization.

    The compiled training step reads lambda from the variable, so `assign`
    changes it without tracing the step again (a search's trials reuse one
    compiled model). Kept in float64 and cast to the kernel's dtype.

    Args:
        lam: float >= 0, lambda. Formerly `l2`.
    """

    def __init__(self, lam: float | None = None, **renamed: float) -> None:
        lam = _renamed("L2Penalty", renamed).get("lam", lam)
        if lam is None:
            raise TypeError("L2Penalty() missing 1 required argument: 'lam'")
        self.lam = float(lam)
        self._variable = tf.Variable(self.lam, trainable=False, dtype=tf.float64)

    def __call__(self, kernel: tf.Tensor) -> tf.Tensor:
        # l2_loss(W) = sum(W ** 2) / 2 is one op and its gradient (W times the
        # upstream scalar) one more: two ops where a square, a sum and their
        # gradients' broadcast and two products are five (the time it saves
        # is measured by `kbn bench`, see docs/performance.md).
        return tf.cast(2 * self._variable, kernel.dtype) * tf.nn.l2_loss(kernel)

    def assign(self, lam: float) -> None:
        self.lam = float(lam)
        self._variable.assign(self.lam)

    def get_config(self) -> dict[str, float]:
        return {"lam": self.lam}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "L2Penalty":
        return cls(**_current_config(config))


@keras.saving.register_keras_serializable(package="kbn")
class Dense(keras.layers.Layer):
    """Fully connected layer with a hand-written backward pass.

    Computes `s = x W + b`. Its gradients `dx = ds W^T`, `dW = x^T ds`,
    `db = sum_n ds` are written by hand (`dense_backward`). With `lam > 0`
    the kernel carries the report's penalty `lam * sum(W ** 2)` through Keras's
    regularizer mechanism, so `model.losses`, `fit` and the reported loss
    include it: the report's cost `J = mean cross-entropy + lambda ||W||^2`.
    Setting `layer.lam` on a built layer changes lambda in place (`L2Penalty`).

    Under a mixed dtype policy (`dtype=keras.DTypePolicy("mixed_bfloat16")`)
    W and b stay float32 and `x W + b` runs in the compute dtype; the
    hand-written gradients come back in it, and the optimizer receives
    float32 ones (the gradients of the casts). The penalty stays float32.

    Args:
        units: positive int, output width M.
        lam: float >= 0, the L2 penalty lambda on the kernel (not the bias).
            Formerly `l2`, still accepted (and `layer.l2`) with a
            DeprecationWarning.
        use_bias: whether to add b. Before a `BatchNorm` the bias is
            redundant (the mean subtraction cancels it, its gradient is 0).
        kernel_initializer: initializer of W, of shape (D, M).
        bias_initializer: initializer of b, of shape (M,).
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tensor of shape (batch, ..., D).

    Input shape:
        (batch, ..., D); leading axes are folded into the batch.

    Output shape:
        (batch, ..., M).

    >>> layer = Dense(50, lam=1e-4)
    >>> layer(np.zeros((10, 3072), "float32")).shape
    TensorShape([10, 50])
    """

    def __init__(
        self,
        units: int,
        lam: float = 0.0,
        use_bias: bool = True,
        kernel_initializer: str | dict[str, Any] | keras.initializers.Initializer = "he_normal",
        bias_initializer: str | dict[str, Any] | keras.initializers.Initializer = "zeros",
        **kwargs,
    ) -> None:
        renamed = {old: kwargs.pop(old) for old in RENAMED_ARGUMENTS if old in kwargs}
        lam = _renamed("Dense", renamed).get("lam", lam)
        super().__init__(**kwargs)
        if not isinstance(units, (int, np.integer)) or isinstance(units, bool) or units < 1:
            raise ValueError(
                f"Dense needs a positive integer number of units. Received: units={units!r}"
            )
        if not lam >= 0:
            raise ValueError(f"Dense needs lam >= 0. Received: lam={lam!r}")
        self.units = int(units)
        self._lam = float(lam)
        self.penalty: L2Penalty | None = None
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    @property
    def lam(self) -> float:
        """Lambda of the kernel's penalty, a float."""
        return self._lam

    @lam.setter
    def lam(self, value: float) -> None:
        if not value >= 0:
            raise ValueError(f"Dense needs lam >= 0. Received: lam={value!r}")
        if self.built and (self.penalty is None) != (value == 0):
            raise ValueError(
                f"{self.name} was built {'without' if self.penalty is None else 'with'} an L2 "
                f"penalty; only its value can change. Received: lam={value!r}"
            )
        self._lam = float(value)
        if self.penalty is not None:
            self.penalty.assign(value)

    @property
    def l2(self) -> float:
        """Deprecated name of `lam`, kept until kbn 0.3."""
        warnings.warn(
            "Dense.l2 is now Dense.lam; use lam (l2 goes in kbn 0.3)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.lam

    @l2.setter
    def l2(self, value: float) -> None:
        warnings.warn(
            "Dense.l2 is now Dense.lam; use lam (l2 goes in kbn 0.3)",
            DeprecationWarning,
            stacklevel=2,
        )
        self.lam = value

    def __dir__(self) -> list[str]:
        # Keras's saving reads every attribute `dir` lists: `l2` would warn at each save and load.
        return [name for name in super().__dir__() if name not in RENAMED_ARGUMENTS]

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        input_dim = input_shape[-1]
        self.penalty = L2Penalty(self._lam) if self._lam else None
        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_dim, self.units),
            initializer=self.kernel_initializer,
            regularizer=self.penalty,
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.units,), initializer=self.bias_initializer)
            if self.use_bias
            else None
        )
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_dim})

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        # Under a mixed policy the variables are float32 and the matmul runs
        # in the compute dtype (bfloat16: faster than float32 on hardware
        # that has it, see `kbn.nn.precision` and docs/performance.md). The
        # casts are ops of the graph: the hand-written gradients come back in
        # the compute dtype and leave the casts as float32 gradients of the
        # float32 variables.
        x = tf.cast(inputs, self.compute_dtype)
        weights = [tf.cast(self.kernel, self.compute_dtype)]
        if self.use_bias:
            weights.append(tf.cast(self.bias, self.compute_dtype))
        folded = x.shape.rank != 2
        if folded:
            x = tf.reshape(x, (-1, x.shape[-1]))  # (N, D)
        op = dense_forward if use_autodiff() else _dense_op
        s = op(x, *weights)  # (N, M)
        if folded:
            s = tf.reshape(s, tf.concat([tf.shape(inputs)[:-1], [self.units]], 0))
        return s

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (*input_shape[:-1], self.units)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Dense":
        return super().from_config(_current_config(config))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "units": self.units,
            "lam": self.lam,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }
