"""Model cards: what a saved model is for, what it learnt from, how it measures, its limits.

After Mitchell et al., "Model Cards for Model Reporting" (FAT* 2019): model details,
intended use, training data, evaluation data, the figures by condition (here: by split
and by class) and the caveats a user must know. A card is generated, never typed: the
network is read from the model's layers, the training from the record the model file
carries (`kbn.inference.record`, written by `kbn train --save`), the figures from
`evaluate` on the data at hand. What nobody recorded is written "not recorded".

    M.keras  --write_card(M.keras, dataset)-->  M.card.md              the card
                                                M.card.confusion.png   the confusion matrix
                                                                       of its held-out split

The held-out split is the test split when the evaluation has one, else the validation
split, else the training split (and the card says so). The standard error of an accuracy
`p` measured on `n` examples is `sqrt(p * (1 - p) / n)`: the spread of the accuracy over
draws of `n` examples from the same distribution, not over training runs or splits.

Reference:
    Mitchell, Wu, Zaldivar, Barnes, Vasserman, Hutchinson, Spitzer, Raji, Gebru.
    Model Cards for Model Reporting. FAT* 2019. https://arxiv.org/abs/1810.03993
"""

import dataclasses
import datetime
import math
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import keras

from kbn.data import Dataset
from kbn.errors import KbnError
from kbn.fileio import atomic_path
from kbn.inference.evaluate import evaluate, load_model
from kbn.inference.record import environment, read_record, validation_held_out
from kbn.nn.batch_norm import BatchNorm
from kbn.nn.builder import describe
from kbn.nn.dense import Dense
from kbn.nn.flip_averaging import AverageMirrors, MirrorImages
from kbn.nn.preprocessing import Centering, PrincipalComponents, Whitening
from kbn.plots.figures import plot_confusion

NOT_RECORDED = "not recorded"
HELD_OUT_ORDER = ("test", "val", "train")
SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}


@dataclasses.dataclass
class ModelCard:
    """What `write_card` wrote.

    Attributes:
        path: the card, Markdown.
        confusion_png: the confusion matrix of the held-out split, beside the card.
        held_out: the split the per-class figures and the matrix are of.
        evaluation: `evaluate(model, dataset, split)`'s dict: the card's figures.
        training: the training record the card was written from, or None.
    """

    path: pathlib.Path
    confusion_png: pathlib.Path
    held_out: str
    evaluation: dict[str, Any]
    training: dict[str, Any] | None


def card_path(model_path: str | os.PathLike) -> pathlib.Path:
    """Where `kbn train --save M.keras` writes the model's card: `M.card.md`."""
    return pathlib.Path(model_path).with_suffix(".card.md")


def confusion_path(path: str | os.PathLike) -> pathlib.Path:
    """The confusion matrix beside the card at `path`: `M.card.md` -> `M.card.confusion.png`."""
    return pathlib.Path(path).with_suffix(".confusion.png")


def standard_error(accuracy: float, n: int) -> float:
    """`sqrt(p * (1 - p) / n)`: the standard error of an accuracy `p` measured on `n` examples."""
    return math.sqrt(accuracy * (1 - accuracy) / n) if n else math.nan


def write_card(
    model_path: str | os.PathLike,
    dataset: Dataset,
    path: str | os.PathLike | None = None,
    *,
    split: str = "all",
    training: Mapping[str, Any] | None = None,
    model: keras.Model | None = None,
    batch_size: int = 1000,
) -> ModelCard:
    """Measure the kbn model saved at `model_path` on `dataset` and write its model card.

    Everything is checked and measured before anything is written: a model file that
    is not kbn's, data that does not fit the model, or a card path that would overwrite
    the model raises `KbnError` and leaves no file. The card and its PNG are each
    written whole or not at all (`kbn.fileio.atomic_path`).

    Args:
        model_path: the `.keras` file the card describes.
        dataset: the data to measure it on (`kbn.load_data(...)`).
        path: where to write the card; None for `card_path(model_path)`, `M.card.md`.
            The confusion matrix goes beside it (`confusion_path(path)`).
        split: `train`, `val`, `test` or `all` (every non-empty split), as `evaluate`.
        training: the run's training record (see `kbn.inference.record`); None reads
            the one stored in the model file, and a file without one gets a card that
            says "not recorded" for its training.
        model: the model loaded from `model_path`, to save loading it again; None loads it.
        batch_size: examples per evaluation step.

    Returns:
        a `ModelCard`.

    Raises:
        KbnError: the file is not a kbn model, the data does not fit it, the split is
            missing, or `path` names the model file itself.

    >>> card = write_card("fm.keras", kbn.load_data("fashion_mnist", val_size=1000))
    >>> card.path, card.held_out, card.evaluation["accuracy"]
    """
    model_path = pathlib.Path(model_path)
    path = card_path(model_path) if path is None else pathlib.Path(path)
    png = confusion_path(path)
    if model_path.resolve() in (path.resolve(), png.resolve()):
        raise KbnError(f"the card {path} would overwrite the model file {model_path}")
    if model is None:
        model = load_model(model_path)
    if training is None:
        training = read_record(model_path)
    if not any(isinstance(layer, Centering) for layer in model.layers):
        raise KbnError(
            f"{model_path} is not a kbn model (it has no kbn input stage): "
            "a card is written for models saved by kbn train --save"
        )
    evaluation = evaluate(model, dataset, split, batch_size)
    held_out = next(s for s in HELD_OUT_ORDER if s in evaluation["splits"])
    text = model_card(
        model,
        dataset,
        evaluation,
        training=training,
        model_file=model_path.name,
        confusion_png=png.name,
    )
    plot_confusion(
        evaluation["splits"][held_out]["confusion"],
        evaluation["class_names"],
        png,
        title=f"{model_path.name} on {dataset.name} ({SPLIT_NAMES[held_out]} split)",
    )
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return ModelCard(path, png, held_out, evaluation, None if training is None else dict(training))


