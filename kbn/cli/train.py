"""`kbn train`: train a k-layer network and log it to TensorBoard.

Its data options are the shared ones plus `--test-data`, its network options
`kbn.build_mlp`'s arguments, its training options `TrainConfig`'s fields;
`--preset` makes a recipe's settings the defaults that flags override.
"""

import dataclasses
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
from kbn.cli.parser import examples_epilog, running

EXAMPLES = [
    "kbn train --data fashion_mnist",
    "kbn train --data folder:cifar10-jpeg/train --preset cifar10-mlp --save cifar.keras",
    "kbn train --data npz:data.npz --hidden 100,50 --no-batch-norm --init xavier --lam 1e-4",
    "kbn train --data cifar10 --schedule cyclic --eta 0.1 --eta-min 0.01 --epochs 40 --json",
    "kbn train --data cifar10 --run-name long --resume",
]


def add_parser(subparsers):
    """Add `kbn train` to the `kbn` parser's subparsers; returns its parser."""
    from kbn.training.config import TrainConfig

    p = subparsers.add_parser(
        "train",
        help="train a k-layer network and log it to TensorBoard",
        description="Train a k-layer fully connected network with mini-batch SGD and momentum; "
        "curves go to TensorBoard under --logdir, metrics to the run's summary.json. "
        "Without --preset, the report's network and protocol.",
        epilog=examples_epilog(EXAMPLES),
    )
    data = p.add_argument_group("data")
    add_data_options(data, seed=False)
    data.add_argument(
        "--test-data", metavar="SPEC", help="a second SPEC whose images form the test split"
    )
    add_preset_option(p)
    add_model_options(p.add_argument_group("network (kbn.build_mlp)"))
    add_config_options(p.add_argument_group("training (kbn.TrainConfig)"), TrainConfig)
    p.add_argument(
        "--json", action="store_true", help="last stdout line: the run's metrics as JSON"
    )
    p.set_defaults(func=run)
    return p


def run(args):
    """Train the network the parsed `args` describe and print its metrics."""
    from kbn.nn.precision import resolve
    from kbn.training.config import TrainConfig
    from kbn.training.distribute import make_strategy
    from kbn.training.trainer import train

    config = TrainConfig(**config_settings(args, TrainConfig), verbose=0 if args.json else 1)
    config.check()
    # "auto" (the cifar10-mlp preset's) becomes what this machine runs best,
    # said in one line; the run's config records the precision it trained in.
    precision, notice = resolve(config.precision)
    config = dataclasses.replace(config, precision=precision)
    if notice:
        print(notice, file=sys.stderr if args.json else sys.stdout)
    # Before anything else runs TensorFlow: devices are set up at its start.
    strategy = make_strategy(config.strategy, config.replicas)
    dataset = load_dataset(args)
    with strategy.scope():
        model, settings = build_model(args, dataset, config.precision)
    if not args.json:
        print(
            f"data: {dataset.name}: {len(dataset.train)} train, {len(dataset.val)} val, "
            f"{len(dataset.test) if dataset.test else 0} test, {dataset.num_classes} classes"
        )
        print("model: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
        print("training: " + ", ".join(f"{k}={v}" for k, v in _shown_settings(config).items()))
        if strategy.num_replicas_in_sync > 1:
            print(f"devices: {config.strategy}, {strategy.num_replicas_in_sync} replicas")
    with running():
        result = train(model, dataset, config)
    outcome = result.as_json()
    lines = [
        f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}"
        for k, v in outcome.items()
        if v is not None and k != "diverged"
    ]
    if result.diverged:
        lines.insert(0, f"stopped early: {result.diverged}")
    if result.model_path:
        from kbn.inference.card import card_path

        lines.append(f"model card: {card_path(result.model_path)}")
    lines.append(f"curves: tensorboard --logdir {args.logdir}")
    emit(args, outcome, "\n".join(lines))


def _shown_settings(config):
    """The training settings a person chose: the run's own, not kbn's plumbing.

    The optimizer's numbers, the schedule's, the epochs and batch, the seed,
    and where the run goes; options left at None (a schedule's unused
    setting) are not shown. summary.json keeps the whole config.
    """
    hidden = {
        "steps_per_execution",
        "verbose",
        "plot_curves",
        "model_card",
        "gradcheck_every",
        "divergence_factor",
        "optimizer",
        "resume",
        "save",
    }
    return {
        k: v for k, v in dataclasses.asdict(config).items() if k not in hidden and v is not None
    }
