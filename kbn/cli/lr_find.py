"""`kbn lr-find`: the learning-rate range test, the loss against eta and a suggested eta.

Its data and network options and `--preset` are `kbn train`'s; its own
options are `kbn.lr_range.config.LrFindConfig`'s fields.
"""

import sys

from kbn.cli.network import (
    add_model_options,
    add_preset_option,
    build_model,
)
from kbn.cli.options import (
    add_config_options,
    add_data_options,
    config_settings,
    emit,
    load_dataset,
)
from kbn.cli.parser import examples_epilog, float_range, running

EXAMPLES = [
    "kbn lr-find --data fashion_mnist",
    "kbn lr-find --data folder:cifar10-jpeg/train --preset report --plot report-lr.png",
    "kbn lr-find --data folder:cifar10-jpeg/train --preset cifar10-mlp --eta-range 1e-4:10 --json",
    "kbn lr-find --data cifar10 --steps 300 --rule steepest",
]

# How `kbn lr-find` offers the LrFindConfig fields that need more than their metadata.
LR_FIND_OPTIONS = {
    "eta_range": {"type": float_range, "metavar": "LOW:HIGH"},
    "plot": {"help": "write the loss against eta there"},
}


def add_parser(subparsers):
    """Add `kbn lr-find` to the `kbn` parser's subparsers; returns its parser."""
    from kbn.lr_range.config import LrFindConfig
    from kbn.nn.precision import AUTO, PRECISIONS

    p = subparsers.add_parser(
        "lr-find",
        help="the learning-rate range test: loss against a rising eta, a suggested eta",
        description="Train a copy of the network for about one epoch while eta rises "
        "geometrically (1e-5 to 10 by default), stop when the loss blows up, draw the loss "
        "against eta and suggest an eta (Smith, 2017). The network is the one kbn train "
        "builds from the same options.",
        epilog=examples_epilog(EXAMPLES),
    )
    add_data_options(p.add_argument_group("data"))
    add_preset_option(p, becomes="network, split, batch size and precision")
    add_model_options(p.add_argument_group("network (kbn.build_mlp)"))
    test = p.add_argument_group("range test (kbn.LrFindConfig)")
    add_config_options(test, LrFindConfig, LR_FIND_OPTIONS)
    test.add_argument(
        "--precision",
        choices=(*PRECISIONS, AUTO),
        default="float32",
        help="the network's dtype policy, as kbn train's",
    )
    p.add_argument(
        "--json", action="store_true", help="last stdout line: the curve and the suggestion"
    )
    p.set_defaults(func=run, plot="lr_find.png")
    return p


def run(args):
    """Run the range test the parsed `args` describe and print the suggested eta."""
    from kbn.lr_range.config import LrFindConfig
    from kbn.lr_range.range_test import lr_find
    from kbn.nn.precision import resolve

    config = LrFindConfig(**config_settings(args, LrFindConfig))
    config.check()  # before the data is read: a wrong setting costs nothing
    precision, notice = resolve(args.precision)
    if notice:
        print(notice, file=sys.stderr if args.json else sys.stdout)
    dataset = load_dataset(args)
    model, settings = build_model(args, dataset, precision)
    if not args.json:
        print(f"data: {dataset.name}: {len(dataset.train)} train, {dataset.num_classes} classes")
        print("model: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    with running():
        result = lr_find(model, dataset, config)
    emit(args, result.as_json(), _text(result, config))


def _text(result, config):
    """The result for people: where the test stopped, the suggestion, each rule's eta."""
    low, high = config.eta_range
    ran = len(result.etas)
    lines = [f"range test: eta {low:g} to {high:g} over {result.steps} mini-batches"]
    if result.stopped_at is not None:
        lines.append(
            f"stopped at step {result.stopped_at + 1} of {result.steps}, eta "
            f"{result.etas[result.stopped_at]:.4g}: the loss blew up"
        )
    else:
        lines.append(f"ran all {ran} steps: the loss did not blow up below eta {high:g}")
    if result.suggestion is None:
        lines.append(
            "suggested eta: none: the smoothed loss never fell "
            "(lower the range's start, or give more --steps)"
        )
    else:
        lines.append(f"suggested eta: {result.suggestion:.4g} ({result.rule}: {result.rule_text})")
    others = [
        f"{rule} {eta:.4g}" if eta is not None else f"{rule} none"
        for rule, eta in result.suggestions.items()
        if rule != result.rule
    ]
    if others:
        lines.append("other rules: " + ", ".join(others))
    lines.append(f"seconds: {result.seconds:.1f}")
    if result.plot_path:
        lines.append(f"curve: {result.plot_path}")
    return "\n".join(lines)
