"""The option groups several `kbn` subcommands share, and how their values reach the library.

The data options (`--data`, `--data-dir`, the sizes, `--seed`) and the data
set they name; `--json`'s one line; the options generated from a config
dataclass's fields (`TrainConfig`, `SearchConfig`, `LrFindConfig`); `kbn train`'s
model options, generated from `kbn.build_mlp`'s arguments (`MODEL_OPTIONS`),
which `kbn lr-find` shares; and `--preset`'s defaults (`preset_applier`).
"""

import argparse
import dataclasses
import inspect
import json
import math
import typing

from kbn.cli.parser import (
    FLOAT32_MAX,
    fraction,
    int_list,
    non_negative_float,
    non_negative_int,
    positive_int,
)


def add_data_options(parser, required=True, seed=True):
    """`--data`, `--data-dir`, `--train-size`, `--val-size` and, if `seed`, `--seed`.

    Args:
        parser: an argparse parser or argument group.
        required: whether `--data` must be given.
        seed: whether to add `--seed` (a command that groups it elsewhere says False).
    """
    parser.add_argument(
        "--data",
        required=required,
        metavar="SPEC",
        help="fashion_mnist, cifar10, folder:PATH or npz:PATH",
    )
    parser.add_argument("--data-dir", metavar="DIR", help="where the data set's files are")
    parser.add_argument(
        "--train-size",
        type=positive_int,
        metavar="N",
        help="training examples (default: the pool less the validation ones)",
    )
    parser.add_argument(
        "--val-size", type=non_negative_int, default=5000, metavar="N", help="validation examples"
    )
    if seed:
        parser.add_argument(
            "--seed", type=int, default=0, help="seeds the split, weights, shuffling"
        )


def load_dataset(args):
    """The `kbn.data.Dataset` that the parsed data options name."""
    from kbn.data import load_data

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


# kbn train's model options: build_mlp's arguments, under build_mlp's names
# (--lam, --bn-momentum, ...), each with how the command line takes it. Their
# defaults are build_mlp's, then the `report` preset's network: without a
# preset, `kbn train` trains the report's net with the report's protocol
# (TrainConfig's defaults). `to`: the build_mlp arguments an option sets.
MODEL_OPTIONS = {
    "hidden": {
        "type": int_list,
        "metavar": "W1,W2,...",
        "help": "hidden widths; '' for none (softmax regression)",
    },
    "batch_norm": {"help": "BatchNorm after each hidden Dense"},
    "gamma_beta": {
        "to": ("center", "scale"),
        "help": "BatchNorm's learnable scale gamma and shift beta (build_mlp's scale, center)",
    },
    "init": {"help": "kernel init: he, xavier, or small (N(0, 1e-4^2), the report's)"},
    "lam": {
        "type": non_negative_float,
        "metavar": "LAMBDA",
        "help": "L2 penalty lambda on every kernel",
    },
    "bn_momentum": {
        "type": fraction,
        "metavar": "ALPHA",
        "help": "BatchNorm's moving-average factor, the report's alpha",
    },
    "dropout": {
        "type": fraction,
        "metavar": "RATE",
        "help": "dropout rate after each hidden layer",
    },
    "flip": {"help": "random horizontal flips of the training images"},
    "translate": {
        "type": fraction,
        "metavar": "FRACTION",
        "help": "random shifts of the training images, up to this fraction of their size",
    },
    "whiten": {
        "type": non_negative_float,
        "metavar": "EPSILON",
        "help": "ZCA whitening of the centred inputs with this epsilon (0.1 for CIFAR-10 "
        "pixels scaled to [0, 1]), learnt from the training images; 0 for none",
    },
}


def _model_defaults():
    """{option: default}: build_mlp's, then the report preset's network."""
    from kbn.nn.builder import build_mlp
    from kbn.training.presets import get_preset

    parameters = inspect.signature(build_mlp).parameters
    settings = {name: p.default for name, p in parameters.items()}
    settings.update(get_preset("report").model)
    return model_options_from(settings)


def model_options_from(settings):
    """build_mlp keyword arguments -> the train command's model options.

    Args:
        settings: {build_mlp argument: value}, some or all of them.

    Returns:
        {model option: value} for each option whose arguments `settings` holds.
    """
    options = {}
    for name, option in MODEL_OPTIONS.items():
        targets = option.get("to", (name,))
        if any(t in settings for t in targets):
            values = [settings[t] for t in targets if t in settings]
            options[name] = all(values) if len(targets) > 1 else values[0]
    return options


def add_model_options(parser):
    """One option per entry of `MODEL_OPTIONS`, its default build_mlp's or the report preset's."""
    from kbn.nn.builder import INITS

    defaults = _model_defaults()
    for name, option in MODEL_OPTIONS.items():
        kwargs = {"dest": name, "default": defaults[name], "help": option["help"]}
        if isinstance(defaults[name], bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = option.get("type")
        if "metavar" in option:
            kwargs["metavar"] = option["metavar"]
        if name == "init":
            kwargs["choices"] = INITS
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        parser.add_argument("--" + name.replace("_", "-"), **kwargs)


def add_preset_option(parser, becomes="settings"):
    """`--preset NAME`: a recipe of `kbn.training.presets` whose `becomes` are the defaults.

    `kbn.cli.main` applies it through the parser's `apply_preset` (`preset_applier`).
    """
    from kbn.training.presets import PRESETS

    parser.add_argument(
        "--preset",
        choices=PRESETS,
        metavar="NAME",
        help=f"a recipe ({', '.join(PRESETS)}) whose {becomes} become the defaults; "
        "flags given override them",
    )
    parser.set_defaults(apply_preset=preset_applier(parser))


def build_model(args, dataset, precision):
    """The network the parsed model options describe, for `dataset`'s inputs and classes.

    Returns:
        (the compiled `build_mlp` model, the model settings taken from `args`).
    """
    from kbn.nn.builder import build_mlp

    settings = model_settings(args)
    model = build_mlp(
        num_classes=dataset.num_classes,
        adapt=dataset.train.x,
        seed=args.seed,
        class_names=dataset.class_names,
        precision=precision,
        **settings,
    )
    return model, settings


def preset_applier(parser):
    """The function that makes a preset's settings `parser`'s defaults.

    `kbn.cli.main` calls it with `--preset`'s name, then parses again: flags
    on the command line still win. The preset's `data` and `train` settings
    become defaults under their own names, its `model` settings under the
    model options' (`model_options_from`).

    Args:
        parser: the subcommand's parser, holding the model options.

    Returns:
        a function of a preset's name.
    """

    def apply(name):
        from kbn.training.presets import get_preset

        preset = get_preset(name)
        targets = {t for option, meta in MODEL_OPTIONS.items() for t in meta.get("to", (option,))}
        model = {k: v for k, v in preset.model.items() if k not in targets}
        if model:  # a preset the command line cannot express would train another net
            raise ValueError(f"preset {name!r} sets {sorted(model)}: not options of {parser.prog}")
        parser.set_defaults(**preset.data, **model_options_from(preset.model), **preset.train)

    return apply


def model_settings(args):
    """The train command's model options -> build_mlp keyword arguments."""
    settings = {}
    for name, option in MODEL_OPTIONS.items():
        for target in option.get("to", (name,)):
            settings[target] = getattr(args, name)
    return settings
