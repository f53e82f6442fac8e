"""`kbn reproduce`: the report's four studies, written to report.md with its figures."""

import json
import pathlib
import sys

from kbn.cli.parser import examples_epilog, running

EXAMPLES = [
    "kbn reproduce --data fashion_mnist --quick",
    "kbn reproduce --data folder:cifar10-jpeg/train --out reports/cifar10 --json",
]


def add_parser(subparsers):
    """Add `kbn reproduce` to the `kbn` parser's subparsers; returns its parser."""
    p = subparsers.add_parser(
        "reproduce",
        help="the report's four studies -> report.md and figures",
        description="The report's four studies (DD2424 assignment 3: k-layer networks with batch "
        "normalization on CIFAR-10): gradient check, 3-layer net with and without batch "
        "norm, coarse-to-fine search, eta study -> DIR/report.md, its figures, and every "
        "run's TensorBoard folder under DIR/logs.",
        epilog=examples_epilog(EXAMPLES),
    )
    p.add_argument(
        "--data",
        required=True,
        metavar="SPEC",
        help="fashion_mnist, cifar10, folder:PATH or npz:PATH",
    )
    p.add_argument("--data-dir", metavar="DIR", help="where the data set's files are")
    p.add_argument("--out", metavar="DIR", help="report folder (default: reports/<data set name>)")
    p.add_argument("--quick", action="store_true", help="small sizes: about 5 minutes on 2 cores")
    p.add_argument("--seed", type=int, default=0, help="seeds the splits, weights and shuffles")
    p.add_argument(
        "--json",
        action="store_true",
        help="progress on stderr; last stdout line: the report's files and every run's figures",
    )
    p.set_defaults(func=run)
    return p


def run(args):
    """Run the studies, write the report where the parsed `args` say, and print its files."""
    from kbn.fileio import read_json
    from kbn.report.reproduction import default_out, reproduce

    out = pathlib.Path(args.out or default_out(args.data))
    command = "kbn " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["reproduce"] else None
    stream = sys.stderr if args.json else sys.stdout
    with running():
        path = reproduce(
            args.data,
            out,
            quick=args.quick,
            data_dir=args.data_dir,
            seed=args.seed,
            command=command,
            progress=lambda line: print(line, file=stream, flush=True),
        )
    # Each study's run leaves its figures in its summary.json (the search's
    # trials sit one folder deeper, in the search's project).
    runs = {}
    for summary_path in sorted((out / "logs").glob("*/summary.json")):
        summary = read_json(summary_path) or {}
        runs[summary_path.parent.name] = {
            **summary.get("final", {}),
            "epochs_run": summary.get("epochs_run"),
            "diverged": summary.get("diverged"),
        }
    result = {
        "report": str(path),
        "figures": sorted(str(png) for png in pathlib.Path(path).parent.glob("*.png")),
        "runs": runs,
    }
    if args.json:  # people saw the report's path in the progress lines
        print(json.dumps(result))
