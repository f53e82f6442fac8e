"""The model's input stages: Centering (the report's preprocessing), ZCA Whitening, PCA.

The report: DD2424 assignment 3, k-layer networks with batch normalization.
"""

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf


@keras.saving.register_keras_serializable(package="kbn")
class Centering(keras.layers.Layer):
    """Scale raw inputs to [0, 1] and subtract the training mean.

    `x * scale - mean`, where `mean` is the per-feature mean of the scaled
    training inputs, learnt by `adapt`. The mean is a non-trainable weight,
    so a saved model keeps it exactly, in its own dtype, and takes raw pixels
    as a data source yields them.

    The layer also carries the model's class names (`class_names`), so that
    a saved model brings them back with its config: the input stage is in
    every kbn model and runs once per split in training, so the names cost
    nothing there. `kbn.nn.builder.class_names(model)` reads them.

    Args:
        scale: float, raw value to [0, 1] (1/255 for 8-bit pixels).
        class_names: optional sequence of K strings, the name of each of the
            model's output classes; the layer's computation ignores them.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Input shape:
        (batch, D).

    Output shape:
        (batch, D).

    >>> layer = Centering(1 / 255)
    >>> layer.adapt(x_train.reshape(len(x_train), -1))
    """

    def __init__(
        self, scale: float = 1 / 255, class_names: Sequence[str] | None = None, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.scale = float(scale)
        if class_names is not None:
            class_names = [str(name) for name in class_names]
        self.class_names = class_names

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.mean = self.add_weight(
            name="mean", shape=(input_shape[-1],), initializer="zeros", trainable=False
        )

    def adapt(self, x: np.ndarray) -> None:
        """Learn the mean of `x * scale` over examples; x of shape (N, D).

        Accumulates in float64 without a float copy of the whole of x.
        """
        x = np.asarray(x)
        if len(x) == 0:
            raise ValueError("adapt needs at least one training example. Received: 0")
        if not self.built:
            self.build(x.shape)
        self.mean.assign(x.reshape(len(x), -1).mean(axis=0, dtype=np.float64) * self.scale)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        x = tf.cast(inputs, self.compute_dtype)
        # The scale as a constant of x's own dtype: float64 models stay exact.
        return x * tf.constant(self.scale, x.dtype) - tf.cast(self.mean, x.dtype)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "scale": self.scale, "class_names": self.class_names}


