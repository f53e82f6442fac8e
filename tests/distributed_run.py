"""One process's share of tests/test_distribute.py: each strategy needs a process of its own.

python tests/distributed_run.py train MODE DTYPE SYNC     -> JSON: per-epoch losses, val accuracy
python tests/distributed_run.py gradients                  -> JSON: BatchNorm gradient errors
"""

import json
import sys

import numpy as np

import kbn
from kbn.data import Dataset, Split
from kbn.training.distribute import make_strategy

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from synthetic import make_images


def train(mode, dtype, sync, logdir):
    strategy = make_strategy(mode, replicas=2)
    x, y = make_images(600, 0, shape=(8, 8, 3))
    data = Dataset(
        "synthetic", Split(x[:500], y[:500]), Split(x[500:], y[500:]), None, ("a", "b", "c")
    )
    with strategy.scope():
        model = kbn.build_mlp([16, 8], 3, adapt=data.train.x, seed=0, dtype=dtype, lam=1e-3)
        for layer in model.layers:
            if isinstance(layer, kbn.BatchNorm):
                layer.synchronized = {"sync": None, "nosync": False}[sync]
    result = kbn.train(
        model, data, kbn.TrainConfig(epochs=3, batch_size=100, logdir=logdir, verbose=0)
    )
    moving = [
        np.asarray(layer.moving_mean).tolist()
        for layer in model.layers
        if isinstance(layer, kbn.BatchNorm)
    ]
    return {
        "loss": result.history["loss"],
        "val_accuracy": result.history["val_accuracy"],
        "moving_mean": moving,
    }


def gradients():
    """Synchronized BatchNorm on 2 replicas: hand-written vs autodiff vs finite differences.

    The loss is `sum(y * w)` over the global batch of 8 examples (4 per
    replica), for a fixed w; gradients with respect to x, gamma, beta.
    """
    import tensorflow as tf

    strategy = make_strategy("mirrored", replicas=2)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3))
    w = rng.normal(size=(8, 3))
    with strategy.scope():
        layer = kbn.BatchNorm(dtype="float64", momentum=0.0)
        layer.build((None, 3))
        layer.gamma.assign(rng.normal(size=3) + 1)
        layer.beta.assign(rng.normal(size=3))

    def replica_loss(x, w, autodiff):
        r = tf.distribute.get_replica_context().replica_id_in_sync_group
        xs, ws = x[4 * r : 4 * r + 4], w[4 * r : 4 * r + 4]
        with tf.GradientTape() as tape:
            tape.watch(xs)
            if autodiff:
                with kbn.nn.autodiff_backward():
                    y = layer(xs, training=True)
            else:
                y = layer(xs, training=True)
            loss = tf.reduce_sum(y * ws)
        dx, dgamma, dbeta = tape.gradient(loss, [xs, layer.gamma, layer.beta])
        return loss, tf.pad(dx, [[4 * r, 4 - 4 * r], [0, 0]]), dgamma, dbeta

    def run(x, autodiff):
        out = strategy.run(replica_loss, args=(tf.constant(x), tf.constant(w), autodiff))
        return [strategy.reduce("SUM", value, axis=None).numpy() for value in out]

    _, *hand = run(x, False)
    _, *auto = run(x, True)
    numeric = [np.zeros_like(x), np.zeros(3), np.zeros(3)]
    h = 1e-5
    for i in np.ndindex(x.shape):
        for sign in (1, -1):
            shifted = x.copy()
            shifted[i] += sign * h
            numeric[0][i] += sign * run(shifted, False)[0] / (2 * h)
    for k, variable in ((1, layer.gamma), (2, layer.beta)):
        value = variable.numpy()
        for j in range(3):
            for sign in (1, -1):
                shifted = value.copy()
                shifted[j] += sign * h
                variable.assign(shifted)
                numeric[k][j] += sign * run(x, False)[0] / (2 * h)
            variable.assign(value)

    def rel(a, b):
        return float(np.linalg.norm(a - b) / max(1e-12, np.linalg.norm(a) + np.linalg.norm(b)))

    return {
        "hand_vs_autodiff": max(rel(a, b) for a, b in zip(hand, auto)),
        "hand_vs_numeric": max(rel(a, b) for a, b in zip(hand, numeric)),
    }


if __name__ == "__main__":
    if sys.argv[1] == "train":
        print(json.dumps(train(*sys.argv[2:6])))
    else:
        print(json.dumps(gradients()))
