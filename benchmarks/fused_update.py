"""The fused update against 0.2's, epoch for epoch in one process, in each precision.

    python benchmarks/fused_update.py --data folder:../shared/data/cifar10-jpeg/train \
        --hidden 2048,1024,512 --batch-size 250 --precision float32,mixed_bfloat16

`kbn bench`'s net (`--hidden` with BN after each, the report's lambda) compiled with
kbn's SGD, and two compiled loops over the same model: one as `kbn train` runs it
(`TrainingLoop`: the L2 penalties' gradients and, in 16 bits, the kernels' copies
folded into one XLA-compiled update, `kbn.optim.fused_update`), one with nothing
folded (its `fused` list emptied before it is traced: the step of kbn 0.2, autodiff's
penalty gradient, a cast of each kernel per step and TensorFlow's fused momentum
kernel). Their epochs alternate, so that the machine's slow spells hit both; each
figure is the median of `--epochs` epochs after one of warm-up (tracing, XLA's
compiles). Prints one markdown table, and the speed of each precision against
float32 with each update.
"""

import argparse
import statistics
import time


def epoch_seconds(loop, x, y, order_of, epoch, steps_per_execution):
    """Wall seconds of one epoch of `loop`'s train function."""
    run = loop.train_function(x, y, order_of, epoch, steps_per_execution)
    calls = -(-order_of.steps // steps_per_execution)
    start = time.perf_counter()
    for _ in range(calls):
        logs = run(None)
    float(logs["loss"])  # the last call's results are ready
    return time.perf_counter() - start


def compare(data, hidden, batch_size, precision, epochs, seed=0):
    """{"fused": [s, ...], "0.2": [s, ...]}: alternating epochs of the two loops."""
    import kbn
    from kbn.bench.epoch_time import SEED_NET
    from kbn.nn.builder import compile_model
    from kbn.optim.sgd import SGD
    from kbn.training.loop import TrainingLoop
    from kbn.training.order import EpochOrder

    model = kbn.build_mlp(
        hidden,
        data.num_classes,
        adapt=data.train.x,
        lam=SEED_NET["lam"],
        seed=seed,
        precision=precision,
    )
    steps_per_execution = 50
    compile_model(model, SGD(0.01, momentum=0.9), steps_per_execution=steps_per_execution)
    fused, plain = TrainingLoop(model), TrainingLoop(model)
    plain.fused = []  # before its first trace: nothing folded
    x = fused.inputs(data.train.x)
    order_of = EpochOrder(len(data.train.y), batch_size, seed)
    seconds = {"fused": [], "0.2": []}
    for epoch in range(epochs + 1):
        for name, loop in (("fused", fused), ("0.2", plain))[:: 1 if epoch % 2 else -1]:
            took = epoch_seconds(loop, x, data.train.y, order_of, epoch, steps_per_execution)
            if epoch:
                seconds[name].append(took)
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="folder:../shared/data/cifar10-jpeg/train")
    parser.add_argument("--train-size", type=int, default=10_000)
    parser.add_argument("--hidden", default="2048,1024,512")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--precision", default="float32,mixed_bfloat16")
    parser.add_argument("--epochs", type=int, default=6, help="timed epochs of each loop")
    args = parser.parse_args()

    import kbn

    data = kbn.load_data(args.data, train_size=args.train_size, val_size=0, seed=0)
    hidden = [int(w) for w in args.hidden.split(",")]
    precisions = args.precision.split(",")
    medians = {}
    print(
        f"net {'-'.join(map(str, hidden))} with BN, {len(data.train.y)} images, batch "
        f"{args.batch_size}: median seconds per epoch of {args.epochs}, the loops alternating\n"
    )
    print("| precision | kbn 0.2's update | fused update | fused vs 0.2 | epochs (0.2 / fused) |")
    print("| --- | --- | --- | --- | --- |")
    for precision in precisions:
        seconds = compare(data, hidden, args.batch_size, precision, args.epochs)
        medians[precision] = {name: statistics.median(s) for name, s in seconds.items()}
        old, new = medians[precision]["0.2"], medians[precision]["fused"]
        runs = " / ".join(", ".join(f"{s:.3f}" for s in seconds[k]) for k in ("0.2", "fused"))
        print(f"| {precision} | {old:.3f} s | {new:.3f} s | {old / new:.2f}x | {runs} |")
    first = precisions[0]
    for precision in precisions[1:]:
        for name in ("0.2", "fused"):
            ratio = medians[first][name] / medians[precision][name]
            print(f"\n{precision} vs {first}, {name} update: {ratio:.2f}x")


if __name__ == "__main__":
    main()