def model_card(
    model: keras.Model,
    dataset: Dataset,
    evaluation: Mapping[str, Any],
    *,
    training: Mapping[str, Any] | None = None,
    model_file: str = "the model",
    confusion_png: str | None = None,
) -> str:
    """The text of a model card, Markdown, from the facts it is given; writes nothing.

    Args:
        model: the kbn model (`build_mlp`, or loaded from a `.keras` file).
        dataset: the data `evaluation` measured.
        evaluation: `evaluate(model, dataset, split)`'s dict.
        training: the training record (`kbn.inference.record`), or None: its sections
            then say "not recorded".
        model_file: the model file's name, for the title.
        confusion_png: the confusion matrix figure's file name, linked from the card.

    Returns:
        the card, one string ending in a newline.
    """
    training = dict(training or {})
    held_out = next(s for s in HELD_OUT_ORDER if s in evaluation["splits"])
    now = environment()
    sections = [
        f"# Model card: {model_file}",
        f"Written by kbn {now['versions'].get('kbn-keras') or NOT_RECORDED} on "
        f"{datetime.datetime.now().isoformat(timespec='seconds')} from the model file, the "
        f"record of its training run and a measurement on `{dataset.name}`; nothing in it is "
        f'typed by hand, and "{NOT_RECORDED}" marks what the run did not record. Its '
        "sections follow Mitchell et al., *Model Cards for Model Reporting* (2019).",
        "## Model details",
        _table(("", ""), _model_rows(model, model_file)),
        "## Intended use",
        _intended_use(model, evaluation["class_names"], training),
        "## Training data",
        _data_table(training.get("data")),
        "## Training",
        _training_section(training, now),
        "## Evaluation data",
        _data_table(dataset.describe(), evaluated=list(evaluation["splits"])),
        "## Evaluation",
        _evaluation_section(evaluation, held_out, confusion_png),
        "## Caveats and limits",
        "\n".join(f"- {line}" for line in _caveats(model, dataset, evaluation, held_out, training)),
    ]
    return "\n\n".join(sections) + "\n"


# --- the sections --------------------------------------------------------------------------


def _model_rows(model, model_file):
    dense = [layer for layer in model.layers if isinstance(layer, Dense)]
    network = describe(model)
    trainable = sum(int(keras.ops.size(w)) for w in model.trainable_weights)
    lams = sorted({float(layer.lam) for layer in dense})
    return [
        ("file", f"`{model_file}`"),
        (
            "network",
            f"{len(network['hidden']) + 1}-layer fully connected classifier (`kbn.build_mlp`), "
            f"hidden widths {network['hidden']}, "
            f"{'with' if network['batch_norm'] else 'without'} batch normalization",
        ),
        (
            "layers",
            " → ".join(
                _layer_text(layer)
                for layer in model.layers
                if not isinstance(layer, keras.layers.InputLayer)
            ),
        ),
        ("parameters", f"{model.count_params():,} ({trainable:,} trainable)"),
        ("L2 penalty lambda", ", ".join(f"{lam:g}" for lam in lams) or "none"),
        (
            "input",
            f"{_shape(model.input_shape[1:])} raw values (`{model.input.dtype}` in the model)",
        ),
        ("output", f"{model.output_shape[-1]} logits; the predicted class is their argmax"),
        ("compute dtype", str(_dtype_policy(dense[0] if dense else model))),
    ]


