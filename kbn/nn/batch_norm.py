"""BatchNorm: `y = gamma * (x - mean) / sqrt(var + epsilon) + beta`, its backward pass by hand.

The forward pass and, right under it, the backward passes (training, with
the batch's statistics; inference, with the moving ones) are plain
functions; a `tf.custom_gradient` op joins them, taking every tensor as an
argument and returning one gradient per argument, so it works under
`tf.function`, `tf.distribute` and `Model.stateless_call` alike. Under a
`tf.distribute` strategy the batch statistics are those of the global batch
(`synchronized_moments`), so several replicas train as one device.
"""

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from kbn.nn.autodiff import use_autodiff
from kbn.nn.precision import island_dtype

# --------------------------------------------------------------------------
# BatchNorm: y = gamma * (x - mean) / sqrt(var + epsilon) + beta
# --------------------------------------------------------------------------


def batch_norm_forward(
    x: tf.Tensor,
    mean: tf.Tensor,
    var: tf.Tensor,
    gamma: tf.Tensor,
    beta: tf.Tensor,
    epsilon: float,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Normalise, then scale and shift: `y = gamma * x_hat + beta`.

    `x_hat = (x - mean) / sqrt(var + epsilon)`, with the batch's statistics
    while training and the moving averages at inference.

    Args:
        x: inputs of shape (N, D).
        mean: per-feature mean of shape (D,).
        var: per-feature variance of shape (D,).
        gamma: scale of shape (D,).
        beta: shift of shape (D,).
        epsilon: float added to var for numerical safety.

    Returns:
        y: outputs of shape (N, D).
        x_hat: normalised inputs of shape (N, D), kept for the backward pass.
        inv_std: `1 / sqrt(var + epsilon)` of shape (D,), kept likewise.
    """
    inv_std = tf.math.rsqrt(var + epsilon)  # (D,)
    x_hat = (x - mean) * inv_std  # (N, D)
    return x_hat * gamma + beta, x_hat, inv_std


def batch_norm_backward(
    dy: tf.Tensor,
    x_hat: tf.Tensor,
    inv_std: tf.Tensor,
    gamma: tf.Tensor,
    mean: Callable[[tf.Tensor], tf.Tensor] | None = None,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Gradients through batch normalisation with the batch's own statistics.

    The `BatchNormBackPass` of the report (DD2424 assignment 3: k-layer
    networks with batch normalization): since mean and var are functions of the
    batch, every x_n reaches the loss through all of them, which the two mean
    terms account for. With `g = dy * gamma` (the gradient at x_hat):
    `dx = inv_std * (g - mean_n(g) - x_hat * mean_n(g * x_hat))`.

    When the statistics are over a global batch split among replicas, the
    two means are too: `mean` is then `synchronized_mean`, over every
    replica's examples, and each replica's dx is exactly the one a single
    device would compute for its examples.

    Args:
        dy: gradient of the loss with respect to y, of shape (N, D).
        x_hat: normalised inputs of shape (N, D).
        inv_std: `1 / sqrt(var + epsilon)` of shape (D,).
        gamma: scale of shape (D,).
        mean: the mean over the batch's examples of an (N, D) tensor, (D,);
            None: over this tensor's N examples.

    Returns:
        dx: gradient with respect to x, of shape (N, D).
        dgamma: gradient with respect to gamma, of shape (D,): `sum_n dy x_hat`
            over this replica's examples (the optimizer sums the replicas').
        dbeta: gradient with respect to beta, of shape (D,): `sum_n dy`, likewise.
    """
    mean = mean or (lambda t: tf.reduce_mean(t, axis=0))
    dbeta = tf.reduce_sum(dy, axis=0)
    dgamma = tf.reduce_sum(dy * x_hat, axis=0)
    g = dy * gamma  # (N, D)
    dx = inv_std * (g - mean(g) - x_hat * mean(g * x_hat))
    return dx, dgamma, dbeta


def synchronized_mean(x: tf.Tensor) -> tf.Tensor:
    """The mean over axis 0 of x (N, D), over every replica's examples: (D,).

    The replicas' sums and counts are all-reduced, so replicas holding
    different numbers of examples weigh each example alike.
    """
    context = tf.distribute.get_replica_context()
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(x, axis=0))  # (D,)
    count = context.all_reduce(
        tf.distribute.ReduceOp.SUM, tf.cast(tf.shape(x)[:1], x.dtype)
    )  # (1,)
    return total / count


