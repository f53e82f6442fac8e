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

`kbn train`'s training options are generated from `kbn.training.config.TrainConfig`'s
fields (a new field declared with `kbn.training.config.setting` is a new flag), its
model options from `kbn.build_mlp`'s arguments (`MODEL_OPTIONS`), and `kbn
tune`'s from `tuning.search.SearchConfig`'s fields (`SEARCH_OPTIONS`).
"""

import argparse
import contextlib
import dataclasses
import inspect
import json
import math
import pathlib
import sys
import textwrap
import typing

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _shown_default(action):
    """An option's default as typed on the command line; "" for none worth showing."""
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


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Help with each option's default, and epilogs (the examples) as written."""

    def _get_help_string(self, action):
        help = action.help or ""
        shown = _shown_default(action)
        if not shown or "%(default)" in help or "(default" in help:
            return help
        return f"{help} (default: {shown})".strip()

    def _split_lines(self, text, width):
        # Keep a flag such as --no-flip whole on one line.
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one `error:` line like every other, and
    every option's help shows its default."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        description = kwargs.get("description")
        if description and "\n" not in description:  # one paragraph: wrap it
            kwargs["description"] = textwrap.fill(description, 79)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        # argparse prints no help line for an option without help: its
        # default would not show.
        if action.help is None and action.option_strings and _shown_default(action):
            action.help = "(default: " + _shown_default(action).replace("%", "%%") + ")"
        return action

    def error(self, message):
        raise _UsageError(f"{self.prog}: {message}")


class _UsageError(Exception):
    """The command line is wrong: exit status 2."""


class _Failure(Exception):
    """A valid command failed while running: exit status 1."""


@contextlib.contextmanager
def _running():
    """The work itself: a KbnError raised from here on is the run's failure
    (exit 1), not the command's (exit 2)."""
    from kbn.errors import KbnError

    try:
        yield
    except KbnError as exc:
        raise _Failure(str(exc)) from exc


def _positive_int(text):
    return _number(text, int, lambda v: v > 0, "a positive integer")


def _non_negative_int(text):
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


FLOAT32_MAX = 3.4028235e38  # training computes in float32


def _non_negative_float(text):
    return _number(text, float, lambda v: 0 <= v <= FLOAT32_MAX, "a number >= 0")


def _number(text, kind, ok, expected):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _fraction(text):
    return _number(text, float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def _int_list(text):
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


def _add_data_options(parser, required=True, seed=True):
    parser.add_argument("--data", required=required, metavar="SPEC",
                        help="fashion_mnist, cifar10, folder:PATH or npz:PATH")
    parser.add_argument("--data-dir", metavar="DIR", help="where the data set's files are")
    parser.add_argument("--train-size", type=_positive_int, metavar="N",
                        help="training examples (default: the pool less the validation ones)")
    parser.add_argument("--val-size", type=_non_negative_int, default=5000, metavar="N",
                        help="validation examples")
    if seed:
        parser.add_argument("--seed", type=int, default=0, help="seeds the split, weights, shuffling")


def _load(args):
    from kbn.data import load_data

    return load_data(
        args.data,
        train_size=args.train_size,
        val_size=args.val_size,
        seed=args.seed,
        data_dir=args.data_dir,
        test_spec=getattr(args, "test_data", None),
    )


def _emit(args, result, text):
    """Print `text` for people, or `result` as the last line for --json."""
    if args.json:
        print(json.dumps(result))
    else:
        print(text)


# --------------------------------------------------------------------------
# kbn train
# --------------------------------------------------------------------------


def _add_config_options(parser, config_class, table=None):
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
        kwargs = {"dest": field.name, "default": getattr(defaults, field.name), "help": meta.get("help", "")}
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
            raise argparse.ArgumentTypeError(f"expected {_KINDS.get(kind, kind.__name__)}, got {text!r}") from None
        if kind is float and not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
            raise argparse.ArgumentTypeError(f"{field.name} must be a float32 number, got {text!r}")
        message = setting_error(field, value)
        if message:
            raise argparse.ArgumentTypeError(message)
        return value

    return parse


def _config_settings(args, config_class):
    """The fields of `config_class` found in the parsed `args`."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(config_class) if hasattr(args, f.name)}


# kbn train's model options: build_mlp's arguments, under build_mlp's names
# (--lam, --bn-momentum, ...), each with how the command line takes it. Their
# defaults are build_mlp's, then the `report` preset's network: without a
# preset, `kbn train` trains the report's net with the report's protocol
# (TrainConfig's defaults). `to`: the build_mlp arguments an option sets.
MODEL_OPTIONS = {
    "hidden": {"type": _int_list, "metavar": "W1,W2,...",
               "help": "hidden widths; '' for none (softmax regression)"},
    "batch_norm": {"help": "BatchNorm after each hidden Dense"},
    "gamma_beta": {"to": ("center", "scale"),
                   "help": "BatchNorm's learnable scale gamma and shift beta (build_mlp's scale, center)"},
    "init": {"help": "kernel init: he, xavier, or small (N(0, 1e-4^2), the report's)"},
    "lam": {"type": _non_negative_float, "metavar": "LAMBDA", "help": "L2 penalty lambda on every kernel"},
    "bn_momentum": {"type": _fraction, "metavar": "ALPHA",
                    "help": "BatchNorm's moving-average factor, the report's alpha"},
    "dropout": {"type": _fraction, "metavar": "RATE", "help": "dropout rate after each hidden layer"},
    "flip": {"help": "random horizontal flips of the training images"},
    "translate": {"type": _fraction, "metavar": "FRACTION",
                  "help": "random shifts of the training images, up to this fraction of their size"},
    "whiten": {"type": _non_negative_float, "metavar": "EPSILON",
               "help": "ZCA whitening of the centred inputs with this epsilon (0.1 for CIFAR-10 "
                       "pixels scaled to [0, 1]), learnt from the training images; 0 for none"},
}


def _model_defaults():
    """{option: default}: build_mlp's, then the report preset's network."""
    from kbn.nn.builder import build_mlp
    from kbn.training.presets import get_preset

    parameters = inspect.signature(build_mlp).parameters
    settings = {name: p.default for name, p in parameters.items()}
    settings.update(get_preset("report").model)
    return _model_options_from(settings)


def _model_options_from(settings):
    """build_mlp keyword arguments -> the train command's model options."""
    options = {}
    for name, option in MODEL_OPTIONS.items():
        targets = option.get("to", (name,))
        if any(t in settings for t in targets):
            values = [settings[t] for t in targets if t in settings]
            options[name] = all(values) if len(targets) > 1 else values[0]
    return options


def _add_model_options(parser):
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
        parser.add_argument("--" + name.replace("_", "-"), **{k: v for k, v in kwargs.items() if v is not None})


def _model_settings(args):
    """The train command's model options -> build_mlp keyword arguments."""
    settings = {}
    for name, option in MODEL_OPTIONS.items():
        for target in option.get("to", (name,)):
            settings[target] = getattr(args, name)
    return settings


def _train_parser(sub):
    from kbn.training.config import TrainConfig
    from kbn.training.presets import PRESETS

    p = sub.add_parser(
        "train", help="train a k-layer network and log it to TensorBoard",
        description="Train a k-layer fully connected network with mini-batch SGD and momentum; "
                    "curves go to TensorBoard under --logdir, figures to the run's summary.json. "
                    "Without --preset, the report's network and protocol.",
    )
    data = p.add_argument_group("data")
    _add_data_options(data, seed=False)
    data.add_argument("--test-data", metavar="SPEC", help="a second SPEC whose images form the test split")
    p.add_argument("--preset", choices=PRESETS, metavar="NAME",
                   help=f"a recipe ({', '.join(PRESETS)}) whose settings become the defaults; "
                        "flags given override them")
    _add_model_options(p.add_argument_group("network (kbn.build_mlp)"))
    _add_config_options(p.add_argument_group("training (kbn.TrainConfig)"), TrainConfig)
    p.add_argument("--json", action="store_true", help="last stdout line: the run's figures as JSON")
    p.set_defaults(func=_train, apply_preset=_apply_preset(p))


def _apply_preset(parser):
    """Make a preset's settings the train command's defaults, then reparse:
    flags on the command line still win."""

    def apply(name):
        from kbn.training.presets import get_preset

        preset = get_preset(name)
        targets = {t for option_name, option in MODEL_OPTIONS.items() for t in option.get("to", (option_name,))}
        model = {k: v for k, v in preset.model.items() if k not in targets}
        if model:  # a preset the command line cannot express would train another net
            raise ValueError(f"preset {name!r} sets {sorted(model)}: not options of kbn train")
        parser.set_defaults(**preset.data, **_model_options_from(preset.model), **preset.train)

    return apply


def _train(args):
    from kbn.training.config import TrainConfig
    from kbn.nn.builder import build_mlp
    from kbn.training.trainer import train

    from kbn.training.distribute import make_strategy
    from kbn.nn.precision import resolve

    config = TrainConfig(**_config_settings(args, TrainConfig), verbose=0 if args.json else 1)
    config.validate()
    # "auto" (the cifar10-mlp preset's) becomes what this machine runs best,
    # said in one line; the run's config records the precision it trained in.
    precision, notice = resolve(config.precision)
    config = dataclasses.replace(config, precision=precision)
    if notice:
        print(notice, file=sys.stderr if args.json else sys.stdout)
    # Before anything else runs TensorFlow: devices are set up at its start.
    strategy = make_strategy(config.strategy, config.replicas)
    dataset = _load(args)
    settings = _model_settings(args)
    with strategy.scope():
        model = build_mlp(
            num_classes=dataset.num_classes,
            adapt=dataset.train.x,
            seed=args.seed,
            class_names=dataset.class_names,
            precision=config.precision,
            **settings,
        )
    if not args.json:
        print(f"data: {dataset.name}: {len(dataset.train)} train, {len(dataset.val)} val, "
              f"{len(dataset.test) if dataset.test else 0} test, {dataset.num_classes} classes")
        print("model: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
        print("training: " + ", ".join(f"{k}={v}" for k, v in _shown_settings(config).items()))
        if strategy.num_replicas_in_sync > 1:
            print(f"devices: {config.strategy}, {strategy.num_replicas_in_sync} replicas")
    with _running():
        result = train(model, dataset, config)
    final = result.summary["final"]
    figures = {
        **{k: final[k] for k in ("train_acc", "val_acc", "test_acc", "train_loss", "val_loss") if k in final},
        "epochs_run": result.summary["epochs_run"],
        "seconds_per_epoch": result.summary["seconds_per_epoch"],
        "diverged": result.diverged,
        "run_dir": str(result.run_dir),
        "model_path": str(result.model_path) if result.model_path else None,
    }
    lines = [f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}"
             for k, v in figures.items() if v is not None and k != "diverged"]
    if result.diverged:
        lines.insert(0, f"stopped early: {result.diverged}")
    lines.append(f"curves: tensorboard --logdir {args.logdir}")
    _emit(args, figures, "\n".join(lines))


def _shown_settings(config):
    """The training settings a person chose: the run's own, not kbn's plumbing.

    The optimizer's numbers, the schedule's, the epochs and batch, the seed,
    and where the run goes; options left at None (a schedule's unused
    setting) are not shown. summary.json keeps the whole config.
    """
    hidden = {"steps_per_execution", "verbose", "plot_curves", "gradcheck_every", "divergence_factor",
              "optimizer", "resume", "save"}
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in hidden and v is not None}


# --------------------------------------------------------------------------
# kbn evaluate
# --------------------------------------------------------------------------


def _evaluate_parser(sub):
    p = sub.add_parser("evaluate", help="accuracy, loss, per-class accuracy and confusion matrix "
                                        "of a saved model on a data split")
    p.add_argument("model", metavar="MODEL.keras")
    _add_data_options(p)
    p.add_argument("--split", choices=("test", "val", "train", "all"), default="test")
    p.add_argument("--confusion", metavar="PATH.png",
                   help="draw the confusion matrix (of all the splits evaluated) there")
    p.add_argument("--json", action="store_true",
                   help="last stdout line: the figures, per-class accuracy and confusion matrix as JSON")
    p.set_defaults(func=_evaluate)


def _evaluate(args):
    from kbn.inference.evaluate import evaluate, load_model

    model = load_model(args.model)
    if args.split == "test":
        args.train_size, args.val_size = None, 0  # the test split needs no cut of the pool
    dataset = _load(args)
    result = evaluate(model, dataset, args.split)
    # One line per split, its name first; the per-class accuracies on the same line.
    lines = [
        f"{name}: accuracy {r['accuracy']:.4f}, loss {r['loss']:.4f}, n {r['n']}; per class: "
        + ", ".join(f"{c} {'-' if a is None else format(a, '.4f')}" for c, a in r["per_class"].items())
        for name, r in result["splits"].items()
    ]
    if args.confusion:
        from kbn.plots.figures import plot_confusion

        splits = "+".join(result["splits"])
        result["confusion_png"] = str(plot_confusion(
            result["confusion"], result["class_names"], args.confusion,
            title=f"{args.model} on {dataset.name} ({splits})",
        ))
        lines.append(f"confusion matrix: {result['confusion_png']}")
    _emit(args, result, "\n".join(lines))


# --------------------------------------------------------------------------
# kbn predict
# --------------------------------------------------------------------------


def _predict_parser(sub):
    p = sub.add_parser("predict", help="the class of each image file, with its probability")
    p.add_argument("model", metavar="MODEL.keras")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files (JPEG, PNG, ...) or folders of them (searched recursively)")
    p.add_argument("--top", type=_positive_int, default=1, metavar="K",
                   help="the K most probable classes per image (default: 1)")
    p.add_argument("--json", action="store_true", help="last stdout line: the predictions as JSON")
    p.set_defaults(func=_predict)


def _predict(args):
    from kbn.inference.evaluate import load_model
    from kbn.inference.predict import predict

    predictions = predict(load_model(args.model), args.images, top=args.top)
    lines = [
        f"{p['path']}: " + ", ".join(f"{t['class']} {t['probability']:.4f}" for t in p["top"])
        + (f" (resized from {p['resized'][1]}x{p['resized'][0]})" if p["resized"] else "")
        for p in predictions
    ]
    _emit(args, {"predictions": predictions}, "\n".join(lines))


# --------------------------------------------------------------------------
# kbn export
# --------------------------------------------------------------------------


def _export_parser(sub):
    p = sub.add_parser("export", help="a TensorFlow SavedModel serving raw uint8 images")
    p.add_argument("model", metavar="MODEL.keras")
    p.add_argument("directory", metavar="DIR", help="the SavedModel's folder (new, or empty)")
    p.add_argument("--json", action="store_true", help="last stdout line: the SavedModel's signature as JSON")
    p.set_defaults(func=_export)


def _export(args):
    from kbn.inference.evaluate import load_model
    from kbn.inference.export import SIGNATURE, export
    from kbn.nn.builder import class_names

    model = load_model(args.model)
    directory = export(model, args.directory)
    result = {"directory": str(directory), "signature": SIGNATURE,
              "input_shape": [None, *model.input_shape[1:]], "class_names": class_names(model)}
    shape = ", ".join(str(d) for d in result["input_shape"])
    text = (f"SavedModel in {directory}: {SIGNATURE}(images: uint8 ({shape})) -> "
            f"probabilities float32 (None, {len(result['class_names'])}), classes int64 (None,), "
            f"class_names string (None,)")
    _emit(args, result, text)


# --------------------------------------------------------------------------
# kbn gradcheck
# --------------------------------------------------------------------------


def _gradcheck_parser(sub):
    p = sub.add_parser(
        "gradcheck", help="the report's gradient-check table",
        description="Hand-written gradients of a k-layer net against centred finite differences "
                    "and TensorFlow autodiff, per weight and batch size.",
    )
    p.add_argument("--hidden", type=_int_list, default=[50], metavar="W1,W2,...", help="hidden widths")
    p.add_argument("--batch-sizes", type=_int_list, default=[10, 20, 30], metavar="N1,N2,...",
                   help="a table row per batch size: the first N examples")
    p.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=True,
                   help="BatchNorm after each hidden Dense")
    p.add_argument("--lam", type=_non_negative_float, default=0.0, metavar="LAMBDA",
                   help="L2 penalty lambda (the report's check: 0)")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                   help="of the hand-written and autodiff gradients; numerical ones are float64")
    p.add_argument("--data", metavar="SPEC", help="check on these images (default: random pixels)")
    p.add_argument("--data-dir", metavar="DIR")
    p.add_argument("--dim", type=_positive_int, default=100,
                   help="input features kept, the first DIM (default: 100)")
    p.add_argument("--max-entries", type=_positive_int, metavar="N",
                   help="check N random entries per weight instead of all")
    p.add_argument("--seed", type=int, default=0, help="seeds the weights and the random pixels")
    p.add_argument("--json", action="store_true", help="last stdout line: the table as JSON")
    p.set_defaults(func=_gradcheck)


def _gradcheck(args):
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
        "rows": [{k: r[k] for k in ("batch_size", "param", "rel_error", "max_entry_error")} for r in rows],
        "max_rel_error": max(r["rel_error"] for r in rows),
        "max_rel_error_autodiff": max(r["rel_error_autodiff"] for r in rows),
    }
    text = "\n".join([
        "Relative error |g_a - g_n| / max(eps, |g_a| + |g_n|), hand-written vs numerical:",
        format_table(rows),
        "",
        "Largest single-entry error (noise-bound for entries below ~1e-5):",
        format_table(rows, "max_entry_error"),
        "",
        f"hand-written vs autodiff: {result['max_rel_error_autodiff']:.2e}",
    ])
    _emit(args, result, text)


# --------------------------------------------------------------------------
# kbn tune
# --------------------------------------------------------------------------


def _validation_freq(text):
    from kbn.training.config import parse_validation_freq

    return parse_validation_freq(text)


def _range(text):
    """'0.01:0.7' -> (0.01, 0.7)."""
    try:
        low, high = (float(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH such as 0.01:0.7, got {text!r}") from None
    return low, high


# How `kbn tune` offers `tuning.search.SearchConfig`'s fields (which carry
# no metadata of their own): a field missing here still gets a flag, with
# SearchConfig.validate checking its value.
SEARCH_OPTIONS = {
    "rounds": {"help": "shrinking intervals", "metavar": "N"},
    "trials": {"help": "trials in all rounds together", "metavar": "N"},
    "epochs": {"help": "epochs per trial", "metavar": "N"},
    "eta_range": {"type": _range, "metavar": "LOW:HIGH", "help": "eta's first interval (log scale)"},
    "lam_range": {"type": _range, "metavar": "LOW:HIGH", "help": "lambda's first interval (log scale)"},
    "architecture": {"help": "also search depth, width, batch norm"},
    "gamma_beta": {"help": "BatchNorm's learnable gamma and beta (the seed's network has none)"},
    "pruning": {"help": "stop hopeless trials: asha, median, or none (every trial runs every epoch)"},
    "validation_freq": {"type": _validation_freq, "metavar": "N|E,E,...",
                        "help": "trials validate every N epochs, or at those listed, and after the last "
                                "(default: the epochs the pruning rule judges, and the last)"},
    "backup_interval": {"help": "seconds between a trial's backups (0: every epoch); a killed trial resumes "
                                "from its last one", "metavar": "SECONDS"},
    "directory": {"help": "searches' root", "metavar": "DIR"},
    "project": {"help": "this search's folder name", "metavar": "NAME"},
    "resume": {"help": "continue the search --project where it stopped"},
    "workers": {"help": "run N worker processes and a chief on 127.0.0.1 (0: one process)", "metavar": "N"},
    "recycle_after": {"help": "with --workers: restart a worker after N trials, keeping memory flat",
                      "metavar": "N"},
    "seed": {"cli": False},  # --seed, with the data options
    "verbose": {"cli": False},  # --json
}


def _tune_parser(sub):
    from tuning.search import SearchConfig

    p = sub.add_parser(
        "tune", help="coarse-to-fine search of eta and lambda (KerasTuner)",
        description="Rounds of KerasTuner random search of eta and lambda on a log scale, each round's "
                    "box shrunk around the best trials; each trial is a kbn training run.",
    )
    _add_data_options(p)
    p.add_argument("--json", action="store_true", help="last stdout line: the search's figures as JSON")
    p.set_defaults(func=_tune)
    # Last, so that an option written out above keeps its own definition.
    _add_config_options(p, SearchConfig, SEARCH_OPTIONS)


def _tune(args):
    from tuning.search import SearchConfig, search

    config = SearchConfig(**_config_settings(args, SearchConfig), verbose=0 if args.json else 1)
    config.validate()
    dataset = _load(args)
    with _running():
        result = search(dataset, config)
    if result is None:  # a worker of a search spanning machines: the chief reports
        return
    figures = result.figures()  # best, rounds, trials_completed/_stopped/_failed, epochs_trained, ...
    best = result.best
    lines = [
        f"round {i}: eta {r['eta_range'][0]:.4g}..{r['eta_range'][1]:.4g}, "
        f"lambda {r['lam_range'][0]:.4g}..{r['lam_range'][1]:.4g}, {r['trials']} trials, "
        f"best val acc {r['best_val_acc'] if r['best_val_acc'] is None else format(r['best_val_acc'], '.4f')}"
        for i, r in enumerate(result.rounds, start=1)
    ]
    lines.append(
        f"best: eta {best['eta']:.4g}, lambda {best['lam']:.4g}, val acc {best['val_acc']:.4f}"
        if best else "best: none (every trial failed)"
    )
    lines.append(
        f"{result.trials_completed} trials completed, {result.trials_stopped} stopped early, "
        f"{result.trials_failed} failed; {result.epochs_trained} epochs in {result.seconds:.0f} s; "
        f"results in {result.project_dir}"
    )
    _emit(args, figures, "\n".join(lines))


# --------------------------------------------------------------------------
# kbn reproduce
# --------------------------------------------------------------------------


def _reproduce_parser(sub):
    p = sub.add_parser(
        "reproduce", help="the seed report's four studies -> report.md and figures",
        description="The report's four studies (gradient check, 3-layer net with and without batch "
                    "norm, coarse-to-fine search, eta study) -> DIR/report.md, its figures, and every "
                    "run's TensorBoard folder under DIR/logs.",
    )
    p.add_argument("--data", required=True, metavar="SPEC", help="fashion_mnist, cifar10, folder:PATH or npz:PATH")
    p.add_argument("--data-dir", metavar="DIR", help="where the data set's files are")
    p.add_argument("--out", metavar="DIR", help="report folder (default: reports/<data set name>)")
    p.add_argument("--quick", action="store_true", help="small sizes: about 5 minutes on 2 cores")
    p.add_argument("--seed", type=int, default=0, help="seeds the splits, weights and shuffles")
    p.add_argument("--json", action="store_true",
                   help="progress on stderr; last stdout line: the report's files and every run's figures")
    p.set_defaults(func=_reproduce)


def _reproduce(args):
    from kbn.fileio import read_json
    from kbn.report.reproduction import default_out, reproduce

    out = pathlib.Path(args.out or default_out(args.data))
    command = "kbn " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["reproduce"] else None
    stream = sys.stderr if args.json else sys.stdout
    with _running():
        path = reproduce(args.data, out, quick=args.quick, data_dir=args.data_dir, seed=args.seed,
                         command=command, progress=lambda line: print(line, file=stream, flush=True))
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


# --------------------------------------------------------------------------
# kbn bench
# --------------------------------------------------------------------------


def _bench_parser(sub):
    from kbn.bench.epoch_time import IMPLEMENTATIONS, SEED_NET
    from kbn.nn.precision import PRECISIONS

    p = sub.add_parser("bench", help="seconds per epoch: NumPy vs Keras vs kbn, kbn in each precision")
    p.add_argument("--data", default="synthetic", metavar="SPEC",
                   help="synthetic (random CIFAR-10-shaped pixels) or a data SPEC")
    p.add_argument("--data-dir", metavar="DIR")
    p.add_argument("--train-size", type=_positive_int, default=10_000, metavar="N")
    p.add_argument("--val-size", type=_non_negative_int, default=0, metavar="N",
                   help="validation images evaluated every epoch (default: 0)")
    p.add_argument("--epochs", type=_positive_int, default=6, help="per run; the first is warm-up")
    p.add_argument("--repeats", type=_positive_int, default=3, help="runs per implementation")
    p.add_argument("--batch-size", type=_positive_int, default=100)
    p.add_argument("--only", type=lambda text: text.split(","), default=list(IMPLEMENTATIONS),
                   metavar="NAMES", help=f"comma-separated subset of {','.join(IMPLEMENTATIONS)}")
    p.add_argument("--hidden", type=_int_list, default=list(SEED_NET["hidden"]), metavar="W1,W2,...",
                   help="kbn's hidden widths, BN after each (NumPy and Keras keep the seed net's 50,30)")
    p.add_argument("--precision", type=lambda text: text.split(","), default=["float32"], metavar="NAMES",
                   help=f"kbn's precisions, comma-separated, each a row: {','.join(PRECISIONS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_bench)


def _bench(args):
    from kbn.bench.epoch_time import epoch_times, format_result

    result = epoch_times(
        args.data, train_size=args.train_size, val_size=args.val_size, epochs=args.epochs,
        repeats=args.repeats, batch_size=args.batch_size, implementations=args.only,
        data_dir=args.data_dir, seed=args.seed, hidden=args.hidden, precisions=args.precision,
    )
    _emit(args, dataclasses.asdict(result), format_result(result))


# --------------------------------------------------------------------------


DESCRIPTION = """\
kbn trains k-layer fully connected networks with batch normalization, in Keras 3,
whose backward passes are written by hand and checked against autodiff and
finite differences: train and evaluate nets, print the gradient-check table,
search eta and lambda with KerasTuner, and reproduce the seed report's studies.
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

# A few commands per subcommand, shown under its --help.
EXAMPLES = {
    "train": [
        "kbn train --data fashion_mnist",
        "kbn train --data folder:cifar10-jpeg/train --preset cifar10-mlp --save cifar.keras",
        "kbn train --data npz:data.npz --hidden 100,50 --no-batch-norm --init xavier --lam 1e-4",
        "kbn train --data cifar10 --schedule cyclic --eta 0.1 --eta-min 0.01 --epochs 40 --json",
        "kbn train --data cifar10 --run-name long --resume",
    ],
    "evaluate": [
        "kbn evaluate cifar.keras --data cifar10",
        "kbn evaluate cifar.keras --data folder:cifar10-jpeg/train --split all --json",
    ],
    "predict": [
        "kbn predict cifar.keras cat.jpg dog.png",
        "kbn predict cifar.keras photos/ --top 3 --json",
    ],
    "export": [
        "kbn export cifar.keras serving/cifar",
    ],
    "gradcheck": [
        "kbn gradcheck",
        "kbn gradcheck --hidden 50,30 --no-batch-norm --lam 0.01 --max-entries 20",
    ],
    "tune": [
        "kbn tune --data fashion_mnist --trials 30 --epochs 5",
        "kbn tune --data cifar10 --architecture --workers 2 --project wide --json",
        "kbn tune --data cifar10 --project wide --resume",
    ],
    "reproduce": [
        "kbn reproduce --data fashion_mnist --quick",
        "kbn reproduce --data folder:cifar10-jpeg/train --out reports/cifar10 --json",
    ],
    "bench": [
        "kbn bench",
        "kbn bench --data folder:cifar10-jpeg/train --only numpy,kbn --json",
    ],
}


def build_parser():
    """The `kbn` argument parser with every subcommand."""
    from kbn import __version__

    parser = _Parser(prog="kbn", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser,
                                metavar="COMMAND", title="commands")
    _train_parser(sub)
    _evaluate_parser(sub)
    _predict_parser(sub)
    _export_parser(sub)
    _gradcheck_parser(sub)
    _tune_parser(sub)
    _reproduce_parser(sub)
    _bench_parser(sub)
    for name, command in sub.choices.items():
        if name in EXAMPLES and not command.epilog:
            command.epilog = "examples:\n" + "\n".join("  " + line for line in EXAMPLES[name])
    return parser


def main(argv=None):
    """Entry point of the `kbn` console script; returns the exit status.

    0: done; 1: the command was valid but running it failed; 2: the command
    is wrong (nothing ran); 130: interrupted. See the module's docstring.
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
    except (_UsageError, KbnError) as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return EXIT_USAGE
    except _Failure as exc:
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


if __name__ == "__main__":
    sys.exit(main())
