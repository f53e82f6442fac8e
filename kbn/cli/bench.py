"""`kbn bench`: seconds per epoch of NumPy, Keras and kbn on the same images, kbn in each
precision."""

import dataclasses

from kbn.cli.options import emit
from kbn.cli.parser import examples_epilog, int_list, non_negative_int, positive_int

EXAMPLES = [
    "kbn bench",
    "kbn bench --data folder:cifar10-jpeg/train --only numpy,kbn --json",
]


def add_parser(subparsers):
    """Add `kbn bench` to the `kbn` parser's subparsers; returns its parser."""
    from kbn.bench.epoch_time import IMPLEMENTATIONS, SEED_NET
    from kbn.nn.precision import PRECISIONS

    p = subparsers.add_parser(
        "bench",
        help="seconds per epoch: NumPy vs Keras vs kbn, kbn in each precision",
        epilog=examples_epilog(EXAMPLES),
    )
    p.add_argument(
        "--data",
        default="synthetic",
        metavar="SPEC",
        help="synthetic (random CIFAR-10-shaped pixels) or a data SPEC",
    )
    p.add_argument("--data-dir", metavar="DIR")
    p.add_argument("--train-size", type=positive_int, default=10_000, metavar="N")
    p.add_argument(
        "--val-size",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="validation images evaluated every epoch (default: 0)",
    )
    p.add_argument("--epochs", type=positive_int, default=6, help="per run; the first is warm-up")
    p.add_argument("--repeats", type=positive_int, default=3, help="runs per implementation")
    p.add_argument("--batch-size", type=positive_int, default=100)
    p.add_argument(
        "--only",
        type=lambda text: text.split(","),
        default=list(IMPLEMENTATIONS),
        metavar="NAMES",
        help=f"comma-separated subset of {','.join(IMPLEMENTATIONS)}",
    )
    p.add_argument(
        "--hidden",
        type=int_list,
        default=list(SEED_NET["hidden"]),
        metavar="W1,W2,...",
        help="kbn's hidden widths, BN after each; NumPy and Keras keep the report's network "
        "(3072-50-30-10 with batch norm)",
    )
    p.add_argument(
        "--precision",
        type=lambda text: text.split(","),
        default=["float32"],
        metavar="NAMES",
        help=f"kbn's precisions, comma-separated, each a row: {','.join(PRECISIONS)}",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
    return p


def run(args):
    """Time the epochs the parsed `args` describe and print the table."""
    from kbn.bench.epoch_time import epoch_times, format_result

    result = epoch_times(
        args.data,
        train_size=args.train_size,
        val_size=args.val_size,
        epochs=args.epochs,
        repeats=args.repeats,
        batch_size=args.batch_size,
        implementations=args.only,
        data_dir=args.data_dir,
        seed=args.seed,
        hidden=args.hidden,
        precisions=args.precision,
    )
    emit(args, dataclasses.asdict(result), format_result(result))