def _layer_text(layer):
    """One layer as the card lists it: its name and what it does to its input."""
    config = layer.get_config()
    if isinstance(layer, Centering):
        what = f"× {_factor(layer.scale)}, minus the training mean"
    elif isinstance(layer, Whitening):
        what = f"ZCA whitening, epsilon {layer.epsilon:g}"
    elif isinstance(layer, PrincipalComponents):
        what = f"the {layer.components} leading principal components of the training inputs"
    elif isinstance(layer, Dense):
        what = f"{layer.units}{'' if layer.use_bias else ', no bias'}"
    elif isinstance(layer, BatchNorm):
        what = f"momentum {config.get('momentum')}, epsilon {config.get('epsilon')}"
        what += "" if layer.scale else ", no gamma"
        what += "" if layer.center else ", no beta"
    elif isinstance(layer, keras.layers.Dropout):
        what = f"rate {layer.rate:g}, training only"
    elif isinstance(layer, keras.layers.RandomFlip):
        what = f"{config.get('mode')}, training only"
    elif isinstance(layer, keras.layers.RandomTranslation):
        what = f"up to {config.get('height_factor')} of the size, training only"
    elif isinstance(layer, MirrorImages):
        what = "each image and its left-right mirror, inference only"
    elif isinstance(layer, AverageMirrors):
        what = "log of the mean softmax of an image and its mirror, inference only"
    else:
        what = ""
    return f"{layer.name} ({what})" if what else layer.name


def _intended_use(model, class_names, training):
    data = training.get("data") or {}
    source = f"`{data['spec']}`" if data.get("spec") else "data whose SPEC was not recorded"
    return (
        f"Classifies images of shape {_shape(model.input_shape[1:])}, given as raw pixels "
        f"the way its data source yields them, into one of its {len(class_names)} classes: "
        f"{', '.join(class_names)}. It was trained on {source}; its figures below say how it "
        "does on images drawn as those were, and nothing about images of other kinds."
    )


def _data_table(data, evaluated=None):
    if not data:
        return (
            f"The data it trained on: {NOT_RECORDED} (the model file carries no training record)."
        )
    splits = evaluated or [s for s in ("train", "val", "test") if data.get(s)]
    sizes = ", ".join(f"{data.get(s) or 0} {SPLIT_NAMES[s]}" for s in splits) or "none"
    seed = data.get("seed")
    rows = [
        ("SPEC", f"`{data.get('spec') or NOT_RECORDED}`"),
        ("test split from", f"`{data.get('test_spec') or data.get('spec') or NOT_RECORDED}`"),
        ("examples", sizes),
        ("split seed", NOT_RECORDED if seed is None else str(seed)),
        ("class names", ", ".join(data.get("class_names") or []) or NOT_RECORDED),
    ]
    return _table(("", ""), rows)


def _training_section(training, now):
    if not training:
        return (
            f"Settings, time and machine: {NOT_RECORDED}. The model file carries no training "
            "record: it was not saved by `kbn train --save` (or `kbn.train` with "
            "`TrainConfig.save`)."
        )
    settings = training.get("settings") or {}
    rows = [(f"`{k}`", f"`{v}`") for k, v in settings.items() if v is not None]
    machine = training.get("machine") or {}
    epochs = settings.get("epochs")
    seconds = training.get("seconds")
    per_epoch = training.get("seconds_per_epoch")
    outcome = (
        f"stopped by the divergence guard: {training['diverged']}"
        if training.get("diverged")
        else "stopped early by a callback"
        if training.get("stopped_early")
        else "finished"
    )
    time_rows = [
        ("started", training.get("started") or NOT_RECORDED),
        (
            "epochs run",
            f"{training.get('epochs_run', NOT_RECORDED)}"
            + (f" of {epochs}" if epochs is not None else "")
            + f" ({outcome})",
        ),
        ("training time", NOT_RECORDED if seconds is None else f"{seconds:.1f} s"),
        ("per epoch (median)", NOT_RECORDED if per_epoch is None else f"{per_epoch:.3g} s"),
        ("machine", machine.get("platform") or NOT_RECORDED),
        ("processor", machine.get("processor") or NOT_RECORDED),
        ("CPUs", str(machine.get("cpus") or NOT_RECORDED)),
        ("GPUs", ", ".join(machine.get("gpus") or []) or "none"),
    ]
    then = training.get("versions") or {}
    version_rows = [
        (name, then.get(name) or NOT_RECORDED, now["versions"].get(name) or "not installed")
        for name in ("python", *(n for n in now["versions"] if n != "python"))
    ]
    return "\n\n".join(
        [
            "Settings (`kbn.TrainConfig`, as the run recorded them):",
            _table(("setting", "value"), rows) if rows else NOT_RECORDED,
            "Time and machine:",
            _table(("", ""), time_rows),
            "Versions:",
            _table(("library", "training", "this card"), version_rows),
        ]
    )


