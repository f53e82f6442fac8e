"""XLA on the per-step math of the report's net: kbn's loop against the same step jit-compiled.

    python benchmarks/xla_step.py --data folder:../shared/data/cifar10-jpeg/train

`kbn bench`'s kbn net (3072-50-30-10 with BN, the report's lambda, batch 100, float32) and
one model, trained by four loops in turn, an epoch each, so that the machine's slow
spells hit all four:

    kbn        kbn's compiled loop (`TrainingLoop`, as `kbn train` runs it)
    step       one `tf.function` over the epoch's mini-batches, each step kbn's
               `train_step` (the model's loss, tape and optimizer), as a user writes it
    xla step   the same, with the step compiled by XLA (`tf.function(jit_compile=True)`
               around `train_step`, inside the loop): XLA fuses the step's element-wise
               ops into a few kernels, where TensorFlow's executor schedules each op
    xla tail   the same step with XLA on all but the first layer's two products: the
               forward product x W1 and the kernel gradient x^T ds1 stay TensorFlow's
               (oneDNN's) kernels; the rest of the forward pass, the loss with its
               penalties and their gradients (ds1 among them) are one XLA function, the
               many small ops of batch norm, the loss and the penalties fused

Prints first how far "xla tail" is from "step" after three mini-batches from the same
weights (float32 reordering: about 1e-7), then the median seconds per epoch of each (after
one epoch of warm-up: tracing and XLA's compile) and each against kbn's loop.
"""

import argparse
import statistics
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="folder:../shared/data/cifar10-jpeg/train")
    parser.add_argument("--train-size", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=6, help="timed epochs of each loop")
    args = parser.parse_args()

    import tensorflow as tf

    import kbn
    from kbn.bench.epoch_time import SEED_NET
    from kbn.nn.builder import compile_model
    from kbn.optim.sgd import SGD
    from kbn.training.loop import TrainingLoop, train_step
    from kbn.training.order import EpochOrder
    from kbn.training.stages import split_fixed_stages

    data = kbn.load_data(args.data, train_size=args.train_size, val_size=0, seed=0)
    model = kbn.build_mlp(
        SEED_NET["hidden"], data.num_classes, adapt=data.train.x, lam=SEED_NET["lam"], seed=0
    )
    compile_model(model, SGD(SEED_NET["eta"], momentum=SEED_NET["momentum"]), 50)
    loop = TrainingLoop(model)
    x, y = loop.inputs(data.train.x), tf.convert_to_tensor(data.train.y)
    order_of = EpochOrder(len(data.train.y), args.batch_size, seed=0)
    trunk = split_fixed_stages(model)[1]  # the model after its fixed input stages

    def epoch_loop(step):
        def run(order):
            for b in tf.range(order_of.steps):
                index = order[b * args.batch_size : (b + 1) * args.batch_size]
                step(tf.gather(x, index), tf.gather(y, index))

        return tf.function(run)

    def plain_step(xb, yb):
        return train_step(model, trunk, xb, yb)

    first, tail = _first_layer_and_tail(trunk)
    variables = model.trainable_variables
    kernel = variables.index(first.kernel)

    @tf.function(jit_compile=True)
    def tail_gradients(s1, yb):
        with tf.GradientTape() as tape:
            tape.watch(s1)
            loss = model.compute_loss(y=yb, y_pred=tail(s1, training=True), training=True)
        # The first kernel's gradient here is its penalty's alone.
        return loss, tape.gradient(loss, [s1, *variables])

    def tail_step(xb, yb):
        loss, (ds1, *grads) = tail_gradients(first(xb), yb)
        grads[kernel] = grads[kernel] + tf.matmul(xb, ds1, transpose_a=True)
        model.optimizer.apply(grads, variables)
        return loss

    loops = {
        "kbn": None,
        "step": epoch_loop(plain_step),
        "xla step": epoch_loop(tf.function(plain_step, jit_compile=True)),
        "xla tail": epoch_loop(tail_step),
    }

    def epoch(name, e):
        start = time.perf_counter()
        if name == "kbn":
            run = loop.train_function(x, y, order_of, e, 50)
            for _ in range(-(-order_of.steps // 50)):
                logs = run(None)
            float(logs["loss"])
        else:
            loops[name](tf.random.shuffle(tf.range(len(data.train.y)), seed=e))
            float(model.trainable_variables[0][0, 0])
        return time.perf_counter() - start

    def three_steps(step):
        """The model's weights (as arrays) after three mini-batches of `step`."""
        for b in range(3):
            step(
                x[b * args.batch_size : (b + 1) * args.batch_size],
                y[b * args.batch_size : (b + 1) * args.batch_size],
            )
        return [w.numpy() for w in model.weights]

    model.optimizer.build(variables)
    state = model.weights + model.optimizer.variables
    start = [v.numpy() for v in state]
    after = three_steps(plain_step)
    for v, value in zip(state, start):
        v.assign(value)
    gap = max(float(abs(a - b).max()) for a, b in zip(after, three_steps(tail_step)))
    print(
        "xla tail against step, three mini-batches from the same weights: "
        f"max |difference| {gap:.1e}"
    )

    seconds = {name: [] for name in loops}
    for e in range(args.epochs + 1):
        for name in list(loops)[:: 1 if e % 2 else -1]:
            took = epoch(name, e)
            if e:
                seconds[name].append(took)
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    print(
        f"net {'-'.join(map(str, SEED_NET['hidden']))} with BN, {len(data.train.y)} images, "
        f"batch {args.batch_size}: median seconds per epoch of {args.epochs}, the loops "
        "alternating\n"
    )
    print("| loop | s/epoch | vs kbn's loop | epochs |")
    print("| --- | --- | --- | --- |")
    for name, median in medians.items():
        runs = ", ".join(f"{s:.3f}" for s in seconds[name])
        print(f"| {name} | {median:.3f} | {median / medians['kbn']:.2f}x | {runs} |")


def _first_layer_and_tail(trunk):
    """(the trunk's first Dense, the rest of the trunk as a model of that Dense's output)."""
    import keras

    first, *rest = trunk.layers[1:]  # after the InputLayer; a chain, as `build_mlp` makes it
    if first.use_bias:
        raise ValueError("the xla tail loop needs a first Dense without bias (batch norm after it)")
    inputs = keras.Input((first.units,))
    h = inputs
    for layer in rest:
        h = layer(h)
    return first, keras.Model(inputs, h)


if __name__ == "__main__":
    main()
