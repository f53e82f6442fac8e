"""Gradient checking: hand-written vs autodiff vs numerical gradients.

For every trainable weight of a model made of kbn layers (and Keras
built-ins between them) the gradient of the cost of the report (DD2424
assignment 3: k-layer networks with batch normalization)
`J = mean cross-entropy + sum of the model's penalties` is computed three
ways, all in float64 and on the same batch in training mode:

    (a) hand:     tf.GradientTape through kbn's hand-written backward passes,
    (b) autodiff: tf.GradientTape through the same forward math with the
                  custom gradients off (`kbn.nn.autodiff_backward`),
    (c) numeric:  centred finite differences (J(w + h) - J(w - h)) / (2 * h),
                  entry by entry.

and compared with the report's formula (1),
`|g_a - g_n| / max(eps, |g_a| + |g_n|)`, taken over the whole weight (|.| the
Euclidean norm; this is the report's table) and entry by entry (the maximum
over entries, strict but bounded by the finite differences' own noise).
Below 1e-7 is good, above 1e-2 is wrong. The model's weights and moving
statistics are never changed: every evaluation goes through
`Model.stateless_call`.
"""

import dataclasses
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kbn._quiet import tensorflow_warnings_off
from kbn.data import load_data
from kbn.errors import KbnError
from kbn.nn import BatchNorm, Dense, autodiff_backward
from kbn.nn import builder as model_lib

DEFAULT_H = 1e-5
KINK_TOLERANCE = 1e-8
DEFAULT_EPS = 1e-12  # the report takes 0; a floor keeps 0 / 0 (dead units) at 0


def relative_error(a: np.ndarray, b: np.ndarray, eps: float = DEFAULT_EPS) -> float:
    """The report's formula (1) for two gradients of one weight.

    `|g_a - g_n| / max(eps, |g_a| + |g_n|)` with |.| the Euclidean norm
    over the weight's entries.

    Args:
        a, b: arrays of the same shape.
        eps: floor of the denominator.

    Returns:
        float.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(eps, np.linalg.norm(a) + np.linalg.norm(b)))


def max_entry_error(a: np.ndarray, b: np.ndarray, eps: float = DEFAULT_EPS) -> float:
    """Formula (1) entry by entry, the maximum over entries.

    Strict but noise-bound: centred differences in float64 resolve a
    gradient entry to about 1e-11, so an entry below 1e-5 can show an error
    above 1e-6 even when the backward pass is exact.

    Args:
        a, b: arrays of the same shape.
        eps: floor of each denominator.

    Returns:
        float, `max(|a - b| / max(eps, |a| + |b|))`.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(eps, np.abs(a) + np.abs(b)), initial=0.0))


@dataclasses.dataclass(frozen=True)
class ParamCheck:
    """One weight's three gradients and how far apart they are.

    Attributes:
        param: report-style name (W1, b1, gamma1, beta1, W2, ...).
        shape: the weight's shape.
        hand, autodiff, numeric: the three gradients, each of `shape`.
        rel_error: formula (1), hand vs numeric: the report's table entry.
        max_entry_error: formula (1) entry by entry, hand vs numeric, the
            maximum over entries.
        rel_error_autodiff: formula (1), hand vs autodiff.
        kinks: entries whose difference quotient crossed a ReLU kink and
            was taken with a tenfold smaller step.
    """

    param: str
    shape: tuple[int, ...]
    hand: np.ndarray
    autodiff: np.ndarray
    numeric: np.ndarray
    rel_error: float
    max_entry_error: float
    rel_error_autodiff: float
    kinks: int


def param_names(model: keras.Model) -> list[str]:
    """Report-style names for the model's trainable weights, in order.

    The i-th dense layer (kbn or Keras) gives Wi and bi, a batch norm after
    it gives gammai and betai; any other layer's weights keep
    `layer/weight`.

    Returns:
        list of str, one per `model.trainable_weights` entry.
    """
    names = {}
    index = 0
    for layer in model.layers:
        if isinstance(layer, (Dense, keras.layers.Dense)):
            index += 1
        for weight in layer.trainable_weights:
            short = weight.name.split("/")[-1]
            if isinstance(layer, (Dense, keras.layers.Dense)):
                label = {"kernel": "W", "bias": "b"}.get(short)
            elif isinstance(layer, (BatchNorm, keras.layers.BatchNormalization)):
                label = short if short in ("gamma", "beta") else None
            else:
                label = None
            names[id(weight)] = f"{label}{index}" if label else f"{layer.name}/{short}"
    return [names[id(w)] for w in model.trainable_weights]


