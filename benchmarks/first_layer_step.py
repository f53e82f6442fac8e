"""The first layer's share of a training step, piece by piece, in TensorFlow and in NumPy.

    python benchmarks/first_layer_step.py [--rounds 5] [--threads 1]

In `kbn bench`'s net (the report's 3072-50-30-10 with BN, batch 100) the work that grows
with the 3072 inputs is the first layer's: gathering the mini-batch, the forward product,
the kernel's gradient, the L2 penalty of the (3072, 50) kernel and its momentum update.
This runs that chain alone, 100 steps over 10,000 synthetic inputs (an epoch of `kbn
bench`), and adds one piece at a time:

    products, unchained  x = X[batch]; s = x W; dW = x^T ds   (ds computed from s),
                         TensorFlow free to start a step before the last one ends
    products             the same, each step's forward waiting for the last gradient
    + update             v = m v - eta dW; W = W + v
    + penalty            lam ||W||^2 (the cost's term), dW + 2 lam W
    + penalty, folded    instead: lam ||W||^2, and v = v - (eta 2 lam / m) W before the
                         update, which then gives the same v and W without dW + 2 lam W

each as kbn's step runs it (TensorFlow: `MatMul`, `L2Loss`, `Mul`, `AddN`,
`ResourceApplyKerasMomentum` in a `tf.function` loop), as NumPy's reference runs it
(`kbn/bench/numpy_reference.py`: in-place array operations), and in TensorFlow with one
thread per op (`tf.config.threading.set_intra_op_parallelism_threads(1)`; `--threads 1,3,4`
gives a column for each count, more than the cores included). Each runs in a
child process of its own (NumPy with OpenBLAS's own kernel, as `kbn bench` runs it, and
TensorFlow's thread setting holds for a whole process); rounds alternate them.
Prints the median microseconds per step, what each piece adds, and how many of the
machine's cores the process kept busy meanwhile (its CPU time over the wall time: a
thread that spins while it waits counts as busy).
"""

import argparse
import json
import statistics
import time

N_TRAIN, D, M, BATCH = 10_000, 3072, 50, 100
LAM, ETA, MOMENTUM = 1.8245e-4, 1e-3, 0.9
PIECES = ("products, unchained", "products", "+ update", "+ penalty", "+ penalty, folded")
# What each piece adds to: the one before, or "+ update" for the folded penalty.
BASE = {"+ update": "products", "+ penalty": "+ update", "+ penalty, folded": "+ update"}
SETTINGS = {  # piece -> (update, penalty, folded, chained)
    "products, unchained": (False, False, False, False),
    "products": (False, False, False, True),
    "+ update": (True, False, False, True),
    "+ penalty": (True, True, False, True),
    "+ penalty, folded": (True, True, True, True),
}
REPEATS = 9  # epochs per piece in each child, interleaved; the median is kept


def data():
    """(X (N_TRAIN, D), W (D, M), ds0 (BATCH, M), the epoch's shuffled order (N_TRAIN,))."""
    import numpy as np

    rng = np.random.default_rng(0)
    return (
        rng.standard_normal((N_TRAIN, D), dtype=np.float32),
        rng.standard_normal((D, M), dtype=np.float32) * 0.02,
        rng.standard_normal((BATCH, M), dtype=np.float32),
        rng.permutation(N_TRAIN),
    )


def numpy_epochs():
    """{piece: seconds of each epoch} of the chain in NumPy, as its reference computes it."""
    import numpy as np

    X, W0, ds0, order = data()
    m, eta, c = np.float32(MOMENTUM), np.float32(ETA), np.float32(2 * LAM)

    def epoch(update, penalty, folded, chained):
        # NumPy runs one operation after the other: every step is chained.
        W, v = W0.copy(), np.zeros_like(W0)
        cost = 0.0
        for start in range(0, N_TRAIN, BATCH):
            x = X[order[start : start + BATCH]]
            s = x @ W
            dW = x.T @ (ds0 + 1e-6 * s)
            if penalty:
                w = W.ravel()
                cost += LAM * float(w @ w)
                if folded:
                    v -= (eta * c / m) * W
                else:
                    dW += c * W
            if update:
                v *= m
                dW *= eta
                v -= dW
                W += v
        return cost

    return _timed({p: (lambda s=SETTINGS[p]: epoch(*s)) for p in PIECES})


