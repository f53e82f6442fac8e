"""`kbn tune`: the coarse-to-fine search of eta and lambda, with KerasTuner.

Its options beyond the data ones are `tuning.search.SearchConfig`'s fields,
offered as `SEARCH_OPTIONS` says.
"""

from kbn.cli.options import (
    add_config_options,
    add_data_options,
    config_settings,
    emit,
    load_dataset,
)
from kbn.cli.parser import examples_epilog, float_range, running

EXAMPLES = [
    "kbn tune --data fashion_mnist --trials 30 --epochs 5",
    "kbn tune --data cifar10 --architecture --workers 2 --project wide --json",
    "kbn tune --data cifar10 --project wide --resume",
]


def _validation_freq(text):
    from kbn.training.config import parse_validation_freq

    return parse_validation_freq(text)


# How `kbn tune` offers `tuning.search.SearchConfig`'s fields (which carry
# no metadata of their own): a field missing here still gets a flag, with
# SearchConfig.validate checking its value.
SEARCH_OPTIONS = {
    "rounds": {"help": "shrinking intervals", "metavar": "N"},
    "trials": {"help": "trials in all rounds together", "metavar": "N"},
    "epochs": {"help": "epochs per trial", "metavar": "N"},
    "eta_range": {
        "type": float_range,
        "metavar": "LOW:HIGH",
        "help": "eta's first interval (log scale)",
    },
    "lam_range": {
        "type": float_range,
        "metavar": "LOW:HIGH",
        "help": "lambda's first interval (log scale)",
    },
    "architecture": {"help": "also search depth, width, batch norm"},
    "gamma_beta": {"help": "BatchNorm's learnable gamma and beta (the report's network has none)"},
    "pruning": {
        "help": "stop hopeless trials: asha, median, or none (every trial runs every epoch)"
    },
    "validation_freq": {
        "type": _validation_freq,
        "metavar": "N|E,E,...",
        "help": "trials validate every N epochs, or at those listed, and after the last "
        "(default: the epochs the pruning rule judges, and the last)",
    },
    "backup_interval": {
        "help": "seconds between a trial's backups (0: every epoch); a killed trial resumes "
        "from its last one",
        "metavar": "SECONDS",
    },
    "directory": {"help": "searches' root", "metavar": "DIR"},
    "project": {"help": "this search's folder name", "metavar": "NAME"},
    "resume": {
        "help": "continue the search --project where it stopped, with its settings and data"
    },
    "workers": {
        "help": "run N worker processes and a chief on 127.0.0.1 (0: one process)",
        "metavar": "N",
    },
    "recycle_after": {
        "help": "with --workers: restart a worker after N trials, keeping memory flat",
        "metavar": "N",
    },
    "finalists": {
        "help": "after the last round, train the K best pairs again with new seeds; the pair "
        "with the best mean wins, and its mean is the search's estimate (default: none)",
        "metavar": "K",
    },
    "finalist_seeds": {"help": "with --finalists: new seeds per pair", "metavar": "S"},
    "seed": {"cli": False},  # --seed, with the data options
    "verbose": {"cli": False},  # --json
}


def add_parser(subparsers):
    """Add `kbn tune` to the `kbn` parser's subparsers; returns its parser."""
    from tuning.search import SearchConfig

    p = subparsers.add_parser(
        "tune",
        help="coarse-to-fine search of eta and lambda (KerasTuner)",
        description=(
            "Rounds of KerasTuner random search of eta and lambda on a log scale, each round's "
            "box shrunk around the best trials; each trial is a kbn training run."
        ),
        epilog=examples_epilog(EXAMPLES),
    )
    add_data_options(p)
    p.add_argument(
        "--json", action="store_true", help="last stdout line: the search's outcome as JSON"
    )
    p.set_defaults(func=run)
    # Last, so that an option written out above keeps its own definition.
    add_config_options(p, SearchConfig, SEARCH_OPTIONS)
    return p


def run(args):
    """Run the search the parsed `args` describe and print each round and the best trial."""
    from tuning.search import SearchConfig, search

    config = SearchConfig(**config_settings(args, SearchConfig), verbose=0 if args.json else 1)
    config.check()
    dataset = load_dataset(args)
    with running():
        result = search(dataset, config)
    if result is None:  # a worker of a search spanning machines: the chief reports
        return
    # best, rounds, trials_completed/_stopped/_failed, epochs_trained, ...
    outcome = result.as_json()
    best = result.best
    lines = [
        f"round {i}: eta {r['eta_range'][0]:.4g}..{r['eta_range'][1]:.4g}, "
        f"lambda {r['lam_range'][0]:.4g}..{r['lam_range'][1]:.4g}, {r['trials']} trials, "
        "best val acc "
        f"{r['best_val_acc'] if r['best_val_acc'] is None else format(r['best_val_acc'], '.4f')}"
        for i, r in enumerate(result.rounds, start=1)
    ]
    lines.append(
        f"best: eta {best['eta']:.4g}, lambda {best['lam']:.4g}, val acc {best['val_acc']:.4f}"
        if best
        else "best: none (every trial failed)"
    )
    if result.finalists:
        lines.append(result.finalists_summary() or "finalists: none completed")
    lines.append(
        f"{result.trials_completed} trials completed, {result.trials_stopped} stopped early, "
        f"{result.trials_failed} failed; {result.epochs_trained} epochs in {result.seconds:.0f} s; "
        f"results in {result.project_dir}"
    )
    emit(args, outcome, "\n".join(lines))
