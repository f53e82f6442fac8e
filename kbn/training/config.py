"""TrainConfig: every setting of a training run, in one place.

Printed at the start of `kbn train`, saved in each run's summary.json, and
the source of `kbn train`'s training options: each field is declared with
`setting(default, help, ...)`, whose metadata says what the option means,
which values are valid, and how the command line offers it. A new field
declared that way is checked by `TrainConfig.check` and becomes a
`kbn train` flag (`--field-name`) without touching kbn/cli/__init__.py:

    precision: str = setting("float32", "compute dtype", choices=("float32", "mixed"))

Metadata keys (all optional but `help`):
    help: one line, shown by `kbn train --help`.
    check: a predicate on a value that is not None; `error` says what failed.
    error: the message when `check` fails, with `{value}` for the value.
    choices: the valid values (a check of their own).
    cli: False for a setting that is not a command-line option.
    metavar: the option's placeholder in the help.
    type: an argparse type, for a field that is not a bool, int, float or str.
"""

import dataclasses
import warnings
from collections.abc import Iterable

from kbn.errors import KbnError
from kbn.nn.precision import AUTO, PRECISIONS
from kbn.optim.schedules import SCHEDULES

STRATEGIES = ("default", "mirrored", "multi-worker")


def setting(
    default, help, *, check=None, error=None, choices=None, cli=True, metavar=None, type=None
):
    """A dataclass field carrying what the CLI and `TrainConfig.check` need to know.

    Args:
        default: the field's default value.
        help: one line on what the setting does.
        check: callable, value -> bool, for values that are not None.
        error: message format for a failed check, with `{value}`.
        choices: tuple of valid values.
        cli: whether `kbn train` offers it as a flag.
        metavar: placeholder for the value in `--help`.
        type: how the command line reads the value (an argparse type), for
            a field that is not a bool, int, float or str.

    Returns:
        A `dataclasses.field`.
    """
    metadata = {"help": help, "cli": cli}
    for key, value in (
        ("check", check),
        ("error", error),
        ("choices", choices),
        ("metavar", metavar),
        ("type", type),
    ):
        if value is not None:
            metadata[key] = value
    return dataclasses.field(default=default, metadata=metadata)


def setting_like(config_class, name, **changes):
    """A new field with the default, help and checks of `config_class`'s field `name`.

    Another config that shares a setting with `TrainConfig` (the batch size, SGD's
    momentum) declares it this way, so the two check and document it alike.

    Args:
        config_class: a dataclass whose fields were declared with `setting`.
        name: the field to copy.
        **changes: metadata to replace, e.g. `help=`.

    Returns:
        A `dataclasses.field`.
    """
    field = next(f for f in dataclasses.fields(config_class) if f.name == name)
    return dataclasses.field(default=field.default, metadata={**field.metadata, **changes})


def setting_error(field, value):
    """The message saying why `value` is not valid for `field`, or None.

    Args:
        field: a `dataclasses.Field` declared with `setting`.
        value: a candidate value for it.
    """
    meta = field.metadata
    if value is None:
        return None
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        return f"{field.name} must be one of {', '.join(map(str, choices))}, got {value!r}"
    check = meta.get("check")
    if check is not None and not check(value):
        return meta.get("error", "{name} is out of range, got {value}").format(
            name=field.name, value=value
        )
    return None