def tensorflow_epochs(threads):
    """{piece: seconds of each epoch} of the chain in TensorFlow, with kbn's ops.

    Args:
        threads: TensorFlow's threads per op, 0 for its default (one per core).
    """
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    X, W0, ds0, order = (tf.constant(a) for a in data())
    W, v = tf.Variable(W0), tf.Variable(tf.zeros_like(W0))
    c = tf.constant(2 * LAM)

    def epoch(update, penalty, folded, chained):
        @tf.function
        def run():
            cost, last = tf.constant(0.0), tf.constant(0.0)
            for i in tf.range(N_TRAIN // BATCH):
                x = tf.gather(X, order[i * BATCH : (i + 1) * BATCH])
                # A step's forward waits for the last step's gradient, as the
                # update makes it wait for the kernel in training.
                with tf.control_dependencies([last] if chained else []):
                    s = tf.matmul(x, W)
                dW = tf.matmul(x, ds0 + 1e-6 * s, transpose_a=True)
                last = dW[0, 0]
                if penalty:
                    # kbn.nn.L2Penalty's value and the gradient the tape gives it.
                    cost += c * tf.nn.l2_loss(W)
                if penalty and folded:
                    tf.raw_ops.ResourceApplyGradientDescent(
                        var=v.handle, alpha=ETA * c / MOMENTUM, delta=W.read_value()
                    )
                elif penalty:
                    dW = tf.add_n([dW, c * W])
                if update:
                    tf.raw_ops.ResourceApplyKerasMomentum(
                        var=W.handle,
                        accum=v.handle,
                        lr=tf.constant(ETA),
                        grad=dW,
                        momentum=tf.constant(MOMENTUM),
                    )
            return cost + last

        def reset_and_run():
            W.assign(W0)
            v.assign(tf.zeros_like(W0))
            return run().numpy()

        return reset_and_run

    epochs = {p: epoch(*SETTINGS[p]) for p in PIECES}
    for f in epochs.values():
        f()  # tracing
    return _timed(epochs)


def _timed(epochs):
    """{piece: (median seconds of an epoch, median cores busy: CPU time / wall time)}."""
    seconds, cores = {p: [] for p in epochs}, {p: [] for p in epochs}
    for _ in range(REPEATS):
        for p, f in epochs.items():
            start, cpu = time.perf_counter(), time.process_time()
            f()
            wall = time.perf_counter() - start
            seconds[p].append(wall)
            cores[p].append((time.process_time() - cpu) / wall)
    return {p: (statistics.median(seconds[p]), statistics.median(cores[p])) for p in epochs}


def child(kind):
    """{piece: (microseconds per step, cores busy)} from a child process running `kind`."""
    from kbn.bench.numpy_reference import native_child

    return native_child([__file__, "--child", kind], kind, TF_CPP_MIN_LOG_LEVEL="2")


def kinds(threads):
    """{column: child kind}: NumPy, TensorFlow as kbn, TensorFlow with each of `threads`."""
    return {
        "NumPy (OpenBLAS)": "numpy",
        "TensorFlow, as kbn": "tensorflow",
        **{f"TensorFlow, {n} thread{'s' * (n > 1)} per op": f"tensorflow-{n}" for n in threads},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1],
        help="TensorFlow's threads per op for the last columns, e.g. 1,3,4 (default: 1)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        steps = N_TRAIN // BATCH
        seconds = (
            numpy_epochs()
            if args.child == "numpy"
            else tensorflow_epochs(int(args.child.partition("-")[2] or 0))
        )
        print(json.dumps({p: (s / steps * 1e6, c) for p, (s, c) in seconds.items()}))
        return
    columns = kinds(args.threads)
    runs = {name: {p: [] for p in PIECES} for name in columns}
    busy = {name: {p: [] for p in PIECES} for name in columns}
    for _ in range(args.rounds):
        for name, kind in columns.items():
            for p, (us, cores) in child(kind).items():
                runs[name][p].append(us)
                busy[name][p].append(cores)
    us = {name: {p: statistics.median(v) for p, v in r.items()} for name, r in runs.items()}
    print(
        f"the first layer's chain, ({BATCH}, {D}) by ({D}, {M}), {N_TRAIN // BATCH} steps; "
        f"median of {args.rounds} rounds: microseconds per step (what the piece adds), "
        "cores busy (CPU time / wall time)\n"
    )
    print("| piece | " + " | ".join(columns) + " |")
    print("| --- |" + " --- |" * len(columns))
    for p in PIECES:
        cells = []
        for name in columns:
            added = us[name][p] - us[name][BASE[p]] if p in BASE else None
            cells.append(
                f"{us[name][p]:.0f}"
                + (f" ({added:+.0f})" if added is not None else "")
                + f", {statistics.median(busy[name][p]):.2f}"
            )
        print(f"| {p} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
