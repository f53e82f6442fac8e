"""The option groups several `kbn` subcommands share, and how their values reach the library.

The data options (`--data`, `--data-dir`, the sizes, `--seed`) and the data
set they name; `--json`'s one line; the options generated from a config
dataclass's fields (`TrainConfig`, `SearchConfig`, `LrFindConfig`). The
network options and `--preset` are in `kbn.cli.network`.
"""

import argparse
import dataclasses
import inspect
import json
import math
import typing

from kbn.cli.parser import (
    FLOAT32_MAX,
    non_negative_int,
    positive_int,
)
from kbn.data import load_data

# `kbn.load_data`'s defaults for the cut of the pool: what a command without them uses.
DATA_DEFAULTS = {
    name: inspect.signature(load_data).parameters[name].default
    for name in ("train_size", "val_size", "seed", "test_spec")
}


def add_data_options(parser, required=True, seed=True, recorded=False):
    """`--data`, `--data-dir`, `--train-size`, `--val-size` and, if `seed`, `--seed`.

    Args:
        parser: an argparse parser or argument group.
        required: whether `--data` must be given.
        seed: whether to add `--seed` (a command that groups it elsewhere says False).
        recorded: whether the sizes and the seed default to None, for a command that
            takes them from a saved model's record (`kbn.inference.record.recorded_cut`)
            and else from `DATA_DEFAULTS`.
    """
    parser.add_argument(
        "--data",
        required=required,
        metavar="SPEC",
        help="fashion_mnist, cifar10, folder:PATH or npz:PATH",
    )
    parser.add_argument("--data-dir", metavar="DIR", help="where the data set's files are")

    def default(otherwise):  # a recorded option's default, as its help says it
        return f" (default: the model's own, as kbn train --save recorded it; else {otherwise})"

    parser.add_argument(
        "--train-size",
        type=positive_int,
        metavar="N",
        help="training examples"
        + (
            default("the pool less the validation ones")
            if recorded
            else " (default: the pool less the validation ones)"
        ),
    )
    parser.add_argument(
        "--val-size",
        type=non_negative_int,
        default=None if recorded else DATA_DEFAULTS["val_size"],
        metavar="N",
        help="validation examples" + (default(DATA_DEFAULTS["val_size"]) if recorded else ""),
    )
    if seed:
        parser.add_argument(
            "--seed",
            type=int,
            default=None if recorded else DATA_DEFAULTS["seed"],
            help="seeds the split"
            + (default(DATA_DEFAULTS["seed"]) if recorded else ", weights, shuffling"),
        )


def load_dataset(args):
    """The `kbn.data.Dataset` that the parsed data options name."""
    return load_data(
        args.data,
        train_size=args.train_size,
        val_size=args.val_size,
        seed=args.seed,
        data_dir=args.data_dir,
        test_spec=getattr(args, "test_data", None),
    )


def emit(args, result, text):
    """Print `text` for people, or `result` as the last line for --json."""
    if args.json:
        print(json.dumps(result))
    else:
        print(text)


def add_config_options(parser, config_class, table=None):
    """One option per command-line field of the dataclass `config_class`.

    The flag is the field's name (`--batch-size` for `batch_size`), the
    default the field's, the value checked as `kbn.training.config.setting_error`
    says; a bool field gives `--name` and `--no-name`. A field that is not a
    bool, int, float or str needs a `type` (an argparse type) to be offered.

    Args:
        parser: an argparse parser.
        config_class: a dataclass whose fields may carry `kbn.training.config.setting`
            metadata: help, check, error, choices, cli, metavar.
        table: {field name: metadata} overriding or adding to the fields' own
            (for a dataclass without metadata), plus `type`: an argparse type.
    """
    hints = typing.get_type_hints(config_class)
    defaults = config_class()
    for field in dataclasses.fields(config_class):
        meta = {**field.metadata, **(table or {}).get(field.name, {})}
        kind = _base_type(hints[field.name])
        if not meta.get("cli", True) or (kind not in (bool, *_KINDS) and "type" not in meta):
            continue
        kwargs = {
            "dest": field.name,
            "default": getattr(defaults, field.name),
            "help": meta.get("help", ""),
        }
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif "type" in meta:
            kwargs["type"] = meta["type"]
        elif "choices" in meta:
            kwargs["choices"] = meta["choices"]
        else:
            kwargs["type"] = _setting_type(field, kind)
        if "metavar" in meta:
            kwargs["metavar"] = meta["metavar"]
        try:
            parser.add_argument("--" + field.name.replace("_", "-"), **kwargs)
        except argparse.ArgumentError:
            continue  # the command defines this option itself


def _base_type(hint):
    """float for `float | None`; the hint itself otherwise."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if len(args) == 1 and type(None) in typing.get_args(hint) else hint


_KINDS = {int: "an integer", float: "a number", str: "a string"}


def _setting_type(field, kind):
    """argparse type: the text as `kind`, then the field's own check."""
    from kbn.training.config import setting_error

    def parse(text):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            expected = _KINDS.get(kind, kind.__name__)
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if kind is float and not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
            raise argparse.ArgumentTypeError(f"{field.name} must be a float32 number, got {text!r}")
        message = setting_error(field, value)
        if message:
            raise argparse.ArgumentTypeError(message)
        return value

    return parse


def config_settings(args, config_class):
    """The fields of `config_class` found in the parsed `args`, as {name: value}."""
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(config_class)
        if hasattr(args, f.name)
    }
