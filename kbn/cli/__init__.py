"""The `kbn` command: train, check, search and evaluate k-layer batch-norm nets.

Each subcommand parses its options, calls the library, and prints: a
readable summary for people, or with `--json` one JSON object as the last
line of stdout for scripts. Every error kbn knows ends as one line
`error: ...` on stderr, never a traceback, with the exit status saying whose
it was:

    0    done.
    1    the command was valid but running it failed: a file that cannot be
         written or read (a full disk, a folder where a file should be), or
         an error raised once the work began (training, evaluating,
         searching, writing the report).
    2    the command is wrong: a usage error, a setting out of range, a data
         SPEC, data file or model that kbn cannot use, flags the data cannot
         take (--flip on flat vectors); nothing has run.
    130  interrupted (Ctrl-C).

One module per subcommand (`kbn.cli.train`, ...), each with `add_parser`
and `run`; `kbn.cli.parser` holds the argparse framework they share and
`kbn.cli.options` the option groups several of them take, `kbn.cli.network`
the network options and `--preset`. `kbn train`'s training options are
generated from `kbn.training.config.TrainConfig`'s fields (a new field
declared with `kbn.training.config.setting` is a new flag), its model options
from `kbn.build_mlp`'s arguments (`kbn.cli.network.MODEL_OPTIONS`), and
`kbn tune`'s from
`tuning.search.SearchConfig`'s fields (`kbn.cli.tune.SEARCH_OPTIONS`).
"""

import sys

from kbn.cli import (
    bench,
    evaluate,
    export,
    gradcheck,
    lr_find,
    predict,
    reproduce,
    runs,
    train,
    tune,
)
from kbn.cli.parser import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, Failure, Parser, UsageError

# The subcommands in the order `kbn --help` lists them.
COMMANDS = {
    "train": train,
    "evaluate": evaluate,
    "predict": predict,
    "export": export,
    "gradcheck": gradcheck,
    "tune": tune,
    "lr-find": lr_find,
    "reproduce": reproduce,
    "runs": runs,
    "bench": bench,
}

DESCRIPTION = """\
kbn trains k-layer fully connected networks with batch normalization, in Keras 3,
whose backward passes are written by hand and checked against autodiff and
finite differences: train and evaluate nets, print the gradient-check table,
search eta and lambda with KerasTuner, and reproduce the report's studies
(DD2424 assignment 3: k-layer networks with batch normalization on CIFAR-10).
"""

EPILOG = """\
exit status: 0 done; 1 the command was valid but running it failed (I/O, an
error once the work began); 2 the command is wrong (usage, settings, data or
model kbn cannot use); 130 interrupted.

examples:
  kbn train --data fashion_mnist --preset report
  kbn gradcheck --batch-sizes 10,20,30
  kbn reproduce --data fashion_mnist --quick
  python -m kbn train --help
"""


def build_parser():
    """The `kbn` argument parser with every subcommand.

    Returns:
        A `kbn.cli.parser.Parser`; each subcommand's parsed arguments carry
        `func`, the subcommand module's `run`.
    """
    from kbn import __version__

    parser = Parser(prog="kbn", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(
        dest="command", required=True, parser_class=Parser, metavar="COMMAND", title="commands"
    )
    for command in COMMANDS.values():
        command.add_parser(subparsers)
    return parser


def main(argv=None):
    """Entry point of the `kbn` console script; returns the exit status.

    0: done; 1: the command was valid but running it failed; 2: the command
    is wrong (nothing ran); 130: interrupted. See the module's docstring.

    Args:
        argv: the arguments after `kbn`; None for `sys.argv[1:]`.

    Returns:
        The exit status, an int.
    """
    from kbn.errors import KbnError

    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
            if getattr(args, "preset", None):
                args.apply_preset(args.preset)
                args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version
            return exc.code or 0
        args.func(args)
    except (UsageError, KbnError) as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return EXIT_USAGE
    except Failure as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:  # an unwritable --logdir or --save, a full disk
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
