"""A plain NumPy reference of the report's network and training protocol.

The report: DD2424 assignment 3, k-layer networks with batch normalization; its network
is 3072-50-30-10 with batch norm.

The speed and accuracy reference for kbn: the report's k-layer net written with NumPy
only, forward and backward side by side (cs231n style), no Keras, no TensorFlow.

    pixels (N, 32, 32, 3) uint8 -> flatten -> / 255 -> minus the training mean
      -> [Dense (no bias) -> BatchNorm -> ReLU] x 2 -> Dense -> softmax cross-entropy

Cost `J = mean cross-entropy + lam * sum_l ||W_l||^2` (kernels only: not biases, not
gamma/beta). Mini-batch SGD with momentum (`v = m v - eta grad; w += v`) on every
trainable parameter, eta decayed per epoch (`eta_e = eta * decay**e`), training
examples shuffled each epoch by a seeded `np.random.Generator`. BatchNorm trains on the
batch mean and the biased batch variance and keeps exponential moving averages
(`avg = alpha avg + (1 - alpha) batch`, alpha 0.99; mean 0 and variance 1 at the start,
as Keras does) for inference.

Protocol (the project's CIFAR-10 reference figures): `run`, or from a shell

    python benchmarks/numpy_reference.py                     # folder CIFAR-10, 20 epochs
    python benchmarks/numpy_reference.py --data synthetic    # random data, same shapes
    python benchmarks/numpy_reference.py --json              # last line: one JSON object

`kbn bench` times it against Keras and kbn on the same data.

Each epoch evaluates the validation split, for its curve. `seconds_per_epoch` times the
training pass alone, `seconds_per_epoch_with_validation` both passes (what kbn's
`seconds_per_epoch` covers); each is the median of the epochs after the first. On a
busy machine with few cores OpenBLAS's threads fight other processes and the time per
epoch swings widely; set `OPENBLAS_NUM_THREADS=1` (before Python starts) for steadier
figures.

>>> from kbn.bench.numpy_reference import gradient_check
>>> gradient_check() < 1e-6
True
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from kbn.bench.numpy_layers import (
    batch_norm_backward,
    batch_norm_forward,
    batch_norm_inference,
    dense_backward,
    dense_forward,
    relu_backward,
    relu_forward,
    softmax_cross_entropy,
)

DEFAULT_LAM = 1.8245e-4
DEFAULT_ETA = 0.0864
DEFAULT_DECAY = 0.8


# ---------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------
class NumpyMLP:
    """The report's k-layer net: [Dense -> BatchNorm -> ReLU] x len(hidden) -> Dense.

    Args:
        hidden: hidden widths, e.g. (50, 30).
        num_classes: K.
        batch_norm: whether to normalise after each hidden Dense (the hidden Dense then
            has no bias: BatchNorm's mean subtraction cancels it).
        init: "he" N(0, 2 / fan_in) or "xavier" N(0, 2 / (fan_in + fan_out)) (Glorot,
            as kbn's `xavier`) for kernels; biases zero, gamma 1, beta 0.
        lam: lambda, the penalty `lam * ||W||^2` on every kernel.
        epsilon: BatchNorm's epsilon.
        momentum_bn: BatchNorm's moving-average alpha.
        gamma_beta: False drops BatchNorm's learnable gamma and beta.
        seed: seeds the init.
        dtype: float32 (fast) or float64 (gradient checks).
        input_dim: D; None builds the weights on the first call with data.
    """

    def __init__(
        self,
        hidden=(50, 30),
        num_classes=10,
        batch_norm=True,
        init="he",
        lam=DEFAULT_LAM,
        epsilon=1e-3,
        momentum_bn=0.99,
        seed=0,
        dtype=np.float32,
        gamma_beta=True,
        input_dim=None,
    ):
        if init not in ("he", "xavier"):
            raise ValueError(f"init must be he or xavier. Received: {init!r}")
        self.hidden = tuple(hidden)
        self.num_classes = int(num_classes)
        self.batch_norm = bool(batch_norm)
        self.init = init
        self.lam = float(lam)
        self.epsilon = float(epsilon)
        self.momentum_bn = float(momentum_bn)
        self.seed = seed
        self.dtype = np.dtype(dtype)
        self.gamma_beta = bool(gamma_beta)
        self.params = None
        if input_dim is not None:
            self.build(input_dim)

    # -- parameters ---------------------------------------------------------------------
    def build(self, input_dim):
        """Make the weights for inputs of width `input_dim`."""
        rng = np.random.default_rng(self.seed)
        widths = [int(input_dim), *self.hidden, self.num_classes]
        self.layers = []  # one dict of parameter names per layer
        self.params = {}
        self.state = {}  # non-trainable: BatchNorm moving averages
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:]), start=1):
            last = i == len(widths) - 1
            var = 2.0 / fan_in if self.init == "he" else 2.0 / (fan_in + fan_out)
            W = rng.normal(0.0, np.sqrt(var), size=(fan_in, fan_out)).astype(self.dtype)
            names = {"W": f"W{i}"}
            self.params[f"W{i}"] = W
            bn = self.batch_norm and not last
            if not bn:
                self.params[f"b{i}"] = np.zeros(fan_out, self.dtype)
                names["b"] = f"b{i}"
            else:
                if self.gamma_beta:
                    self.params[f"gamma{i}"] = np.ones(fan_out, self.dtype)
                    self.params[f"beta{i}"] = np.zeros(fan_out, self.dtype)
                    names["gamma"], names["beta"] = f"gamma{i}", f"beta{i}"
                self.state[f"mean{i}"] = np.zeros(fan_out, self.dtype)
                self.state[f"var{i}"] = np.ones(fan_out, self.dtype)
                names["bn"] = True
            self.layers.append(names)
        self.velocity = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.kernels = [names["W"] for names in self.layers]

    def _ensure_built(self, x):
        if self.params is None:
            self.build(x.shape[1])

    def regularization(self):
        """lam * sum over kernels of ||W||^2, a float."""
        if self.lam == 0.0:
            return 0.0
        total = 0.0
        for k in self.kernels:
            W = self.params[k].ravel()
            total += float(W @ W)
        return self.lam * total

    # -- forward / backward -------------------------------------------------------------
    def forward(self, x, training):
        """Logits of shape (N, K) for inputs x of shape (N, D).

        In training mode the BatchNorms use the batch's statistics; the caches for
        `backward` are kept in `self._caches`. Moving averages are not touched here.
        """
        self._ensure_built(x)
        p = self.params
        caches = []
        batch_stats = []
        h = x
        for i, names in enumerate(self.layers, start=1):
            b = p[names["b"]] if "b" in names else None
            s, dense_cache = dense_forward(h, p[names["W"]], b)
            if i == len(self.layers):
                caches.append((dense_cache, None, None))
                h = s
                break
            bn_cache = None
            if "bn" in names:
                gamma = p.get(names.get("gamma"))
                beta = p.get(names.get("beta"))
                if training:
                    s, mean, var, bn_cache = batch_norm_forward(s, gamma, beta, self.epsilon)
                    batch_stats.append((i, mean, var))
                else:
                    s = batch_norm_inference(
                        s,
                        self.state[f"mean{i}"],
                        self.state[f"var{i}"],
                        gamma,
                        beta,
                        self.epsilon,
                    )
            h, relu_cache = relu_forward(s)
            caches.append((dense_cache, bn_cache, relu_cache))
        self._caches = caches
        self._batch_stats = batch_stats
        return h

    def backward(self, ds):
        """Gradients of the data loss (from logits gradient ds (N, K)) plus the L2 term.

        Returns:
            dict name -> gradient, shapes as the parameters.
        """
        grads = {}
        p = self.params
        n_layers = len(self.layers)
        for i in range(n_layers, 0, -1):
            names = self.layers[i - 1]
            dense_cache, bn_cache, relu_cache = self._caches[i - 1]
            if i < n_layers:
                ds = relu_backward(ds, relu_cache)
                if bn_cache is not None:
                    ds, dgamma, dbeta = batch_norm_backward(ds, bn_cache)
                    if "gamma" in names:
                        grads[names["gamma"]] = dgamma
                        grads[names["beta"]] = dbeta
            ds, dW, db = dense_backward(ds, dense_cache, need_dx=i > 1, has_bias="b" in names)
            if self.lam:
                dW += (2.0 * self.lam) * p[names["W"]]
            grads[names["W"]] = dW
            if db is not None:
                grads[names["b"]] = db
        return grads

    def loss_and_grads(self, x, y):
        """Cost J on the batch (training mode) and its gradients; no parameter change."""
        s = self.forward(x, training=True)
        loss, ds = softmax_cross_entropy(s, y)
        return loss + self.regularization(), self.backward(ds)

    def _update_moving_averages(self):
        a = self.momentum_bn
        for i, mean, var in self._batch_stats:
            m, v = self.state[f"mean{i}"], self.state[f"var{i}"]
            m *= a
            m += (1.0 - a) * mean
            v *= a
            v += (1.0 - a) * var

    # -- training -----------------------------------------------------------------------
    def train_epoch(self, x, y, eta, batch_size=100, momentum=0.9, rng=None):
        """One epoch of mini-batch SGD with momentum over shuffled (x, y).

        Args:
            x: preprocessed inputs of shape (N, D), of the model's dtype.
            y: integer labels of shape (N,).
            eta: learning rate of this epoch.
            batch_size: examples per step; the last, short batch is kept.
            momentum: m in `v = m v - eta grad; w += v`.
            rng: `np.random.Generator` for the shuffle; None keeps the order.

        Returns:
            Mean over the steps of the training cost J (training mode, before each step).
        """
        self._ensure_built(x)
        n = x.shape[0]
        order = rng.permutation(n) if rng is not None else np.arange(n)
        params, velocity = self.params, self.velocity
        eta = self.dtype.type(eta)
        momentum = self.dtype.type(momentum)
        total = 0.0
        steps = 0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            xb = x[idx]  # (B, D) gather: a copy of one batch only
            cost, grads = self.loss_and_grads(xb, y[idx])
            self._update_moving_averages()
            for k, g in grads.items():
                v = velocity[k]
                v *= momentum
                g *= eta
                v -= g
                params[k] += v
            total += cost
            steps += 1
        return total / steps

    # -- inference ----------------------------------------------------------------------
    def predict(self, x, batch_size=10_000):
        """Class scores (logits) of shape (N, K), BatchNorm in inference mode."""
        self._ensure_built(x)
        return np.concatenate(
            [
                self.forward(x[i : i + batch_size], training=False)
                for i in range(0, len(x), batch_size)
            ]
        )

    def accuracy(self, x, y):
        """Fraction of x (N, D) whose argmax prediction equals y (N,)."""
        return float(np.mean(self.predict(x).argmax(axis=1) == y))

    def cost(self, x, y):
        """Cost J (mean cross-entropy + L2) on (x, y), BatchNorm in inference mode."""
        return self.evaluate(x, y)[0]

    def evaluate(self, x, y):
        """(cost J, accuracy) on (x, y) from one inference pass, as a validation does."""
        logits = self.predict(x)
        loss, _ = softmax_cross_entropy(logits, y)
        return loss + self.regularization(), float(np.mean(logits.argmax(axis=1) == y))


def native_child(args, what, **environment):
    """The JSON a Python child process prints last, run with OpenBLAS free to pick its kernel.

    OpenBLAS reads `OPENBLAS_CORETYPE` and `OPENBLAS_L2_SIZE` when it loads,
    so only a new process can run without them.

    Args:
        args: the child's arguments after the Python executable.
        what: what it runs, for the error.
        **environment: variables to set in the child besides.

    Returns:
        the object of the last line the child printed.

    Raises:
        RuntimeError: the child failed, with the end of its error output.
    """
    env = {
        k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    }
    done = subprocess.run(
        [sys.executable, *args],
        env={**env, **environment},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"{what} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------
# Gradient check
# ---------------------------------------------------------------------------------------
def gradient_check(
    hidden=(8, 6),
    num_classes=5,
    dim=20,
    batch_size=10,
    lam=1e-2,
    batch_norm=True,
    gamma_beta=True,
    entries=5,
    h=1e-5,
    seed=0,
    verbose=False,
):
    """Finite-difference check of `NumpyMLP`'s backward pass, in float64.

    Central differences on `entries` random entries of each parameter (all of them
    for small ones) of a small net on random data, with the L2 term on. Gamma and beta
    are set away from 1 and 0 so that their gradients are exercised.

    Returns:
        The max over the checked entries of |g_a - g_n| / max(1e-12, |g_a| + |g_n|).
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch_size, dim))
    y = rng.integers(0, num_classes, size=batch_size)
    net = NumpyMLP(
        hidden,
        num_classes,
        batch_norm=batch_norm,
        lam=lam,
        seed=seed,
        dtype=np.float64,
        gamma_beta=gamma_beta,
        input_dim=dim,
    )
    for k, v in net.params.items():
        if k.startswith(("gamma", "beta", "b")):
            v += rng.normal(scale=0.5, size=v.shape)
    _, grads = net.loss_and_grads(x, y)
    grads = {k: g.copy() for k, g in grads.items()}
    worst = 0.0
    for k, param in net.params.items():
        flat = param.ravel()  # a view
        picks = rng.choice(flat.size, size=min(entries, flat.size), replace=False)
        err_k = 0.0
        for j in picks:
            old = flat[j]
            flat[j] = old + h
            plus, _ = net.loss_and_grads(x, y)
            flat[j] = old - h
            minus, _ = net.loss_and_grads(x, y)
            flat[j] = old
            g_n = (plus - minus) / (2 * h)
            g_a = grads[k].ravel()[j]
            err_k = max(err_k, abs(g_a - g_n) / max(1e-12, abs(g_a) + abs(g_n)))
        if verbose:
            print(f"{k:8s} max rel error {err_k:.3e}")
        worst = max(worst, err_k)
    return float(worst)