def _evaluation_section(evaluation, held_out, confusion_png):
    splits = evaluation["splits"]
    rows = [
        (
            SPLIT_NAMES[name],
            str(r["n"]),
            f"{r['accuracy']:.4f}",
            f"{standard_error(r['accuracy'], r['n']):.4f}",
            f"{r['loss']:.4f}",
        )
        for name, r in splits.items()
    ]
    names = evaluation["class_names"]
    class_rows = []
    for i, name in enumerate(names):
        cells = [name]
        for r in splits.values():
            n = int(sum(r["confusion"][i]))
            accuracy = r["per_class"][name]
            cells.append(
                "-" if accuracy is None else f"{accuracy:.4f} ± {standard_error(accuracy, n):.4f}"
            )
            cells.append(str(n))
        class_rows.append(tuple(cells))
    class_header = ["class"]
    for name in splits:
        class_header += [f"{SPLIT_NAMES[name]} accuracy ± s.e.", "n"]
    matrix = splits[held_out]["confusion"]
    matrix_rows = [(f"{i} {name}", *(str(c) for c in matrix[i])) for i, name in enumerate(names)]
    figure = f"![confusion matrix]({confusion_png})\n\n" if confusion_png else ""
    return "\n\n".join(
        [
            "Accuracy on each split, with its standard error `sqrt(p (1 - p) / n)`:",
            _table(("split", "examples", "accuracy", "standard error", "loss"), rows),
            "### Per class",
            _table(class_header, class_rows),
            f"### Confusion matrix ({SPLIT_NAMES[held_out]} split)",
            figure + "Rows: the true class; columns: the predicted class, by index.",
            _table(("true \\ predicted", *(str(i) for i in range(len(names)))), matrix_rows),
        ]
    )


def _caveats(model, dataset, evaluation, held_out, training):
    centering = next(layer for layer in model.layers if isinstance(layer, Centering))
    shape = _shape(model.input_shape[1:])
    yield (
        f"Image size and preprocessing are baked into the model: it takes {shape} raw "
        f"values as its data source yields them (8-bit pixels for images), multiplies them "
        f"by {_factor(centering.scale)} and subtracts the mean of its training images. Give it raw "
        "pixels, not normalised ones; an image of another size must be resized first "
        "(`kbn predict` does)."
    )
    if any(isinstance(layer, Whitening) for layer in model.layers):
        yield "It whitens its inputs with a matrix learnt from its training images."
    pca = [layer for layer in model.layers if isinstance(layer, PrincipalComponents)]
    if pca:
        yield (
            f"It sees an input only through its {pca[0].components} leading principal "
            "components, learnt from its training images: what lies along the others "
            "(fine detail, noise) is lost to it."
        )
    names = evaluation["class_names"]
    yield (
        f"It knows {len(names)} classes ({', '.join(names)}) and puts every input in one "
        "of them, an image of none of them too."
    )
    yield (
        f"Measured on one split: the figures are of one cut of `{dataset.name}` "
        f"(split seed {NOT_RECORDED if dataset.seed is None else dataset.seed}) and one trained "
        "model; another seed or another training run gives other figures. The standard "
        "errors count the draw of the examples only."
    )
    if "train" in evaluation["splits"]:
        yield (
            "The training split's accuracy is measured on examples the model may have learnt "
            "from: it is not an estimate for new images."
        )
    data = training.get("data") if training else None
    if held_out != "test" and not validation_held_out(training, dataset.describe()):
        yield (
            f"The {SPLIT_NAMES[held_out]} split is not known to be held out: the training "
            "run's cut was another or was not recorded, so it may hold training examples."
        )
    if data and data.get("spec") and data.get("spec") != dataset.name:
        yield f"Trained on `{data['spec']}` but measured on `{dataset.name}`."
    empty = [name for name, a in evaluation["splits"][held_out]["per_class"].items() if a is None]
    if empty:
        yield (
            f"No {SPLIT_NAMES[held_out]} example of {', '.join(empty)}: "
            "the card has no figure for them."
        )
    if training and training.get("diverged"):
        yield f"The training run diverged: {training['diverged']}."
    elif training and training.get("stopped_early"):
        yield "The training run stopped before its last epoch."
    if not training:
        yield (
            f"Its training data, settings, time and machine are {NOT_RECORDED}: the model "
            "file carries no training record."
        )


# --- formatting ----------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(r) for r in rows)])


def _shape(shape):
    return " × ".join(str(d) for d in shape)


def _factor(scale):
    """1/255 as `1/255`, not 0.00392157: the factor as a person would write it."""
    inverse = round(1 / scale) if scale else 0
    return f"1/{inverse}" if inverse > 1 and math.isclose(scale * inverse, 1) else f"{scale:g}"


def _dtype_policy(layer):
    policy = getattr(layer, "dtype_policy", None)
    return getattr(policy, "name", None) or getattr(layer, "dtype", NOT_RECORDED)
