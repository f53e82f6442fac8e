"""`kbn predict`: the class of each image file, with its probability."""

from kbn.cli.options import emit
from kbn.cli.parser import examples_epilog, positive_int

EXAMPLES = [
    "kbn predict cifar.keras cat.jpg dog.png",
    "kbn predict cifar.keras photos/ --top 3 --json",
]


def add_parser(subparsers):
    """Add `kbn predict` to the `kbn` parser's subparsers; returns its parser."""
    p = subparsers.add_parser(
        "predict",
        help="the class of each image file, with its probability",
        epilog=examples_epilog(EXAMPLES),
    )
    p.add_argument("model", metavar="MODEL.keras")
    p.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="image files (JPEG, PNG, ...) or folders of them (searched recursively)",
    )
    p.add_argument(
        "--top",
        type=positive_int,
        default=1,
        metavar="K",
        help="the K most probable classes per image (default: 1)",
    )
    p.add_argument("--json", action="store_true", help="last stdout line: the predictions as JSON")
    p.set_defaults(func=run)
    return p


def run(args):
    """Classify the images the parsed `args` name and print each one's top classes."""
    from kbn.inference.evaluate import load_model
    from kbn.inference.predict import predict

    predictions = predict(load_model(args.model), args.images, top=args.top)
    lines = [
        f"{p['path']}: "
        + ", ".join(f"{t['class']} {t['probability']:.4f}" for t in p["top"])
        + (f" (resized from {p['resized'][1]}x{p['resized'][0]})" if p["resized"] else "")
        for p in predictions
    ]
    emit(args, {"predictions": predictions}, "\n".join(lines))
