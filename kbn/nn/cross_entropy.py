"""SoftmaxCrossEntropy: the loss `l = -sum_k t_k log softmax(s)_k`, its backward pass by hand.

The forward pass and, right under it, the backward pass are plain functions,
joined by a `tf.custom_gradient` op as `Dense` and `BatchNorm` are. The
backward pass is `P - T`: the gradient at the scores is the predicted
probabilities minus the targets.

Keras's own cross-entropy gives the same numbers, but under TensorFlow's op
determinism (which `kbn.train` turns on) TensorFlow builds it from a log-softmax, a
gather by the labels and checks on them, and differentiates all of these: several
times the ops of this pair, which the training step pays at every mini-batch
(docs/performance.md has the count and the time).
"""

from typing import Any

import keras
import tensorflow as tf

from kbn.nn.autodiff import use_autodiff

# --------------------------------------------------------------------------
# Softmax cross-entropy: l_n = -sum_k t_nk log p_nk, p_n = softmax(s_n)
# --------------------------------------------------------------------------


def cross_entropy_forward(s: tf.Tensor, t: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Cross-entropy of each example's softmax against its target distribution.

    Args:
        s: scores (logits) of shape (N, K).
        t: targets of shape (N, K), each row summing to 1 (one-hot labels,
            or smoothed ones).

    Returns:
        l: losses of shape (N,): `-sum_k t_nk log p_nk`.
        log_p: log-probabilities `log softmax(s)` of shape (N, K), kept for
            the backward pass.
    """
    log_p = tf.nn.log_softmax(s)  # (N, K), computed as s - logsumexp(s): no overflow
    return -tf.reduce_sum(t * log_p, axis=-1), log_p


def cross_entropy_backward(dl: tf.Tensor, log_p: tf.Tensor, t: tf.Tensor) -> tf.Tensor:
    """Gradient of the losses with respect to the scores: `ds = dl (P - T)`.

    Args:
        dl: gradient with respect to each example's loss, of shape (N,)
            (`1/N` for the batch mean).
        log_p: the forward pass's log-probabilities, of shape (N, K).
        t: the targets, of shape (N, K).

    Returns:
        ds: gradient with respect to the scores, of shape (N, K).
    """
    return dl[:, None] * (tf.exp(log_p) - t)


def smoothed_targets(
    y: tf.Tensor, num_classes: int, label_smoothing: float, dtype: tf.DType
) -> tf.Tensor:
    """Targets `t = (1 - e) onehot(y) + e / K` of integer labels y (N,): (N, K).

    e = 0 gives the one-hot labels (Szegedy et al., 2016, for e > 0).
    """
    e, k = label_smoothing, num_classes
    return tf.one_hot(y, k, on_value=1.0 - e + e / k, off_value=e / k, dtype=dtype)


@tf.custom_gradient
def _cross_entropy_op(s, t):
    """`cross_entropy_forward` with `cross_entropy_backward` as its gradient (none for t)."""
    loss, log_p = cross_entropy_forward(s, t)

    def grad(dl):
        return cross_entropy_backward(dl, log_p, t), None

    return loss, grad


@keras.saving.register_keras_serializable(package="kbn")
class SoftmaxCrossEntropy(keras.losses.Loss):
    """Softmax cross-entropy of logits against integer labels, optionally smoothed.

    `-sum_k t_k log p_k` with `p = softmax(logits)` and
    `t = (1 - e) onehot(y) + e / K`; e = 0 (the default) is the report's
    loss, `-log p_y`, as Keras's `SparseCategoricalCrossentropy(from_logits=True)`.
    Its gradient `P - T` is written by hand (`cross_entropy_backward`);
    inside `kbn.nn.autodiff_backward()` TensorFlow differentiates the
    forward pass instead. Keras reduces the losses (the batch mean, by
    default) and applies sample weights.

    Args:
        label_smoothing: float in [0, 1), e: the target puts 1 - e on the
            true class and spreads e evenly over all K classes.
        name: the loss's name.
        **kwargs: `keras.losses.Loss` arguments (`reduction`, `dtype`).

    Call arguments:
        y_true: integer labels of shape (N,) or (N, 1), in [0, K). A label
            outside gives a row of targets e / K that does not sum to 1, a
            wrong loss and no error: kbn's data sets refuse such labels when
            they load (`kbn.data`).
        y_pred: logits of shape (N, K).
    """

    def __init__(
        self, label_smoothing: float = 0.0, name: str = "softmax_cross_entropy", **kwargs: Any
    ) -> None:
        super().__init__(name=name, **kwargs)
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1). Received: {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        # Keras hands the labels over in the loss's float dtype.
        labels = tf.cast(tf.reshape(y_true, (-1,)), tf.int32)  # (N,)
        t = smoothed_targets(labels, y_pred.shape[-1], self.label_smoothing, y_pred.dtype)
        if use_autodiff():
            return cross_entropy_forward(y_pred, t)[0]
        return _cross_entropy_op(y_pred, t)  # (N,)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="kbn")
class SmoothedCrossentropy(SoftmaxCrossEntropy):
    """The smoothed loss's earlier name, kept so that models saved with it load."""

    def __init__(self, label_smoothing: float, name: str = "smoothed_crossentropy", **kwargs: Any):
        super().__init__(label_smoothing, name=name, **kwargs)
