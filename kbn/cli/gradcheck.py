"""`kbn gradcheck`: the report's gradient-check table.

Hand-written gradients against centred finite differences and TensorFlow
autodiff, per weight and batch size, on random pixels or a data set's images.
"""

import argparse

from kbn.cli.options import emit
from kbn.cli.parser import examples_epilog, int_list, non_negative_float, positive_int

EXAMPLES = [
    "kbn gradcheck",
    "kbn gradcheck --hidden 50,30 --no-batch-norm --lam 0.01 --max-entries 20",
]


def add_parser(subparsers):
    """Add `kbn gradcheck` to the `kbn` parser's subparsers; returns its parser."""
    p = subparsers.add_parser(
        "gradcheck",
        help="the report's gradient-check table",
        description="Hand-written gradients of a k-layer net against centred finite differences "
        "and TensorFlow autodiff, per weight and batch size.",
        epilog=examples_epilog(EXAMPLES),
    )
    p.add_argument(
        "--hidden", type=int_list, default=[50], metavar="W1,W2,...", help="hidden widths"
    )
    p.add_argument(
        "--batch-sizes",
        type=int_list,
        default=[10, 20, 30],
        metavar="N1,N2,...",
        help="a table row per batch size: the first N examples",
    )
    p.add_argument(
        "--batch-norm",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="BatchNorm after each hidden Dense",
    )
    p.add_argument(
        "--lam",
        type=non_negative_float,
        default=0.0,
        metavar="LAMBDA",
        help="L2 penalty lambda (the report's check: 0)",
    )
    p.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        default="float64",
        help="of the hand-written and autodiff gradients; numerical ones are float64",
    )
    p.add_argument("--data", metavar="SPEC", help="check on these images (default: random pixels)")
    p.add_argument("--data-dir", metavar="DIR")
    p.add_argument(
        "--dim",
        type=positive_int,
        default=100,
        help="input features kept, the first DIM (default: 100)",
    )
    p.add_argument(
        "--max-entries",
        type=positive_int,
        metavar="N",
        help="check N random entries per weight instead of all",
    )
    p.add_argument("--seed", type=int, default=0, help="seeds the weights and the random pixels")
    p.add_argument("--json", action="store_true", help="last stdout line: the table as JSON")
    p.set_defaults(func=run)
    return p


def run(args):
    """Check the gradients the parsed `args` describe and print the table."""
    from kbn.errors import KbnError
    from kbn.gradcheck.check import check_inputs, format_table, gradient_table

    if not args.batch_sizes:
        raise KbnError("--batch-sizes needs at least one batch size, e.g. 10,20,30")
    x, y, classes = check_inputs(
        max(args.batch_sizes), args.dim, spec=args.data, data_dir=args.data_dir, seed=args.seed
    )
    rows = gradient_table(
        x,
        y,
        hidden=args.hidden,
        batch_sizes=args.batch_sizes,
        batch_norm=args.batch_norm,
        lam=args.lam,
        num_classes=classes,
        dtype=args.dtype,
        seed=args.seed,
        max_entries=args.max_entries,
    )
    result = {
        "rows": [
            {k: r[k] for k in ("batch_size", "param", "rel_error", "max_entry_error")} for r in rows
        ],
        "max_rel_error": max(r["rel_error"] for r in rows),
        "max_rel_error_autodiff": max(r["rel_error_autodiff"] for r in rows),
    }
    text = "\n".join(
        [
            "Relative error |g_a - g_n| / max(eps, |g_a| + |g_n|), hand-written vs numerical:",
            format_table(rows),
            "",
            "Largest single-entry error (noise-bound for entries below ~1e-5):",
            format_table(rows, "max_entry_error"),
            "",
            f"hand-written vs autodiff: {result['max_rel_error_autodiff']:.2e}",
        ]
    )
    emit(args, result, text)
