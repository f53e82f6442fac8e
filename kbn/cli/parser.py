"""The argparse framework every `kbn` subcommand shares.

The help formatter (each option's default shown, epilogs kept as written),
the parser whose usage error is one `error:` line, the two errors that set
the exit status (`UsageError`: 2, `Failure`: 1) with `running()` telling
them apart, and the option types that check numbers and lists as they are
parsed.
"""

import argparse
import contextlib
import textwrap

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

FLOAT32_MAX = 3.4028235e38  # training computes in float32


def shown_default(action):
    """An option's default as typed on the command line; "" for none worth showing.

    Args:
        action: an argparse action.

    Returns:
        The default as a flag would spell it ("--no-flip", "50,30", "0.01:0.7").
    """
    default = action.default
    if isinstance(action, argparse.BooleanOptionalAction) and isinstance(default, bool):
        return action.option_strings[0 if default else 1]  # --flip / --no-flip
    if default is None or default is False or default is argparse.SUPPRESS or default == []:
        return ""
    if isinstance(default, list):  # --hidden 50,30
        return ",".join(map(str, default))
    if isinstance(default, tuple):  # --eta-range 0.01:0.7
        return ":".join(map(str, default))
    return str(default)


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Help with each option's default, and epilogs (the examples) as written."""

    def _get_help_string(self, action):
        help = action.help or ""
        shown = shown_default(action)
        if not shown or "%(default)" in help or "(default" in help:
            return help
        return f"{help} (default: {shown})".strip()

    def _split_lines(self, text, width):
        # Keep a flag such as --no-flip whole on one line.
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one `error:` line like every other, and
    every option's help shows its default."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", Formatter)
        description = kwargs.get("description")
        if description and "\n" not in description:  # one paragraph: wrap it
            kwargs["description"] = textwrap.fill(description, 79)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        # argparse prints no help line for an option without help: its
        # default would not show.
        if action.help is None and action.option_strings and shown_default(action):
            action.help = "(default: " + shown_default(action).replace("%", "%%") + ")"
        return action

    def error(self, message):
        raise UsageError(f"{self.prog}: {message}")


def examples_epilog(examples):
    """A subcommand's epilog: its example command lines under `examples:`."""
    return "examples:\n" + "\n".join("  " + line for line in examples)


class UsageError(Exception):
    """The command line is wrong: exit status 2."""


class Failure(Exception):
    """A valid command failed while running: exit status 1."""


@contextlib.contextmanager
def running():
    """The work itself: a KbnError raised from here on is the run's failure
    (exit 1), not the command's (exit 2)."""
    from kbn.errors import KbnError

    try:
        yield
    except KbnError as exc:
        raise Failure(str(exc)) from exc


def positive_int(text):
    """argparse type: an int above 0."""
    return _number(text, int, lambda v: v > 0, "a positive integer")


def non_negative_int(text):
    """argparse type: an int, 0 or more."""
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def non_negative_float(text):
    """argparse type: a number from 0 up to float32's largest."""
    return _number(text, float, lambda v: 0 <= v <= FLOAT32_MAX, "a number >= 0")


def fraction(text):
    """argparse type: a number in [0, 1)."""
    return _number(text, float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def _number(text, kind, ok, expected):
    """`text` as `kind` if `ok` says yes; else the error naming what was `expected`."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def int_list(text):
    """'50,30' -> [50, 30]; '' -> [] (no hidden layer)."""
    if not text.strip():
        return []
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers such as 50,30, got {text!r}"
        ) from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def float_range(text):
    """'0.01:0.7' -> (0.01, 0.7)."""
    try:
        low, high = (float(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected LOW:HIGH such as 0.01:0.7, got {text!r}"
        ) from None
    return low, high
