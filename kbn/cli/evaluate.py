"""`kbn evaluate`: accuracy, loss, per-class accuracy and confusion matrix of a saved model."""

import argparse
import sys

from kbn.cli.options import DATA_DEFAULTS, add_data_options, emit, load_dataset
from kbn.cli.parser import examples_epilog

EXAMPLES = [
    "kbn evaluate cifar.keras --data cifar10",
    "kbn evaluate cifar.keras --data folder:cifar10-jpeg/train --split all --json",
    "kbn evaluate fm.keras --data fashion_mnist --split all --card fm.card.md",
    "kbn evaluate cifar.keras --data folder:cifar10-jpeg/train --split val --test-time-flip",
]


def add_parser(subparsers):
    """Add `kbn evaluate` to the `kbn` parser's subparsers; returns its parser."""
    p = subparsers.add_parser(
        "evaluate",
        help="accuracy, loss, per-class accuracy and confusion matrix "
        "of a saved model on a data split",
        epilog=examples_epilog(EXAMPLES),
    )
    p.add_argument("model", metavar="MODEL.keras")
    add_data_options(p, recorded=True)
    p.add_argument(
        "--test-data",
        metavar="SPEC",
        help="a second SPEC whose images form the test split (default: the model's own, "
        "as kbn train --save recorded it)",
    )
    p.add_argument("--split", choices=("test", "val", "train", "all"), default="test")
    p.add_argument(
        "--test-time-flip",
        action=argparse.BooleanOptionalAction,
        help="average the probabilities of each image and its mirror (--no-test-time-flip: "
        "do not), whatever the saved model does (default: as saved)",
    )
    p.add_argument(
        "--confusion",
        metavar="PATH.png",
        help="draw the confusion matrix (of all the splits evaluated) there",
    )
    p.add_argument(
        "--card",
        metavar="PATH.md",
        help="write the model's card there (Markdown: its data, training, figures by split "
        "and class, limits), its confusion matrix beside it as PATH.confusion.png",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="last stdout line: the metrics, per-class accuracy and confusion matrix as JSON",
    )
    p.set_defaults(func=run)
    return p


def run(args):
    """Evaluate the saved model on the split the parsed `args` name and print its metrics."""
    from kbn.inference.evaluate import evaluate, load_model
    from kbn.inference.record import read_record, recorded_cut, validation_held_out

    model = load_model(args.model)
    if args.test_time_flip is not None:
        from kbn.nn.flip_averaging import flip_averaged

        model = flip_averaged(model, args.test_time_flip)
    record = read_record(args.model)
    # Unless told otherwise, the splits are the model's own: another cut of the
    # pool may put examples it learnt from into the validation split.
    cut = recorded_cut(record, args.data) or DATA_DEFAULTS
    if args.split == "test":  # the test split needs no cut of the pool
        cut = {**cut, "train_size": None, "val_size": 0}
        args.train_size = args.val_size = None
    for name, value in cut.items():
        option = "test_data" if name == "test_spec" else name
        if getattr(args, option) is None:
            setattr(args, option, value)
    dataset = load_dataset(args)
    trained_on = (record or {}).get("data")
    if (
        args.split in ("val", "all")
        and trained_on
        and not validation_held_out(record, dataset.describe())
    ):
        print(
            f"note: {args.model} was trained on another cut of its data "
            f"({_cut(trained_on)}) than this one ({_cut(dataset.describe())}): "
            "this validation split may hold examples it learnt from",
            file=sys.stderr if args.json else sys.stdout,
        )
    card = None
    if args.card:
        from kbn.inference.card import write_card

        card = write_card(
            args.model, dataset, args.card, split=args.split, training=record, model=model
        )
        result = card.evaluation
    else:
        result = evaluate(model, dataset, args.split)
    # One line per split, its name first; the per-class accuracies on the same line.
    lines = [
        f"{name}: accuracy {r['accuracy']:.4f}, loss {r['loss']:.4f}, n {r['n']}; per class: "
        + ", ".join(
            f"{c} {'-' if a is None else format(a, '.4f')}" for c, a in r["per_class"].items()
        )
        for name, r in result["splits"].items()
    ]
    if args.confusion:
        from kbn.plots.figures import plot_confusion

        splits = "+".join(result["splits"])
        result["confusion_png"] = str(
            plot_confusion(
                result["confusion"],
                result["class_names"],
                args.confusion,
                title=f"{args.model} on {dataset.name} ({splits})",
            )
        )
        lines.append(f"confusion matrix: {result['confusion_png']}")
    if card is not None:
        result["card"], result["card_confusion_png"] = str(card.path), str(card.confusion_png)
        lines.append(f"model card: {card.path} (confusion matrix: {card.confusion_png})")
    emit(args, result, "\n".join(lines))


def _cut(data):
    """A data description's cut as `kbn evaluate` options would give it."""
    return (
        f"{data.get('spec')}, --train-size {data.get('train')} --val-size {data.get('val')} "
        f"--seed {data.get('seed')}"
    )