def synchronized_moments(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Mean and biased variance over every replica's examples of x (N, D): (D,), (D,).

    Two passes, as `tf.nn.moments`: the mean first, then the mean of the
    squared deviations from it.
    """
    mean = synchronized_mean(x)
    return mean, synchronized_mean(tf.math.squared_difference(x, tf.stop_gradient(mean)))


def batch_norm_inference_backward(
    dy: tf.Tensor, x_hat: tf.Tensor, inv_std: tf.Tensor, gamma: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Gradients through batch normalisation with fixed (moving) statistics.

    Mean and var are constants here, so BatchNorm is a per-feature affine
    map: `dx = dy * gamma * inv_std`.

    Args and returns: as `batch_norm_backward`.
    """
    dx = dy * (gamma * inv_std)
    return dx, tf.reduce_sum(dy * x_hat, axis=0), tf.reduce_sum(dy, axis=0)


def _batch_norm_op(backward, epsilon, **options):
    """`batch_norm_forward` with `backward(..., **options)` as its gradient.

    The op takes (x, mean, var, gamma, beta) and returns no gradient for
    mean and var: in training `batch_norm_backward` already follows x through
    them, at inference they are constants.
    """

    @tf.custom_gradient
    def op(x, mean, var, gamma, beta):
        y, x_hat, inv_std = batch_norm_forward(x, mean, var, gamma, beta, epsilon)

        def grad(dy):
            dx, dgamma, dbeta = backward(dy, x_hat, inv_std, gamma, **options)
            return dx, None, None, dgamma, dbeta

        return y, grad

    return op


@keras.saving.register_keras_serializable(package="kbn")
class BatchNorm(keras.layers.Layer):
    """Batch normalisation with a hand-written backward pass.

    While training, normalises each feature with the batch's mean and
    (biased) variance:
    `gamma * (batch - mean(batch)) / sqrt(var(batch) + epsilon) + beta`,
    and updates the moving statistics used at inference, the report's
    exponential average with `alpha = momentum`:
    `moving_mean = moving_mean * momentum + mean(batch) * (1 - momentum)`,
    `moving_var = moving_var * momentum + var(batch) * (1 - momentum)`.
    At inference (or when the layer is frozen, `trainable=False`) it uses
    `gamma * (batch - moving_mean) / sqrt(moving_var + epsilon) + beta`.
    The gradients for x, gamma and beta are written by hand
    (`batch_norm_backward`).

    Under a mixed dtype policy (`mixed_bfloat16`, `mixed_float16`) the layer
    is a float32 island: x is cast to float32, the batch statistics, the
    normalisation, the moving averages and the backward pass's two sums are
    float32, and only the output (and dx) is in the compute dtype, as
    Keras's own `BatchNormalization` does.

    Under a `tf.distribute` strategy with R > 1 replicas, each holding B/R
    examples of a global batch of B, a synchronized layer takes the mean and
    variance over the global batch (the replicas' sums all-reduced), and its
    backward pass all-reduces its two sums, `sum(g)` and `sum(g * x_hat)`:
    R replicas compute exactly what one device computes on the B examples.
    The moving averages, updated from the same global statistics, stay
    identical on every replica.

    Args:
        momentum: float in [0, 1), the report's alpha.
        epsilon: float > 0 added to the variance.
        center: if True, learn the shift beta; otherwise beta = 0.
        scale: if True, learn the scale gamma; otherwise gamma = 1.
        synchronized: statistics over the global batch of all replicas
            (True) or over each replica's own examples (False). None, the
            default: synchronized whenever the strategy has more than one
            replica. Keras's `BatchNormalization` has the same argument.
        beta_initializer: initializer of beta, of shape (D,).
        gamma_initializer: initializer of gamma, of shape (D,).
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tensor of shape (batch, ..., D).
        training: bool, batch statistics (True) or moving ones (False or
            None). Keras sets it in `fit` and `evaluate`.

    Input shape:
        (batch, ..., D); statistics are taken over every axis but the last.

    Output shape:
        Same as the input.

    Reference:
        Ioffe and Szegedy, 2015, https://arxiv.org/abs/1502.03167
    """

    def __init__(
        self,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        synchronized: bool | None = None,
        beta_initializer: str | dict[str, Any] | keras.initializers.Initializer = "zeros",
        gamma_initializer: str | dict[str, Any] | keras.initializers.Initializer = "ones",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"BatchNorm needs 0 <= momentum < 1. Received: momentum={momentum!r}")
        if not epsilon > 0:
            raise ValueError(f"BatchNorm needs epsilon > 0. Received: epsilon={epsilon!r}")
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.synchronized = None if synchronized is None else bool(synchronized)
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)
        self.supports_masking = True
        self._train_op = _batch_norm_op(batch_norm_backward, self.epsilon)
        self._synchronized_op = _batch_norm_op(
            batch_norm_backward, self.epsilon, mean=synchronized_mean
        )
        self._inference_op = _batch_norm_op(batch_norm_inference_backward, self.epsilon)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        dim = (input_shape[-1],)
        self.gamma = (
            self.add_weight(
                name="gamma", shape=dim, initializer=self.gamma_initializer, autocast=False
            )
            if self.scale
            else None
        )
        self.beta = (
            self.add_weight(
                name="beta", shape=dim, initializer=self.beta_initializer, autocast=False
            )
            if self.center
            else None
        )
        # Replicas update the moving statistics together: with "mean" the
        # update is averaged over them (identical updates when synchronized).
        # No autocast, for these or gamma and beta: under a mixed policy the
        # layer reads them in float32 (its float32 island, see `call`).
        self.moving_mean = self.add_weight(
            name="moving_mean",
            shape=dim,
            initializer="zeros",
            trainable=False,
            aggregation="mean",
            autocast=False,
        )
        self.moving_variance = self.add_weight(
            name="moving_variance",
            shape=dim,
            initializer="ones",
            trainable=False,
            aggregation="mean",
            autocast=False,
        )
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: dim[0]})

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        x = tf.cast(inputs, self.compute_dtype)
        folded = x.shape.rank != 2
        if folded:
            x = tf.reshape(x, (-1, x.shape[-1]))  # (N, D)
        # Under a mixed policy the whole layer runs in float32 (statistics,
        # normalisation, both sums of the backward pass) between two casts:
        # x in, y out in the compute dtype. It is element-wise work, a small
        # part of the step beside the matmuls.
        x = tf.cast(x, island_dtype(x.dtype))  # (N, D)
        dim = x.shape[-1]
        gamma = tf.cast(self.gamma, x.dtype) if self.scale else tf.ones(dim, x.dtype)
        beta = tf.cast(self.beta, x.dtype) if self.center else tf.zeros(dim, x.dtype)
        # A frozen layer normalises with its moving statistics, as Keras's own.
        if training and self.trainable:
            if self._synchronizes():
                mean, var = synchronized_moments(x)  # (D,), (D,) over the global batch
                op = self._synchronized_op
            else:
                mean, var = tf.nn.moments(x, axes=[0])  # (D,), (D,); biased var
                op = self._train_op
            self._update_moving_statistics(mean, var)
        else:
            mean = tf.cast(self.moving_mean, x.dtype)
            var = tf.cast(self.moving_variance, x.dtype)
            op = self._inference_op
        if use_autodiff():
            y = batch_norm_forward(x, mean, var, gamma, beta, self.epsilon)[0]
        else:
            y = op(x, mean, var, gamma, beta)
        y = tf.cast(y, self.compute_dtype)
        return tf.reshape(y, tf.shape(inputs)) if folded else y

    def _synchronizes(self) -> bool:
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context is not None else 1
        return replicas > 1 and self.synchronized is not False

    def _update_moving_statistics(self, mean: tf.Tensor, var: tf.Tensor) -> None:
        alpha = self.momentum
        mean = tf.stop_gradient(mean)
        var = tf.stop_gradient(var)
        self.moving_mean.assign(self.moving_mean * alpha + mean * (1.0 - alpha))
        self.moving_variance.assign(self.moving_variance * alpha + var * (1.0 - alpha))

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "synchronized": self.synchronized,
            "beta_initializer": keras.initializers.serialize(self.beta_initializer),
            "gamma_initializer": keras.initializers.serialize(self.gamma_initializer),
        }
