"""kbn's softmax cross-entropy (hand-written gradient) against Keras's, in kbn's loop.

    python benchmarks/cross_entropy.py --data folder:../shared/data/cifar10-jpeg/train

`kbn bench`'s kbn net (3072-50-30-10 with BN, the report's lambda, batch 100, float32),
built twice with the same weights: one model compiled with Keras's
`SparseCategoricalCrossentropy(from_logits=True)` (kbn's loss before release 0.2), one
with `kbn.nn.SoftmaxCrossEntropy`. Under the op determinism `kbn.train` turns on,
TensorFlow builds Keras's loss from a log-softmax, a gather and checks on the labels, some
forty ops with their gradient. Both models train in kbn's compiled loop (`TrainingLoop`,
as `kbn train` runs it), an epoch each in turn, so that the machine's slow spells hit
both. (`kbn bench` gives the epoch against NumPy's.)

Prints the median seconds per epoch of each (after one epoch of warm-up), their ratio,
and how far apart the two models' weights are after the last epoch.
"""

import argparse
import statistics
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="folder:../shared/data/cifar10-jpeg/train")
    parser.add_argument("--train-size", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=10, help="timed epochs of each")
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    import kbn
    from kbn.bench.epoch_time import SEED_NET
    from kbn.nn.builder import compile_model
    from kbn.optim.sgd import SGD
    from kbn.training.loop import TrainingLoop
    from kbn.training.order import EpochOrder

    tf.config.experimental.enable_op_determinism()  # as kbn.train
    data = kbn.load_data(args.data, train_size=args.train_size, val_size=0, seed=0)
    order_of = EpochOrder(len(data.train.y), args.batch_size, seed=0)
    y = tf.convert_to_tensor(data.train.y)

    def kbn_epoch(loss):
        model = kbn.build_mlp(
            SEED_NET["hidden"], data.num_classes, adapt=data.train.x, lam=SEED_NET["lam"], seed=0
        )
        compile_model(model, SGD(SEED_NET["eta"], momentum=SEED_NET["momentum"]), 50)
        if loss is not None:  # Keras's loss in the model's place, all else as compile_model
            model.compile(
                optimizer=model.optimizer,
                loss=loss,
                metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                steps_per_execution=50,
            )
        loop = TrainingLoop(model)
        x = loop.inputs(data.train.x)

        def epoch(e):
            run = loop.train_function(x, y, order_of, e, 50)
            for _ in range(-(-order_of.steps // 50)):
                logs = run(None)
            float(logs["loss"])

        return model, epoch

    keras_model, keras_epoch = kbn_epoch(
        keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    kbn_model, kbn_epoch_ = kbn_epoch(None)

    epochs = {"Keras's loss": keras_epoch, "kbn's loss": kbn_epoch_}
    seconds = {name: [] for name in epochs}
    for e in range(args.epochs + 1):
        for name in list(epochs)[:: 1 if e % 2 else -1]:
            start = time.perf_counter()
            epochs[name](e)
            if e:
                seconds[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    before = medians["Keras's loss"]
    gap = max(
        float(np.max(np.abs(a.numpy() - b.numpy())))
        for a, b in zip(keras_model.trainable_variables, kbn_model.trainable_variables)
    )
    print(
        f"net {'-'.join(map(str, SEED_NET['hidden']))} with BN, {len(data.train.y)} images, "
        f"batch {args.batch_size}: median seconds per epoch of {args.epochs}, in turn\n"
    )
    print("| loss | s/epoch | vs Keras's loss | epochs |")
    print("| --- | --- | --- | --- |")
    for name, median in medians.items():
        runs = ", ".join(f"{s:.3f}" for s in seconds[name])
        print(f"| {name} | {median:.3f} | {median / before:.2f}x | {runs} |")
    print(f"\nlargest difference between the two models' weights: {gap:.2e}")


if __name__ == "__main__":
    main()