def principal_axes(
    x: np.ndarray, scale: float = 1.0, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """The principal axes of training inputs, the largest variance first.

    The eigendecomposition `C = U diag(s) U^T` of the covariance of
    `x * scale`, summed over chunks of `chunk` rows in float32 products and
    float64 sums, so no float copy of the whole of x is made. `Whitening`
    and `PrincipalComponents` are both set from it, so a model with both
    decomposes the covariance once.

    Args:
        x: array (N, ...), N >= 2; each example is flattened to D values.
        scale: float, the factor from x to what the layers will see.
        chunk: rows per product.

    Returns:
        (s, u): the variances, array (D,) in decreasing order (>= 0), and
        the axes, array (D, D), the unit eigenvector of s[i] in column i.
    """
    x = np.asarray(x)
    if len(x) < 2:
        raise ValueError(f"adapt needs at least two training examples. Received: {len(x)}")
    x = x.reshape(len(x), -1)
    mean = x.mean(axis=0, dtype=np.float64)
    covariance = np.zeros((x.shape[1], x.shape[1]))
    for start in range(0, len(x), chunk):
        centred = (x[start : start + chunk] - mean).astype(np.float32)
        covariance += centred.T @ centred
    covariance *= scale**2 / len(x)
    s, u = np.linalg.eigh(covariance)
    # eigh's order is increasing; rounding can leave the smallest a hair below 0.
    return np.maximum(s[::-1], 0.0), u[:, ::-1]


@keras.saving.register_keras_serializable(package="kbn")
class Whitening(keras.layers.Layer):
    """ZCA whitening: decorrelate the input features with a fixed matrix.

    `y = x W` with `W = U diag(1 / sqrt(s + epsilon)) U^T`, where
    `C = U diag(s) U^T` is the covariance of the training inputs, learnt by
    `adapt`. On the training inputs y has (nearly) identity covariance:
    neighbouring pixels no longer carry the same signal, so a fully
    connected layer's gradient is not dominated by a few smooth directions
    of the image. Of the whitening matrices, ZCA's is the one that keeps y
    closest to x (Bell and Sejnowski, 1997): y is still an image, with its
    edges enhanced, so flips and shifts can follow it. `epsilon` damps the
    directions whose variance is below it, mostly pixel noise, instead of
    blowing them up to unit variance.

    W is a non-trainable weight, so a saved model keeps it and takes raw
    pixels as before.

    Args:
        epsilon: float > 0, added to every eigenvalue of C, in the units of
            the layer's inputs squared: a direction of variance s comes out
            with variance s / (s + epsilon), so the larger epsilon, the more
            of the low-variance directions (fine detail, pixel noise) stay
            damped. For CIFAR-10 pixels scaled to [0, 1], 0.1 classified
            held-out images better than 0.01 (reports/cifar10-mlp,
            docs/results.md).
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Input shape:
        (batch, D).

    Output shape:
        (batch, D).

    >>> layer = Whitening(0.1)
    >>> layer.adapt(x_train.reshape(len(x_train), -1), scale=1 / 255)
    """

    def __init__(self, epsilon: float = 1e-2, **kwargs) -> None:
        super().__init__(**kwargs)
        if not epsilon > 0:
            raise ValueError(f"epsilon must be > 0. Received: epsilon={epsilon!r}")
        self.epsilon = float(epsilon)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        d = input_shape[-1]
        self.kernel = self.add_weight(
            name="kernel", shape=(d, d), initializer="identity", trainable=False
        )

    def adapt(self, x: np.ndarray, scale: float = 1.0, chunk: int = 2048) -> None:
        """Learn W from training inputs; `x * scale` is what the layer will see, up to a shift.

        The covariance ignores a constant shift, so x may be the raw
        inputs of a `Centering` in front of this layer. It is summed over
        chunks of `chunk` rows in float32 products and float64 sums, so
        no float copy of the whole of x is made.

        Args:
            x: array (N, D), N >= 2.
            scale: float, the factor from x to the layer's inputs.
            chunk: rows per product.
        """
        s, u = principal_axes(x, scale, chunk)
        self.set_axes(s, u)

    def set_axes(self, variances: np.ndarray, axes: np.ndarray) -> None:
        """Set W from the training inputs' principal axes (`principal_axes`'s output).

        Args:
            variances: array (D,), the variance along each axis.
            axes: array (D, D), one unit axis per column.
        """
        if not self.built:
            self.build((None, len(variances)))
        self.kernel.assign((axes / np.sqrt(variances + self.epsilon)) @ axes.T)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return tf.matmul(
            tf.cast(inputs, self.compute_dtype), tf.cast(self.kernel, self.compute_dtype)
        )

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="kbn")
class PrincipalComponents(keras.layers.Layer):
    """Keep the k leading principal components of the inputs: `y = x U_k`.

    `U_k` (D, k) holds the axes of the k largest variances of the training
    inputs, learnt by `adapt`. After a ZCA `Whitening` (whose matrix has
    the same axes) `y` is PCA whitening to k components: unit variance along
    each kept axis, as Lin, Memisevic and Konda (2015) fed their fully
    connected nets (800 of CIFAR-10's 3072). A first Dense on k inputs
    instead of D costs k / D of its products, forward and backward, for the
    cost of this one fixed product forward; the directions left out are
    those of least variance (fine detail, pixel noise).

    Placed after the random flips and shifts, it projects each augmented
    image, so the augmentation still moves whole images. U_k is a
    non-trainable weight, so a saved model keeps it.

    Args:
        components: k, an int in [1, D].
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Input shape:
        (batch, D).

    Output shape:
        (batch, k).

    >>> layer = PrincipalComponents(800)
    >>> layer.adapt(x_train.reshape(len(x_train), -1), scale=1 / 255)
    """

    def __init__(self, components: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(components, (int, np.integer)) or components < 1:
            raise ValueError(f"components must be an int >= 1. Received: components={components!r}")
        self.components = int(components)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        d = input_shape[-1]
        if d is not None and self.components > d:
            raise ValueError(
                f"components must be at most the {d} input features. "
                f"Received: components={self.components}"
            )
        self.kernel = self.add_weight(
            name="kernel", shape=(d, self.components), initializer="identity", trainable=False
        )

    def adapt(self, x: np.ndarray, scale: float = 1.0, chunk: int = 2048) -> None:
        """Learn U_k from training inputs (N, D), N >= 2, as `Whitening.adapt` does."""
        self.set_axes(*principal_axes(x, scale, chunk))

    def set_axes(self, variances: np.ndarray, axes: np.ndarray) -> None:
        """Set U_k from `principal_axes`'s output: its first k axes (columns of `axes`)."""
        if not self.built:
            self.build((None, len(variances)))
        self.kernel.assign(axes[:, : self.components])

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return tf.matmul(
            tf.cast(inputs, self.compute_dtype), tf.cast(self.kernel, self.compute_dtype)
        )

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (*input_shape[:-1], self.components)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "components": self.components}
