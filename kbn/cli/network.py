"""`kbn train`'s network options, which `kbn lr-find` shares: `kbn.build_mlp`'s arguments as
flags (`MODEL_OPTIONS`), `--preset` (a recipe's settings as the defaults) and the model they
build (`build_model`).
"""

import argparse
import inspect

from kbn.cli.parser import (
    fraction,
    int_list,
    non_negative_float,
    non_negative_int,
)

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
    "pca": {
        "type": non_negative_int,
        "metavar": "K",
        "help": "keep the K leading principal components of the centred (with --whiten, "
        "whitened) and augmented inputs before the first layer; 0 keeps them all",
    },
    "test_time_flip": {
        "help": "test-time flip averaging: at inference (validation, the saved model's "
        "evaluate, predict, export) average the probabilities of each image and its mirror",
    },
}


def _build_mlp_defaults():
    """{build_mlp argument: its default}."""
    from kbn.nn.builder import build_mlp

    return {name: p.default for name, p in inspect.signature(build_mlp).parameters.items()}


def _model_defaults():
    """{option: default}: build_mlp's, then the report preset's network."""
    from kbn.training.presets import get_preset

    return model_options_from({**_build_mlp_defaults(), **get_preset("report").model})


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
        # What the preset leaves out is build_mlp's default, as `build_mlp(**preset.model)`
        # has it, not the command line's own (the report preset's network).
        network = model_options_from({**_build_mlp_defaults(), **preset.model})
        parser.set_defaults(**preset.data, **network, **preset.train)

    return apply


def model_settings(args):
    """The train command's model options -> build_mlp keyword arguments."""
    settings = {}
    for name, option in MODEL_OPTIONS.items():
        for target in option.get("to", (name,)):
            settings[target] = getattr(args, name)
    return settings
