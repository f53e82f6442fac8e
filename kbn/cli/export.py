"""`kbn export`: a saved model as a TensorFlow SavedModel serving raw uint8 images."""

from kbn.cli.options import emit
from kbn.cli.parser import examples_epilog

EXAMPLES = [
    "kbn export cifar.keras serving/cifar",
]


def add_parser(subparsers):
    """Add `kbn export` to the `kbn` parser's subparsers; returns its parser."""
    p = subparsers.add_parser(
        "export",
        help="a TensorFlow SavedModel serving raw uint8 images",
        epilog=examples_epilog(EXAMPLES),
    )
    p.add_argument("model", metavar="MODEL.keras")
    p.add_argument("directory", metavar="DIR", help="the SavedModel's folder (new, or empty)")
    p.add_argument(
        "--json", action="store_true", help="last stdout line: the SavedModel's signature as JSON"
    )
    p.set_defaults(func=run)
    return p


def run(args):
    """Export the saved model the parsed `args` name and print the SavedModel's signature."""
    from kbn.inference.evaluate import load_model
    from kbn.inference.export import SIGNATURE, export
    from kbn.nn.builder import class_names

    model = load_model(args.model)
    directory = export(model, args.directory)
    result = {
        "directory": str(directory),
        "signature": SIGNATURE,
        "input_shape": [None, *model.input_shape[1:]],
        "class_names": class_names(model),
    }
    shape = ", ".join(str(d) for d in result["input_shape"])
    text = (
        f"SavedModel in {directory}: {SIGNATURE}(images: uint8 ({shape})) -> "
        f"probabilities float32 (None, {len(result['class_names'])}), classes int64 (None,), "
        f"class_names string (None,)"
    )
    emit(args, result, text)