# ---------------------------------------------------------------------------------------
# Data and the protocol
# ---------------------------------------------------------------------------------------
def load_arrays(spec, train_size, val_size, data_seed, data_dir=None):
    """(x_train, y_train, x_val, y_val) raw: x uint8 (N, 32, 32, 3), y int64 (N,).

    `synthetic` makes random pixels and labels of CIFAR-10's shapes; anything else goes
    through `kbn.data.load_data`.
    """
    if spec == "synthetic":
        rng = np.random.default_rng(data_seed)
        n = train_size + val_size
        x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, size=n)
        return x[:train_size], y[:train_size], x[train_size:], y[train_size:]
    from kbn.data import load_data

    ds = load_data(
        spec, train_size=train_size, val_size=val_size, seed=data_seed, data_dir=data_dir
    )
    return ds.train.x, ds.train.y, ds.val.x, ds.val.y


def preprocess(x_train, x_val, standardize=False, dtype=np.float32):
    """Flatten, / 255, minus the training mean per feature (and / its std if asked).

    Returns (x_train (N, D), x_val (M, D)) C-contiguous, of `dtype`.
    """
    xt = x_train.reshape(len(x_train), -1).astype(np.float64) / 255.0
    xv = x_val.reshape(len(x_val), xt.shape[1]).astype(np.float64) / 255.0
    mean = xt.mean(axis=0)
    xt -= mean
    xv -= mean
    if standardize:
        std = xt.std(axis=0) + 1e-8
        xt /= std
        xv /= std
    return np.ascontiguousarray(xt, dtype), np.ascontiguousarray(xv, dtype)


