"""MixUp: train on convex combinations of pairs of examples and of their labels.

Zhang et al., 2018 (https://arxiv.org/abs/1710.09412): each mini-batch is
replaced by `x~ = w x + (1 - w) x'` and its loss by
`w L(y, f(x~)) + (1 - w) L(y', f(x~))`, with w drawn from Beta(alpha, alpha)
once per mini-batch. The partner of example n is example B - 1 - n of the
same mini-batch (the batch reversed, as timm pairs them): the batch is already
a random draw, so the pairs are random without a second shuffle.

The cross-entropy is linear in the target, so the mixed loss is exactly the
loss against the mixed labels `w onehot(y) + (1 - w) onehot(y')`, label
smoothing included; the L2 penalty is in both terms and comes out once,
since the weights sum to 1.

w is a stateless function of (seed, epoch, mini-batch): the same for the same
seed, and the same for a resumed run as for an uninterrupted one.
"""

import keras
import tensorflow as tf


def mixup_weight(alpha: float, seed: tf.Tensor, epoch: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
    """The mixing weight w ~ Beta(alpha, alpha) of one mini-batch: float32 ().

    Beta(a, a) is `g1 / (g1 + g2)` for g1, g2 ~ Gamma(a), drawn statelessly
    from (seed, epoch, batch).

    Args:
        alpha: float > 0; small alpha puts w near 0 or 1 (little mixing),
            alpha = 1 draws it uniformly.
        seed: the run's seed, int64 ().
        epoch: the 0-based epoch, int64 ().
        batch: the mini-batch's index in its epoch, int64 ().
    """
    key = tf.random.experimental.stateless_fold_in(
        tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)]), tf.cast(batch, tf.int64)
    )
    g = tf.random.stateless_gamma([2], key, alpha)  # (2,)
    return g[0] / (g[0] + g[1])


def mix(x: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
    """Each example mixed with its partner: `w x + (1 - w) reverse(x)`, (B, ...).

    Integer inputs (raw pixels) are mixed in float32; w is cast to x's dtype.
    """
    if not x.dtype.is_floating:
        x = tf.cast(x, tf.float32)
    w = tf.cast(w, x.dtype)
    return w * x + (1 - w) * tf.reverse(x, axis=[0])


def mixed_loss(
    model: keras.Model, x: tf.Tensor, y: tf.Tensor, y_pred: tf.Tensor, w: tf.Tensor
) -> tf.Tensor:
    """The model's compiled loss against both labels of the mixed batch, weighted: ().

    `w loss(y, y_pred) + (1 - w) loss(reverse(y), y_pred)`, each with the
    model's penalties (which therefore count once).

    Args:
        model: the compiled model.
        x: the mixed inputs (B, ...).
        y: the labels of the unmixed batch (B,).
        y_pred: the model's outputs for x, (B, K).
        w: the mixing weight, ().
    """
    loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
    partner = model.compute_loss(x=x, y=tf.reverse(y, axis=[0]), y_pred=y_pred, training=True)
    w = tf.cast(w, loss.dtype)
    return w * loss + (1 - w) * partner
