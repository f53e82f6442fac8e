"""The report's network's layers in plain NumPy: each forward pass with its backward pass.

cs231n style: a forward function returns its output and a cache, the backward function
beside it takes the upstream gradient and that cache. `kbn.bench.numpy_reference.NumpyMLP`
stacks them; kbn's own layers (`kbn.nn`) compute the same math in TensorFlow.
"""

from __future__ import annotations

import numpy as np


# ---------------------------------------------------------------------------------------
# Dense: s = x W (+ b)
# ---------------------------------------------------------------------------------------
def dense_forward(x, W, b=None):
    """Affine layer forward.

    Args:
        x: inputs of shape (N, D).
        W: kernel of shape (D, M).
        b: bias of shape (M,), or None for no bias.

    Returns:
        s: outputs of shape (N, M).
        cache: (x, W) for `dense_backward`.
    """
    s = x @ W  # (N, M)
    if b is not None:
        s += b
    return s, (x, W)


def dense_backward(ds, cache, need_dx=True, has_bias=True):
    """Affine layer backward.

    Args:
        ds: upstream gradient of shape (N, M).
        cache: (x (N, D), W (D, M)) from `dense_forward`.
        need_dx: False skips dx (the first layer does not need it).
        has_bias: False returns db None.

    Returns:
        dx (N, D) or None, dW (D, M) = x^T ds, db (M,) = sum_n ds or None.
    """
    x, W = cache
    dW = x.T @ ds  # (D, M)
    db = ds.sum(axis=0) if has_bias else None  # (M,)
    dx = ds @ W.T if need_dx else None  # (N, D)
    return dx, dW, db


# ---------------------------------------------------------------------------------------
# BatchNorm: y = gamma * (x - mean) / sqrt(var + eps) + beta
# ---------------------------------------------------------------------------------------
def batch_norm_forward(x, gamma, beta, epsilon):
    """Batch normalisation forward in training mode (the batch's own statistics).

    Args:
        x: inputs of shape (N, D).
        gamma: scale of shape (D,), or None for no scale (gamma = 1).
        beta: shift of shape (D,), or None for no shift (beta = 0).
        epsilon: float added to the variance.

    Returns:
        y: outputs of shape (N, D).
        mean: batch mean of shape (D,).
        var: biased batch variance of shape (D,).
        cache: (x_hat (N, D), inv_std (D,), gamma) for `batch_norm_backward`.
    """
    mean = x.mean(axis=0)  # (D,)
    xc = x - mean  # (N, D)
    var = np.einsum("nd,nd->d", xc, xc) / x.shape[0]  # (D,), biased
    inv_std = 1.0 / np.sqrt(var + epsilon)  # (D,)
    x_hat = xc * inv_std  # (N, D)
    y = x_hat * gamma if gamma is not None else x_hat.copy()
    if beta is not None:
        y += beta
    return y, mean, var, (x_hat, inv_std, gamma)


def batch_norm_backward(dy, cache):
    """Batch normalisation backward in training mode (the report's BatchNormBackPass).

    Args:
        dy: upstream gradient of shape (N, D).
        cache: (x_hat (N, D), inv_std (D,), gamma (D,) or None) from the forward pass.

    Returns:
        dx (N, D) = inv_std * (g - mean(g) - x_hat * mean(g * x_hat)), g = dy * gamma;
        dgamma (D,) = sum_n dy * x_hat; dbeta (D,) = sum_n dy.
    """
    x_hat, inv_std, gamma = cache
    n = dy.shape[0]
    dbeta = dy.sum(axis=0)  # (D,)
    dgamma = np.einsum("nd,nd->d", dy, x_hat)  # (D,)
    if gamma is None:
        g_sum, gx_sum = dbeta, dgamma
        g = dy
    else:
        g = dy * gamma  # (N, D)
        g_sum, gx_sum = dbeta * gamma, dgamma * gamma
    dx = g - g_sum / n
    dx -= x_hat * (gx_sum / n)
    dx *= inv_std
    return dx, dgamma, dbeta


def batch_norm_inference(x, moving_mean, moving_var, gamma, beta, epsilon):
    """Batch normalisation in inference mode: the moving averages, shapes as above."""
    scale = 1.0 / np.sqrt(moving_var + epsilon)
    if gamma is not None:
        scale = scale * gamma
    shift = -moving_mean * scale
    if beta is not None:
        shift = shift + beta
    return x * scale + shift


# ---------------------------------------------------------------------------------------
# ReLU
# ---------------------------------------------------------------------------------------
def relu_forward(x):
    """ReLU forward: x (N, D) -> (y (N, D), cache = y), in place on x."""
    np.maximum(x, 0, out=x)
    return x, x


def relu_backward(dy, cache):
    """ReLU backward: dy (N, D), cache y (N, D) -> dx (N, D), in place on dy."""
    dy *= cache > 0
    return dy


# ---------------------------------------------------------------------------------------
# Softmax cross-entropy
# ---------------------------------------------------------------------------------------
def softmax_cross_entropy(s, y):
    """Mean softmax cross-entropy and its gradient.

    Args:
        s: logits of shape (N, K).
        y: integer labels of shape (N,).

    Returns:
        loss: float, mean over N of -log softmax(s)[y].
        ds: gradient of the loss w.r.t. s, shape (N, K): (p - onehot(y)) / N.
    """
    n = s.shape[0]
    z = s - s.max(axis=1, keepdims=True)
    p = np.exp(z)
    p_sum = p.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    loss = float(np.mean(np.log(p_sum[:, 0]) - z[rows, y]))
    p /= p_sum
    p[rows, y] -= 1.0
    p /= n
    return loss, p