def as_validation_freq(value):
    """A `validation_freq` as kbn takes it: an int >= 1 or a tuple of ints >= 1; None when it is
    neither."""

    def whole(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    if whole(value):
        return value
    if isinstance(value, (tuple, list)) and value and all(whole(v) for v in value):
        return tuple(value)
    return None


def parse_validation_freq(text):
    """The command line's `--validation-freq`: "5" -> 5, "1,3,10" -> (1, 3, 10)."""
    import argparse

    try:
        parts = tuple(int(part) for part in text.split(","))
    except ValueError:
        parts = ()
    value = as_validation_freq(parts[0] if len(parts) == 1 else parts)
    if value is None:
        raise argparse.ArgumentTypeError(
            "expected a positive number of epochs N or a list of epochs such as 1,3,10, "
            f"got {text!r}"
        )
    return value


@dataclasses.dataclass
class TrainConfig:
    """Every training setting in one place, printed and saved with each run."""

    # Mini-batch SGD with momentum, the report's protocol.
    eta: float = setting(
        0.0864,
        "initial learning rate (the top of the cycle for cyclic)",
        check=lambda v: v > 0,
        error="eta must be positive, got {value}",
    )
    momentum: float = setting(
        0.9,
        "SGD's momentum (BatchNorm's moving-average factor is --bn-momentum)",
        check=lambda v: 0 <= v < 1,
        error="momentum must be in [0, 1), got {value}",
    )
    schedule: str = setting(
        "exp",
        "exp: eta * decay**epoch; cyclic: triangular between eta-min and eta; "
        "cosine: eta down to eta-min; constant",
        choices=SCHEDULES,
    )
    decay: float = setting(
        0.8,
        "exp: factor per epoch",
        check=lambda v: 0 < v <= 1,
        error="decay must be in (0, 1], got {value}",
        metavar="FACTOR",
    )
    eta_min: float | None = setting(
        None,
        "cyclic: bottom of the cycle (default eta/10); cosine: the end (default 0)",
        check=lambda v: v > 0,
        error="eta_min must be in (0, eta], got {value}",
        metavar="ETA",
    )
    step_size: int | None = setting(
        None,
        "cyclic: steps per half cycle (default 2 epochs)",
        check=lambda v: v >= 1,
        error="step_size must be a positive number of steps, got {value}",
        metavar="STEPS",
    )
    epochs: int = setting(
        20,
        "passes over the training set",
        check=lambda v: v >= 0,
        error="epochs must be 0 or more, got {value}",
        metavar="N",
    )
    # Keras's fit(validation_freq=...), as Keras 2 took it: every N epochs, or
    # the listed ones (1-based). The last epoch always validates: its metrics
    # are the run's final validation metrics. A search needs only the epochs
    # it judges, and validating every epoch is a sizeable share of a search
    # of short trials (benchmarks/search_overhead.py).
    validation_freq: int | tuple = setting(
        1,
        (
            "validate every N epochs, or at the epochs listed (1,3,10); "
            "the last epoch always validates"
        ),
        check=lambda v: as_validation_freq(v) is not None,
        error=(
            "validation_freq must be a positive integer or a list of epochs (1-based), got {value}"
        ),
        metavar="N|E,E,...",
        type=parse_validation_freq,
    )
    batch_size: int = setting(
        100,
        "examples per mini-batch",
        check=lambda v: v >= 1,
        error="batch size must be a positive integer, got {value}",
        metavar="N",
    )
    label_smoothing: float = setting(
        0.0,
        "weight of the uniform target mixed into the labels (0: the report's plain cross-entropy)",
        check=lambda v: 0 <= v < 1,
        error="label smoothing must be in [0, 1), got {value}",
        metavar="EPSILON",
    )
    # Zhang et al. 2018; kbn.training.mixup.
    mixup: float = setting(
        0.0,
        "MixUp's alpha: each mini-batch mixed with itself reversed, by a weight "
        "drawn from Beta(alpha, alpha), and so are the labels (0: no mixing)",
        check=lambda v: v >= 0,
        error="mixup must be 0 (none) or an alpha > 0, got {value}",
        metavar="ALPHA",
    )
    seed: int = setting(0, "seeds the weights and the shuffling (kbn train: the data split too)")
    optimizer: object = setting(
        None, "another Keras optimizer instead of SGD with momentum (None: SGD)", cli=False
    )
    # The model's Keras dtype policy (kbn.nn.precision): kbn train builds the
    # model with it; a model built with build_mlp(precision=...) must agree.
    precision: str = setting(
        "float32",
        "float32; mixed_bfloat16 or mixed_float16: float32 weights, 16-bit "
        "matmuls (float16 with loss scaling); auto: mixed_bfloat16 where the "
        "CPU or GPU multiplies bfloat16 natively, else float32",
        choices=(*PRECISIONS, AUTO),
    )
    # Devices: default (one), mirrored (all GPUs, else `replicas` logical
    # CPU devices), multi-worker (machines named by TF_CONFIG).
    strategy: str = setting(
        "default",
        "default: one device; mirrored: all GPUs (else --replicas CPU "
        "devices); multi-worker: the machines in TF_CONFIG",
        choices=STRATEGIES,
    )
    replicas: int | None = setting(
        None,
        "mirrored on a CPU-only machine: logical CPU devices",
        check=lambda v: v >= 1,
        error="replicas must be a positive integer, got {value}",
        metavar="N",
    )
    # Tiny nets on a CPU are bound by per-call overhead: the compiled loop
    # (kbn.training.loop) runs this many mini-batches per call.
    steps_per_execution: int = setting(
        50,
        "mini-batches per call of the compiled training loop",
        check=lambda v: v >= 1,
        error="steps_per_execution must be positive, got {value}",
        metavar="N",
    )
    # Guards and checks.
    divergence_factor: float = setting(
        3.0,
        "stop when the training cost exceeds this times epoch 1's",
        check=lambda v: v > 1,
        error="divergence factor must exceed 1, got {value}",
        metavar="FACTOR",
    )
    gradcheck_every: int = setting(
        0,
        "re-run the gradient check every N epochs (0: never)",
        check=lambda v: v >= 0,
        error="gradcheck_every must be 0 or more, got {value}",
        metavar="N",
    )
    # Where things go.
    logdir: str = setting("logs", "TensorBoard log root", metavar="DIR")
    run_name: str | None = setting(
        None, "run folder under --logdir (default: a timestamp)", metavar="NAME"
    )
    save: str | None = setting(
        None,
        "write the trained model there",
        check=lambda v: str(v).endswith(".keras"),
        error="the model file must end in .keras, got {value}",
        metavar="MODEL.keras",
    )
    plot_curves: bool = setting(
        True, "draw curves.png in the run folder (TensorBoard has the curves either way)"
    )
    # A search saves every trial's model: a card each would measure every trial again.
    model_card: bool = setting(
        True,
        "with --save M.keras, write the model's card M.card.md and its confusion matrix "
        "beside it (the training record goes into M.keras either way)",
    )
    resume: bool = setting(
        False, "continue the run --run-name where it stopped, with its settings and data"
    )
    # A backup writes every weight and momentum: little next to a long epoch,
    # but not next to the report's network's short ones, whose runs are
    # cheaper to redo in part than to back up at every epoch.
    backup_interval: float = setting(
        0.0,
        "seconds between backups: the state and summary.json are saved at "
        "the end of the first epoch that long after the last save (0: every "
        "epoch)",
        check=lambda v: v >= 0,
        error="backup_interval must be 0 or more seconds, got {value}",
        metavar="SECONDS",
    )
    verbose: int = setting(
        1, "Keras progress bar: 0 silent, 1 bar, 2 one line per epoch", cli=False
    )

    def check(self) -> None:
        """Raise KbnError naming the first setting out of range."""
        for field in dataclasses.fields(self):
            message = setting_error(field, getattr(self, field.name))
            if message:
                raise KbnError(message)
        if self.eta_min is not None and self.eta_min > self.eta:
            raise KbnError(f"eta_min must be in (0, eta], got {self.eta_min}")
        if self.resume and not self.run_name:
            raise KbnError("--resume needs --run-name, the run to continue")

    def validate(self) -> None:
        """Deprecated name of `check` (validation is the held-out split's evaluation)."""
        warnings.warn(
            "TrainConfig.validate() is now TrainConfig.check()", DeprecationWarning, stacklevel=2
        )
        self.check()

    def validation_epochs(self) -> frozenset[int]:
        """The 1-based epochs after which the run evaluates its validation split.

        As `validation_freq` says (every N epochs, or the listed ones), and
        always the last epoch, whose metrics are the run's final validation
        metrics.

        Returns:
            a frozenset of ints in [1, epochs].
        """
        freq = self.validation_freq
        if isinstance(freq, int):
            wanted: Iterable[int] = range(freq, self.epochs + 1, freq)
        else:
            wanted = (epoch for epoch in freq if 1 <= epoch <= self.epochs)
        return frozenset(wanted) | ({self.epochs} if self.epochs else set())