def as_dtype(model: keras.Model, dtype: str) -> keras.Model:
    """The same model (same weights and statistics) computing in `dtype`.

    Returns `model` itself when its weights already are of `dtype`;
    otherwise a clone whose layers all have that dtype.
    """
    if all(w.dtype == dtype for w in model.weights):
        return model

    def clone_layer(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": dtype})

    try:
        clone = keras.models.clone_model(model, clone_function=clone_layer)
    except Exception as exc:  # subclassed models cannot be cloned from config
        raise KbnError(
            f"cannot make a {dtype} copy of model {model.name!r} ({exc}); "
            f"build it with dtype={dtype!r} instead"
        ) from exc
    clone.set_weights([np.asarray(w, dtype) for w in model.get_weights()])
    return clone


def _loss_in(loss, dtype):
    """The model's loss computing in `dtype` (Keras losses cast to floatx)."""
    loss = keras.losses.get(loss)
    if not isinstance(loss, keras.losses.Loss):
        return loss  # a plain function computes in the logits' dtype
    try:
        return type(loss).from_config({**loss.get_config(), "dtype": dtype})
    except TypeError as exc:
        raise KbnError(
            f"cannot run the loss {loss.name!r} in {dtype} for the gradient check: {exc}"
        ) from exc


def _cost_function(model, x, y):
    """J(trainable weights) on (x, y), without side effects.

    Returns:
        a function from a list of tensors (one per trainable weight) to the
        scalar cost: the model's loss plus its penalties (model.losses).
    """
    loss_fn = _loss_in(getattr(model, "loss", None) or model_lib.loss(), x.dtype)
    non_trainable = [tf.convert_to_tensor(v) for v in model.non_trainable_variables]

    def cost(trainable):
        logits, _, penalties = model.stateless_call(
            trainable, non_trainable, x, training=True, return_losses=True
        )
        total = loss_fn(y, logits)
        return total + tf.add_n(penalties) if penalties else total

    return cost


def _tape_gradients(cost, params):
    with tf.GradientTape() as tape:
        tape.watch(params)
        value = cost(params)
    return [
        g.numpy() if g is not None else np.zeros(p.shape)
        for g, p in zip(tape.gradient(value, params), params)
    ]


def _numeric_gradient(cost, params, i, h, entries):
    """Centred differences for the given entries of params[i], in one graph.

    A ReLU kink within h of the weight bends a difference quotient
    (cs231n's "kinks in the objective"). Each entry is therefore also
    differenced with h / 10: where the two quotients disagree by more than
    rounding noise can explain, a kink lies within h, and the smaller step's
    value is taken. The loop over entries runs inside one `tf.function`, so
    P entries cost 4P forward passes and no Python per entry.

    Args:
        entries: int array of flat indices into params[i], shape (P,).

    Returns:
        grad: array of params[i].shape, NaN at the entries not checked.
        kinks: how many entries fell back to the smaller step.
    """
    shape = params[i].shape
    flat = tf.reshape(params[i], [-1])
    entries = tf.constant(entries, tf.int32)

    def quotient(entry, step):
        def cost_at(delta):
            moved = tf.tensor_scatter_nd_add(flat, [[entry]], [delta])
            return cost([*params[:i], tf.reshape(moved, shape), *params[i + 1 :]])

        return (cost_at(step) - cost_at(-step)) / (2 * step)

    @tf.function
    def all_entries():
        grads = tf.TensorArray(flat.dtype, size=tf.size(entries))
        kinks = tf.constant(0)
        step = tf.constant(h, flat.dtype)
        for k in tf.range(tf.size(entries)):
            entry = entries[k]
            coarse = quotient(entry, step)
            fine = quotient(entry, step / 10)
            # Rounding noise of `fine` is about 1e-16 * J / (h / 10): far below this.
            kink = tf.abs(coarse - fine) > KINK_TOLERANCE * (1 + tf.abs(fine))
            grads = grads.write(k, tf.where(kink, fine, coarse))
            kinks += tf.cast(kink, tf.int32)
        return grads.stack(), kinks

    with tensorflow_warnings_off():  # one graph per weight is the design
        values, kinks = all_entries()
    grad = np.full(shape, np.nan)
    grad.flat[entries.numpy()] = values.numpy()
    return grad, int(kinks)


def check_gradients(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    dtype: str = "float64",
    h: float = DEFAULT_H,
    eps: float = DEFAULT_EPS,
    max_entries: int | None = None,
    seed: int = 0,
) -> list[ParamCheck]:
    """Compare hand-written, autodiff and numerical gradients of every weight.

    The model runs in training mode (batch statistics); the hand-written
    and autodiff gradients are computed in `dtype`, the numerical ones always
    in float64. The model's own weights and moving statistics are left as
    they were. Randomness such as
    dropout is frozen: every evaluation sees the same seed state.

    Args:
        model: a Keras model built of kbn layers and Keras built-ins, e.g. from
            `build_mlp`; compiled (its loss is used) or not (softmax
            cross-entropy on logits).
        x: a batch of inputs of shape (N, ...).
        y: integer labels of shape (N,).
        dtype: "float64", or "float32" to see what single precision costs.
        h: finite-difference step.
        eps: floor of formula (1)'s denominator.
        max_entries: check at most this many entries of each weight, drawn
            at random (cs231n's sparse check) for big weights; None checks
            every entry. Errors are then over the drawn entries.
        seed: seeds the draw.

    Returns:
        list of `ParamCheck`, one per trainable weight, in the model's order.

    >>> for c in check_gradients(model, x[:20], y[:20]):
    ...     print(c.param, c.rel_error)
    """
    if len(x) == 0:
        raise KbnError("gradient check needs a batch of at least one example. Received: 0")
    y = tf.constant(np.asarray(y))
    analytic = as_dtype(model, dtype)
    cost = _cost_function(analytic, tf.constant(np.asarray(x), dtype), y)
    params = [tf.convert_to_tensor(v) for v in analytic.trainable_variables]
    hand = _tape_gradients(cost, params)
    with autodiff_backward():
        reference = _tape_gradients(cost, params)
    model = as_dtype(model, "float64")
    cost = _cost_function(model, tf.constant(np.asarray(x), tf.float64), y)
    params = [tf.convert_to_tensor(v) for v in model.trainable_variables]
    rng = np.random.default_rng(seed)
    checks = []
    for i, name in enumerate(param_names(model)):
        size = int(np.prod(params[i].shape))
        entries = np.arange(size)
        if max_entries is not None and size > max_entries:
            entries = np.sort(rng.choice(size, max_entries, replace=False))
        numeric, kinks = _numeric_gradient(cost, params, i, h, entries)
        checked = np.isin(np.arange(size), entries).reshape(params[i].shape)
        checks.append(
            ParamCheck(
                param=name,
                shape=tuple(params[i].shape),
                hand=hand[i],
                autodiff=reference[i],
                numeric=numeric,
                rel_error=relative_error(hand[i][checked], numeric[checked], eps),
                max_entry_error=max_entry_error(hand[i][checked], numeric[checked], eps),
                rel_error_autodiff=relative_error(hand[i], reference[i], eps),
                kinks=kinks,
            )
        )
    return checks


def check_inputs(
    n: int,
    dim: int,
    *,
    spec: str | None = None,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, int]:
    """A batch for the report's table: n examples, their first `dim` features.

    Args:
        n: number of examples (the largest batch size).
        dim: input features kept; the report's check on a reduced input.
        spec: a data SPEC to take the first training examples of; None draws
            random 8-bit pixels and labels of 10 classes.
        data_dir: where the data set's files are.
        seed: seeds the split or the draw.

    Returns:
        x of shape (n, dim), y of shape (n,), the number of classes.
    """
    if spec:
        dataset = load_data(spec, val_size=0, seed=seed, data_dir=data_dir)
        x, y, classes = dataset.train.x[:n], dataset.train.y[:n], dataset.num_classes
    else:
        rng = np.random.default_rng(seed)
        x, y, classes = rng.integers(0, 256, (n, dim)), rng.integers(0, 10, n), 10
    return np.asarray(x).reshape(len(x), -1)[:, :dim], y, classes


def gradient_table(
    x: np.ndarray,
    y: np.ndarray,
    *,
    hidden: Sequence[int] = (50,),
    batch_sizes: Sequence[int] = (10, 20, 30),
    batch_norm: bool = True,
    lam: float = 0.0,
    num_classes: int | None = None,
    dtype: str = "float64",
    seed: int = 0,
    eps: float = DEFAULT_EPS,
    max_entries: int | None = None,
    **renamed: float,
) -> list[dict[str, Any]]:
    """The report's gradient-check table: one k-layer net, several batch sizes.

    For each batch size n, a float64 `build_mlp` net (mean from the first n
    examples) is checked on the first n examples of (x, y).

    Args:
        x: inputs of shape (N, ...), N >= max(batch_sizes).
        y: integer labels of shape (N,).
        hidden: hidden widths; (50,) is the report's 2-layer net.
        batch_sizes: positive ints.
        batch_norm, lam: as `build_mlp`; the report checks without L2.
        num_classes: width of the logits; default max(y) + 1 (at least 2).
        dtype: of the hand-written and autodiff gradients (see
            `check_gradients`).
        seed: seeds the weights, the same net for every batch size.
        eps: floor of formula (1)'s denominator.
        max_entries: entries drawn per weight; None checks every entry.
        **renamed: `l2`, the old name of `lam`, accepted with a
            DeprecationWarning.

    Returns:
        list of row dicts, one per (batch size, weight): batch_size, param,
        rel_error, max_entry_error, rel_error_autodiff, kinks.
    """
    if set(renamed) - {"l2"}:
        raise TypeError(
            f"gradient_table() got an unexpected keyword argument {sorted(renamed)[0]!r}"
        )
    if "l2" in renamed:
        warnings.warn(
            "gradient_table's l2= is now lam=; l2= goes in kbn 0.3",
            DeprecationWarning,
            stacklevel=2,
        )
        lam = renamed["l2"]
    batch_sizes = list(batch_sizes)
    if not batch_sizes or any(n < 1 for n in batch_sizes):
        raise KbnError(f"batch sizes must be positive integers. Received: {batch_sizes}")
    if max(batch_sizes) > len(x):
        raise KbnError(
            f"batch size {max(batch_sizes)} needs that many examples; the data has {len(x)}"
        )
    y = np.asarray(y)
    num_classes = num_classes or max(2, int(y.max()) + 1)
    rows = []
    for n in batch_sizes:
        net = model_lib.build_mlp(
            hidden,
            num_classes,
            batch_norm=batch_norm,
            lam=lam,
            adapt=x[:n],
            dtype="float64",
            seed=seed,
        )
        checks = check_gradients(
            net, x[:n], y[:n], dtype=dtype, eps=eps, max_entries=max_entries, seed=seed
        )
        for check in checks:
            rows.append(
                {
                    "batch_size": n,
                    "param": check.param,
                    "rel_error": check.rel_error,
                    "max_entry_error": check.max_entry_error,
                    "rel_error_autodiff": check.rel_error_autodiff,
                    "kinks": check.kinks,
                }
            )
    return rows


def format_table(rows: Sequence[Mapping[str, Any]], key: str = "rel_error") -> str:
    """Rows of `gradient_table` as the report's markdown table.

    One line per batch size, one column per weight, in the report's
    notation (`Relative Error W1`).

    Returns:
        str, a markdown table.
    """
    params = list(dict.fromkeys(row["param"] for row in rows))
    sizes = list(dict.fromkeys(row["batch_size"] for row in rows))
    cell = {(row["batch_size"], row["param"]): row[key] for row in rows}
    lines = [
        "| Batch size | " + " | ".join(f"Relative Error {p}" for p in params) + " |",
        "|---" * (len(params) + 1) + "|",
    ]
    for n in sizes:
        values = (f"{cell[n, p]:.4e}" if (n, p) in cell else "" for p in params)
        lines.append(f"| {n} | " + " | ".join(values) + " |")
    return "\n".join(lines)
