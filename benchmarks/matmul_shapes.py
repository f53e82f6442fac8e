"""The report's net's two large matrix products, in TensorFlow (oneDNN) and in NumPy (OpenBLAS).

    python benchmarks/matmul_shapes.py

The first layer of `kbn bench`'s net (3072 inputs, 50 units, batch 100) does two products
per step that are most of its arithmetic: the forward `s = x W`, (100, 3072) by
(3072, 50), and the kernel's gradient `dW = x^T ds`, (3072, 100) by (100, 50). (The
gradient for x is not needed in the first layer; TensorFlow prunes it, NumPy's reference
skips it.) Times each in a `tf.function` loop of 2,000 products, as kbn's compiled loop
runs them, and in a NumPy loop in a child process with OpenBLAS's own kernel (as
`kbn bench` runs NumPy), the two alternating, 8 rounds. Prints the median microseconds
per product.
"""

import argparse
import statistics
import time

N, D, M = 100, 3072, 50
PRODUCTS = 2000

NUMPY_CHILD = """
import json, sys, time
import numpy as np
rng = np.random.default_rng(0)
x = rng.standard_normal(({n}, {d}), dtype=np.float32)
W = rng.standard_normal(({d}, {m}), dtype=np.float32)
ds = rng.standard_normal(({n}, {m}), dtype=np.float32)
out = {{}}
for name, f in (("forward x W", lambda: x @ W), ("gradient x^T ds", lambda: x.T @ ds)):
    start = time.perf_counter()
    for _ in range({products}):
        f()
    out[name] = (time.perf_counter() - start) / {products} * 1e6
print(json.dumps(out))
"""


def numpy_round():
    """{product: microseconds} from one NumPy child process, OpenBLAS choosing its kernel."""
    from kbn.bench.numpy_reference import native_child

    code = NUMPY_CHILD.format(n=N, d=D, m=M, products=PRODUCTS)
    return native_child(["-c", code], "the NumPy products")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()

    import tensorflow as tf

    x = tf.random.stateless_normal((N, D), seed=[0, 1])
    W = tf.random.stateless_normal((D, M), seed=[0, 2])
    ds = tf.random.stateless_normal((N, M), seed=[0, 3])

    def timed_loop(product):
        @tf.function(autograph=False)
        def loop():
            # Each product feeds the sum, so none is pruned; the sum is one scalar add.
            return tf.while_loop(
                lambda i, total: i < PRODUCTS,
                lambda i, total: (i + 1, total + product()[0, 0]),
                (tf.constant(0), tf.constant(0.0)),
            )

        loop()  # trace

        def run():
            start = time.perf_counter()
            loop()
            return (time.perf_counter() - start) / PRODUCTS * 1e6

        return run

    tensorflow = {
        "forward x W": timed_loop(lambda: tf.matmul(x, W)),
        "gradient x^T ds": timed_loop(lambda: tf.matmul(x, ds, transpose_a=True)),
    }
    times = {(lib, name): [] for lib in ("TensorFlow", "NumPy") for name in tensorflow}
    for _ in range(args.rounds):
        for name, run in tensorflow.items():
            times["TensorFlow", name].append(run())
        for name, micros in numpy_round().items():
            times["NumPy", name].append(micros)
    print(f"x ({N}, {D}), W ({D}, {M}), ds ({N}, {M}), float32: median microseconds per product\n")
    print("| product | TensorFlow | NumPy | TensorFlow / NumPy |")
    print("| --- | --- | --- | --- |")
    for name in tensorflow:
        ours = statistics.median(times["TensorFlow", name])
        theirs = statistics.median(times["NumPy", name])
        print(f"| {name} | {ours:.0f} | {theirs:.0f} | {ours / theirs:.2f}x |")


if __name__ == "__main__":
    main()
