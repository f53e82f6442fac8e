"""Where a training epoch's time goes, by TensorFlow op type, in each precision.

    python benchmarks/step_profile.py --data folder:../shared/data/cifar10-jpeg/train \
        --hidden 2048,1024,512 --batch-size 250 --precision float32,mixed_bfloat16
    python benchmarks/step_profile.py --preset report --batch-size 100 --precision float32
    python benchmarks/step_profile.py --preset report --batch-size 100 --precision float32 \
        --threads 1
    # the cifar10-mlp net before its principal components
    python benchmarks/step_profile.py --hidden 2048,1024,512 --pca 0

For each precision: builds the net (the model settings of `--preset`, by default the
cifar10-mlp preset's, with `--hidden` and `--pca` if given), trains one epoch (warm-up: tracing,
caches), then traces one more epoch with TensorFlow's profiler and sums the time of
every op the CPU ran, by op type (`MatMul`, `Cast`, `ResourceApplyKerasMomentum`, ...),
from the trace's `.xplane.pb`.
Prints one markdown table: seconds per epoch of each op type in each precision, the
largest first, and how many ops each mini-batch's step ran. Ops run on two threads at
once, so the sum of a column can exceed the epoch's wall time; with `--threads 1` they run
one at a time, and each op type's share of the column is its share of the work. The
fixed input stages (`kbn.training.stages`), which a run computes once per split and not
once per epoch, are left out of the op types and counted on a line of their own.
"""

import argparse
import collections
import dataclasses
import pathlib
import tempfile
import time


def op_seconds(logdir, stages):
    """({op type: seconds}, {op type: count}) over the host plane of the trace under `logdir`.

    Ops in the scope `stages` (the fixed input stages' model) count as the type "stages".
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    totals, counts = collections.Counter(), collections.Counter()
    for path in pathlib.Path(logdir).rglob("*.xplane.pb"):
        space = xplane_pb2.XSpace()
        space.ParseFromString(path.read_bytes())
        for plane in space.planes:
            if not plane.name.startswith("/host:CPU"):
                continue
            for line in plane.lines:
                # TensorFlow's executor threads; the Python and trace-me lines would count
                # the same time again.
                if not line.name.startswith("tf_"):
                    continue
                for event in line.events:
                    name = plane.event_metadata[event.metadata_id].name
                    # An op is "scope/name:Type"; the executor's own events
                    # ("ExecutorState::Process", ...) hold ops: their time twice.
                    if ":" in name and "::" not in name:
                        kind = "stages" if name.startswith(stages) else name.rsplit(":", 1)[-1]
                        totals[kind] += event.duration_ps * 1e-12
                        counts[kind] += 1
    return totals, counts


def profile(data, preset, hidden, pca, batch_size, precision):
    """(wall seconds of the traced epoch, {op type: seconds}, ops run, seconds of the
    fixed stages) for one precision: a run of one epoch, traced."""
    import tensorflow as tf

    import kbn
    from kbn.training.presets import get_preset

    model_settings = {**get_preset(preset).model, "precision": precision}
    if hidden:
        model_settings["hidden"] = hidden
    if pca is not None:
        model_settings["pca"] = pca
    model = kbn.build_mlp(
        num_classes=data.num_classes, adapt=data.train.x, seed=0, **model_settings
    )
    with tempfile.TemporaryDirectory() as logs:
        config = kbn.TrainConfig(
            eta=0.05,
            schedule="constant",
            epochs=1,
            batch_size=batch_size,
            precision=precision,
            logdir=logs,
            run_name="warm-up",
            verbose=0,
            plot_curves=False,
        )
        kbn.train(model, data, config)
        traced = pathlib.Path(logs) / "trace"
        tf.profiler.experimental.start(str(traced))
        start = time.perf_counter()
        kbn.train(model, data, dataclasses.replace(config, run_name="traced"))
        wall = time.perf_counter() - start
        tf.profiler.experimental.stop()
        # `split_fixed_stages` names the stages' model after the model; Keras numbers the scope.
        seconds, counts = op_seconds(traced, f"{model.name}_stages")
        stages = seconds.pop("stages", 0.0)
        counts.pop("stages", None)
        return wall, seconds, sum(counts.values()), stages


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="folder:../shared/data/cifar10-jpeg/train")
    parser.add_argument("--train-size", type=int, default=10_000)
    parser.add_argument("--preset", default="cifar10-mlp", help="whose model settings")
    parser.add_argument("--hidden", default="", help="hidden widths (default: the preset's)")
    parser.add_argument(
        "--pca", type=int, default=None, help="principal components kept (default: the preset's)"
    )
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--precision", default="float32,mixed_bfloat16")
    parser.add_argument("--rows", type=int, default=14, help="op types shown, the largest first")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="TensorFlow threads (per op and between ops); 0 for all cores. With 1 no two ops "
        "overlap, so each op's time is its own and the column sums to the time ops take",
    )
    args = parser.parse_args()

    import tensorflow as tf

    import kbn

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    data = kbn.load_data(args.data, train_size=args.train_size, val_size=500, seed=0)
    hidden = [int(w) for w in args.hidden.split(",")] if args.hidden else None
    precisions = args.precision.split(",")
    walls, ops, ran, stages = {}, {}, {}, {}
    for precision in precisions:
        walls[precision], ops[precision], ran[precision], stages[precision] = profile(
            data, args.preset, hidden, args.pca, args.batch_size, precision
        )
    steps = -(-len(data.train.y) // args.batch_size)
    first = precisions[0]
    kinds = sorted(
        set().union(*ops.values()), key=lambda k: -max(o.get(k, 0) for o in ops.values())
    )
    net = "-".join(map(str, hidden)) if hidden else f"the {args.preset} preset's"
    if args.pca is not None:
        net += f", {args.pca or 'all'} input components"
    print(
        f"net {net}, {len(data.train.x)} images, batch {args.batch_size}: "
        f"seconds per epoch by op type "
        f"({f'{args.threads} thread(s)' if args.threads else 'all threads together'})\n"
    )
    print("| op type | " + " | ".join(precisions) + " |")
    print("| --- |" + " --- |" * len(precisions))
    for kind in kinds[: args.rows]:
        print(f"| {kind} | " + " | ".join(f"{ops[p].get(kind, 0):.3f}" for p in precisions) + " |")
    rest = {p: sum(v for k, v in ops[p].items() if k not in kinds[: args.rows]) for p in precisions}
    print("| all other ops | " + " | ".join(f"{rest[p]:.3f}" for p in precisions) + " |")
    print("| sum of ops | " + " | ".join(f"{sum(ops[p].values()):.3f}" for p in precisions) + " |")
    print(
        "| the fixed stages, once per run (not above) | "
        + " | ".join(f"{stages[p]:.3f}" for p in precisions)
        + " |"
    )
    print(
        "| wall time of the epoch (with 500 validation images) | "
        + " | ".join(f"{walls[p]:.3f}" for p in precisions)
        + " |"
    )
    print(
        "| ops run per mini-batch (the epoch's, with its validation, / steps) | "
        + " | ".join(f"{ran[p] / steps:.0f}" for p in precisions)
        + " |"
    )
    for p in precisions[1:]:
        print(f"\n{p}: {walls[first] / walls[p]:.2f}x the speed of {first} (wall, traced epoch)")


if __name__ == "__main__":
    main()