def run(
    data="synthetic",
    train_size=10_000,
    val_size=10_000,
    data_seed=0,
    epochs=20,
    eta=DEFAULT_ETA,
    decay=DEFAULT_DECAY,
    lam=DEFAULT_LAM,
    epsilon=1e-3,
    gamma_beta=True,
    standardize=False,
    init="he",
    seed=0,
    batch_size=100,
    momentum=0.9,
    hidden=(50, 30),
    batch_norm=True,
    arrays=None,
    verbose=True,
):
    """Train on the protocol; returns a dict of the results (see `--json`).

    `arrays` = (x_train, y_train, x_val, y_val) raw skips loading (for repeated runs).
    """
    if arrays is None:
        arrays = load_arrays(data, train_size, val_size, data_seed)
    x_train, y_train, x_val, y_val = arrays
    xt, xv = preprocess(x_train, x_val, standardize=standardize)
    num_classes = int(max(y_train.max(), y_val.max() if len(y_val) else 0)) + 1
    net = NumpyMLP(
        hidden,
        num_classes,
        batch_norm=batch_norm,
        init=init,
        lam=lam,
        epsilon=epsilon,
        seed=seed,
        gamma_beta=gamma_beta,
        input_dim=xt.shape[1],
    )
    shuffle_rng = np.random.default_rng([seed, 1])
    costs, val_costs, val_accs, seconds, seconds_with_val = [], [], [], [], []
    for e in range(epochs):
        t0 = time.perf_counter()
        cost = net.train_epoch(xt, y_train, eta * decay**e, batch_size, momentum, shuffle_rng)
        seconds.append(time.perf_counter() - t0)
        costs.append(cost)
        # The validation curve, as the report's figures and kbn's history have it.
        if len(xv):
            val_cost, val_acc = net.evaluate(xv, y_val)
            val_costs.append(val_cost)
            val_accs.append(val_acc)
        seconds_with_val.append(time.perf_counter() - t0)
        if verbose:
            print(
                f"epoch {e + 1:2d}  eta {eta * decay**e:.5f}  train cost {cost:.4f}  "
                f"({seconds[-1]:.3f} s)",
                flush=True,
            )
    train_cost, train_acc = net.evaluate(xt, y_train)
    # The last epoch's validation pass is the final one: the net has not changed since.
    if val_costs:
        val_cost, val_acc = val_costs[-1], val_accs[-1]
    else:
        val_cost, val_acc = net.evaluate(xv, y_val) if len(xv) else (None, None)
    result = {
        "data": data,
        "train_size": len(xt),
        "val_size": len(xv),
        "epochs": epochs,
        "seed": seed,
        "init": init,
        "epsilon": epsilon,
        "gamma_beta": gamma_beta,
        "standardize": standardize,
        "eta": eta,
        "decay": decay,
        "lam": lam,
        "train_costs": costs,
        "val_costs": val_costs,
        "val_accs": val_accs,
        "train_cost": train_cost,
        "val_cost": val_cost,
        "train_acc": train_acc,
        "val_acc": val_acc,
        "seconds_per_epoch": _median_after_first(seconds),
        "seconds_per_epoch_all": seconds,
        # What kbn's seconds_per_epoch covers: the training pass and the validation pass.
        "seconds_per_epoch_with_validation": _median_after_first(seconds_with_val),
    }
    return result


def _median_after_first(seconds):
    """The median of the epochs after the first (warm-up), or of the only one."""
    return statistics.median(seconds[1:] if len(seconds) > 1 else seconds)
