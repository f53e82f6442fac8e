"""`kbn runs`: every training run and search trial under log folders, one row each."""

import argparse

from kbn.cli.parser import examples_epilog

EXAMPLES = [
    "kbn runs",
    "kbn runs logs search --sort val_acc --desc",
    "kbn runs --filter status=killed,running",
    "kbn runs search --filter project=cifar --csv",
]


def filter_option(text):
    """`status=finished,stopped` -> ("status", ["finished", "stopped"])."""
    column, sep, values = text.partition("=")
    if not sep or not column or not values:
        raise argparse.ArgumentTypeError(f"expected COLUMN=VALUE[,VALUE...], got {text!r}")
    return column, values.split(",")


def add_parser(subparsers):
    """Add `kbn runs` to the `kbn` parser's subparsers; returns its parser."""
    from kbn.run_table import COLUMNS, FILTERS, STATUSES

    p = subparsers.add_parser(
        "runs",
        help="every training run and search trial under log folders, one row each",
        description="One row per training run and per search trial found under the folders "
        "(to any depth): name, start time, data, network, eta, lambda, epochs run, status, "
        "final accuracies and seconds of training. Statuses: " + ", ".join(STATUSES) + ".",
        epilog=examples_epilog(EXAMPLES),
    )
    p.add_argument(
        "logdirs", nargs="*", metavar="LOGDIR", help="folders to look into (default: logs)"
    )
    p.add_argument("--sort", metavar="COLUMN", help="order by: " + ", ".join(COLUMNS))
    p.add_argument("--desc", action="store_true", help="with --sort: largest first")
    p.add_argument(
        "--filter",
        type=filter_option,
        action="append",
        default=[],
        metavar="COLUMN=VALUE[,VALUE]",
        help="keep the rows whose COLUMN is one of the values; COLUMN: "
        + ", ".join(FILTERS)
        + "; repeat to combine",
    )
    output = p.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="stdout: a JSON list of the rows")
    output.add_argument("--csv", action="store_true", help="stdout: the rows as CSV")
    p.set_defaults(func=run)
    return p


def run(args):
    """Print the table of the runs under the parsed `args`' folders."""
    import json

    from kbn.run_table import runs

    allowed = {}
    for column, values in args.filter:
        allowed.setdefault(column, []).extend(values)
    table = runs(*args.logdirs).where(**allowed)
    if args.sort:
        table = table.sorted_by(args.sort, descending=args.desc)
    if args.json:
        print(json.dumps(table.as_dicts()))
    elif args.csv:
        print(table.to_csv(), end="")
    else:
        print(table.to_text())
