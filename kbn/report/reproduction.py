"""`kbn reproduce`: the report's four studies as one command.

The report: DD2424 assignment 3, k-layer networks with batch normalization.

    SPEC --reproduce()--> OUT/report.md   one section per study, the report's
                                          numbers beside ours
                          OUT/*.png       the report's Figures 1-9 and the search
                          OUT/logs/       every run's TensorBoard folder

1. Gradient check: the 2-layer net (50 hidden units) at batch sizes 10, 20,
   30, relative errors of b1, b2, W1, W2, with the report's table beside.
2. 3-layer net with and without batch norm (eta 0.1, lambda 1e-4), with the
   report's small init and with He init: loss curves (Figures 1-2).
3. Coarse-to-fine search of eta and lambda in three rounds over the report's
   first interval, then a final training with the best pair (Figure 3).
4. Eta study: 2-layer net with and without batch norm at eta 0.001, 0.09 and
   0.2 for 10 epochs (Figures 4-9), and a conclusion computed from the run.

The nets studies 2 to 4 train are the report's: batch norm only normalises,
with no learnable gamma and beta (`REPORT_BATCH_NORM`, from the `report`
preset); the search's trials are built by `tuning`'s hypermodel.
Every number in the text comes from the run; the report's own numbers are
quoted as such. `quick=True` shrinks the sizes (`QUICK`) for a short run;
report.md's header states how long its run took.
"""

import dataclasses
import datetime
import os
import pathlib
import shlex
import time
from collections.abc import Callable

import numpy as np

from kbn import plots
from kbn.data import Dataset, Split, load_data
from kbn.fileio import atomic_path
from kbn.gradcheck.check import format_table, gradient_table
from kbn.nn.builder import build_mlp
from kbn.training import TrainConfig, train
from kbn.training.presets import get_preset
from tuning.search import SearchConfig, search

# The report's figures, quoted beside ours.
REPORT_GRADIENTS = {
    10: {"b1": 1.2866e-07, "b2": 1.0594e-10, "W1": 5.8156e-07, "W2": 1.2639e-09},
    20: {"b1": 1.4993e-07, "b2": 2.0207e-10, "W1": 7.6248e-07, "W2": 1.4795e-09},
    30: {"b1": 2.6862e-07, "b2": 3.0972e-10, "W1": 1.3399e-06, "W2": 2.1623e-09},
}
REPORT_BEST = {"eta": 0.0864, "lam": 1.8245e-4, "train_acc": 0.6268, "test_acc": 0.4502}
# The search's 3 best pairs, each run again with 3 new seeds (tuning.finalists).
FINALISTS = 3
REPORT_INTERVALS = [
    ((0.01, 0.7), (1e-6, 0.1)),
    ((0.08, 0.2), (4e-5, 3e-3)),
    ((0.07, 0.09), (5e-5, 3e-4)),
]
# The report's batch norm only normalises (its gradients are b and W alone): the studies'
# nets have no gamma and beta, as the `report` preset.
REPORT_BATCH_NORM = {key: get_preset("report").model[key] for key in ("center", "scale")}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big each study is: the report's sizes, or quick ones."""

    train: int = 10_000
    val: int = 10_000
    test: int = 10_000
    epochs: int = 10  # studies 2 and 4 (the report: 10 in study 4)
    final_epochs: int = 20  # study 3's final training
    trials: int = 50  # the report's 50 pairs
    trial_epochs: int = 10
    gradcheck_entries: int = 500  # entries drawn per weight


FULL = Sizes()
QUICK = Sizes(
    train=2000,
    val=1000,
    test=1000,
    epochs=5,
    final_epochs=8,
    trials=12,
    trial_epochs=3,
    gradcheck_entries=100,
)


def reproduce(
    spec: str,
    out: str | os.PathLike,
    *,
    quick: bool = False,
    sizes: Sizes | None = None,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    command: str | None = None,
    progress: Callable[[str], None] = print,
) -> pathlib.Path:
    """Run the report's four studies on `spec` and write `out/report.md`.

    Args:
        spec: a data SPEC (see `kbn.load_data`).
        out: the folder for report.md, its figures and the runs' logs.
        quick: small sizes (`QUICK`) instead of the report's (`FULL`).
        sizes: a `Sizes` of one's own, instead of either.
        data_dir: where the data set's files are.
        seed: seeds the splits, weights and shuffles.
        command: the command line to state in the report's header.
        progress: called with one line per step, so people see it advance.

    Returns:
        the path of report.md.
    """
    out = pathlib.Path(out)
    sizes = sizes or (QUICK if quick else FULL)
    start = time.perf_counter()
    dataset = _load_with_test(spec, sizes, data_dir, seed)
    progress(
        f"data: {spec}: {len(dataset.train)} train, {len(dataset.val)} val, "
        f"{len(dataset.test)} test"
    )
    sections = [
        _gradient_check(dataset, sizes, seed, progress),
        _batch_norm_study(dataset, sizes, seed, out, progress),
        _search_study(dataset, sizes, seed, out, progress),
        _eta_study(dataset, sizes, seed, out, progress),
    ]
    minutes = (time.perf_counter() - start) / 60
    scale = "quick sizes" if quick else "the report's sizes"
    header = [
        f"# Reproduction of the k-layer batch-norm report on `{spec}`",
        "",
        f"Generated by `{command or _default_command(spec, out, quick)}` "
        f"on {datetime.date.today().isoformat()} in {minutes:.1f} minutes "
        f"({scale}: {len(dataset.train)} training, "
        f"{len(dataset.val)} validation and {len(dataset.test)} test examples, seed {seed}). "
        "Every number below comes from this run, except those in the columns and lines "
        "marked *report*, quoted from the report (DD2424 assignment 3, CIFAR-10).",
        "",
    ]
    path = out / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(header + [line for s in sections for line in s]) + "\n")
    progress(f"report: {path}")
    return path


def default_out(spec: str) -> str:
    """reports/<name>: fashion_mnist -> reports/fashion_mnist,
    folder:../x/cifar10-jpeg/train -> reports/cifar10-jpeg-train."""
    name = spec.split(":", 1)[-1].replace("\\", "/")
    parts = [p for p in name.split("/") if p not in ("", ".", "..")]
    return f"reports/{'-'.join(parts[-2:]) if parts else 'report'}"


def _default_command(spec, out, quick):
    return shlex.join(
        ["kbn", "reproduce", "--data", spec, "--out", str(out), *(["--quick"] if quick else [])]
    )


def _load_with_test(spec, sizes, data_dir, seed):
    """train/val/test of the wanted sizes; a source without a test split gives one from its pool."""
    dataset = load_data(
        spec, train_size=sizes.train, val_size=sizes.val + sizes.test, seed=seed, data_dir=data_dir
    )
    val = Split(dataset.val.x[: sizes.val], dataset.val.y[: sizes.val])
    carved = Split(dataset.val.x[sizes.val :], dataset.val.y[sizes.val :])
    test = dataset.test if dataset.test is not None else carved
    if len(test) > sizes.test:
        test = Split(test.x[: sizes.test], test.y[: sizes.test])
    return dataclasses.replace(dataset, val=val, test=test)


def _run(
    dataset,
    out,
    name,
    hidden,
    *,
    batch_norm,
    init="he",
    eta,
    lam,
    epochs,
    seed,
    schedule="constant",
    progress,
):
    """Train one net of a study; returns the TrainResult."""
    model = build_mlp(
        hidden,
        dataset.num_classes,
        batch_norm=batch_norm,
        init=init,
        lam=lam,
        **REPORT_BATCH_NORM,
        adapt=dataset.train.x,
        seed=seed,
    )
    config = TrainConfig(
        eta=eta,
        schedule=schedule,
        epochs=epochs,
        seed=seed,
        logdir=str(out / "logs"),
        run_name=name,
        verbose=0,
    )
    result = train(model, dataset, config)
    final = result.summary["final"]
    status = f", stopped: {result.diverged}" if result.diverged else ""
    progress(
        f"  {name}: train {final['train_acc']:.4f}, val {final['val_acc']:.4f}, "
        f"test {final['test_acc']:.4f}{status}"
    )
    return result


def _pct(value):
    return f"{100 * value:.2f}%"


# --------------------------------------------------------------------------
# 1. Gradient check
# --------------------------------------------------------------------------


def _gradient_check(dataset, sizes, seed, progress):
    progress("1/4 gradient check: 2-layer net, 50 hidden units, batch sizes 10, 20, 30")
    x = dataset.train.x.reshape(len(dataset.train), -1)
    y = dataset.train.y
    tables = {}
    for batch_norm in (False, True):
        rows = gradient_table(
            x,
            y,
            hidden=[50],
            batch_sizes=[10, 20, 30],
            batch_norm=batch_norm,
            num_classes=dataset.num_classes,
            seed=seed,
            max_entries=sizes.gradcheck_entries,
        )
        tables[batch_norm] = rows
    worst = max(r["rel_error"] for rows in tables.values() for r in rows)
    autodiff = max(r["rel_error_autodiff"] for rows in tables.values() for r in rows)
    ours = {(r["batch_size"], r["param"]): r["rel_error"] for r in tables[False]}
    lines = [
        "## 1. Gradient check",
        "",
        f"The 2-layer net (50 hidden units, {x.shape[1]} inputs, no regularisation, float64) "
        "on the first 10, 20 and 30 training examples: relative error "
        "|g_a - g_n| / max(eps, |g_a| + |g_n|) between kbn's hand-written gradients and "
        f"centred finite differences, over {sizes.gradcheck_entries} entries drawn per weight.",
        "",
        "Without batch norm, beside the report's table:",
        "",
        "| Batch size | "
        + " | ".join(f"{p} (kbn) | {p} (*report*)" for p in ("b1", "b2", "W1", "W2"))
        + " |",
        "|---" * 9 + "|",
    ]
    for n in (10, 20, 30):
        cells = [
            f"{ours[n, p]:.4e} | {REPORT_GRADIENTS[n][p]:.4e}" for p in ("b1", "b2", "W1", "W2")
        ]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "With batch norm (the Dense before it has no bias); kbn's BatchNorm is checked with its "
        "gamma and beta, which the studies' nets, like the report's, leave out:",
        "",
        format_table(tables[True]),
        "",
        f"Largest relative error over both tables: {worst:.2e}; hand-written against "
        f"TensorFlow autodiff of the same forward pass: {autodiff:.2e}.",
        "",
    ]
    return lines


# --------------------------------------------------------------------------
# 2. 3-layer net with and without batch norm
# --------------------------------------------------------------------------


def _batch_norm_study(dataset, sizes, seed, out, progress):
    progress("2/4 3-layer net with and without batch norm, eta 0.1, lambda 1e-4")
    runs = {}
    for batch_norm in (False, True):
        for init in ("small", "he"):
            name = f"study2-{'bn' if batch_norm else 'no-bn'}-{init}"
            runs[batch_norm, init] = _run(
                dataset,
                out,
                name,
                [50, 30],
                batch_norm=batch_norm,
                init=init,
                eta=0.1,
                lam=1e-4,
                epochs=sizes.epochs,
                seed=seed,
                progress=progress,
            )
    labels = {"small": "small init (N(0, 1e-4^2))", "he": "He init"}
    figures = []
    for number, batch_norm in ((1, False), (2, True)):
        name = f"figure{number}.png"
        with_bn = "with" if batch_norm else "without"
        plots.plot_comparison(
            {labels[init]: runs[batch_norm, init].history for init in ("small", "he")},
            out / name,
            title=(
                f"Figure {number}: 3-layer network {with_bn} batch normalization, "
                "eta=0.1, lambda=1e-4"
            ),
        )
        figures.append(f"![Figure {number}]({name})")
    lines = [
        "## 2. 3-layer network with and without batch normalization",
        "",
        f"Hidden layers [50, 30], batch norm without gamma and beta (as the report's), eta 0.1 "
        f"(constant), lambda 1e-4, momentum 0.9, batch 100, "
        f"{sizes.epochs} epochs. The report's Figure 1 (without batch norm) fails to learn and its "
        "Figure 2 (with) learns; kbn runs both with the report's small initialisation "
        "and with He's.",
        "",
        figures[0],
        "",
        figures[1],
        "",
        "| network | init | train acc | val acc | test acc | final training loss |",
        "|---|---|---|---|---|---|",
    ]
    for (batch_norm, init), result in runs.items():
        final = result.summary["final"]
        lines.append(
            f"| {'with' if batch_norm else 'without'} BN | {init} | {_pct(final['train_acc'])} | "
            f"{_pct(final['val_acc'])} | {_pct(final['test_acc'])} | {final['train_loss']:.4f} |"
        )
    small_no_bn = runs[False, "small"].summary["final"]["train_acc"]
    small_bn = runs[True, "small"].summary["final"]["train_acc"]
    lines += [
        "",
        f"With the small init, the net without batch norm ends at {_pct(small_no_bn)} training "
        f"accuracy (chance: {_pct(1 / dataset.num_classes)}) and the net with batch norm at "
        f"{_pct(small_bn)}.",
        "",
    ]
    return lines


# --------------------------------------------------------------------------
# 3. Coarse-to-fine search
# --------------------------------------------------------------------------


def _search_study(dataset, sizes, seed, out, progress):
    progress(
        f"3/4 coarse-to-fine search: {sizes.trials} pairs, 3 rounds, "
        f"{sizes.trial_epochs} epochs each"
    )
    (eta_range, lam_range) = REPORT_INTERVALS[0]
    config = SearchConfig(
        rounds=3,
        trials=sizes.trials,
        epochs=sizes.trial_epochs,
        eta_range=eta_range,
        lam_range=lam_range,
        directory=str(out / "logs"),
        project="study3-search",
        seed=seed,
        verbose=0,
        pruning="none",
        # Every trial validated after every epoch: its curves, and a log that
        # replays through other stopping rules (benchmarks/search_replay.py).
        validation_freq=1,
        # The round's best reads high (the winner's curse): the best pairs run again.
        finalists=FINALISTS,
        finalist_seeds=FINALISTS,
    )
    searched = Dataset(dataset.name, dataset.train, dataset.val, None, dataset.class_names)
    found = search(searched, config, TrainConfig(seed=seed))
    # The report's protocol runs every trial to the end; one line compares ASHA's pruning.
    pruned = search(
        searched,
        dataclasses.replace(
            config,
            pruning="asha",
            project="study3-search-asha",
            validation_freq=None,
            finalists=None,
        ),
        TrainConfig(seed=seed),
    )
    (out / "search.png").write_bytes((found.project_dir / "search.png").read_bytes())
    pair = found.winner or found.best  # the finalists' winner, by the mean of its runs
    progress(
        f"  best: eta {pair['eta']:.4g}, lambda {pair['lam']:.4g}, "
        f"val {pair['val_acc']:.4f} ({found.seconds:.0f} s)"
    )
    final, report_pair = (
        _run(
            dataset,
            out,
            name,
            [50, 30],
            batch_norm=True,
            eta=eta,
            lam=lam,
            epochs=sizes.final_epochs,
            seed=seed,
            schedule="exp",
            progress=progress,
        )  # fmt: skip
        for name, eta, lam in (
            ("study3-best", pair["eta"], pair["lam"]),
            ("study3-report-pair", REPORT_BEST["eta"], REPORT_BEST["lam"]),
        )
    )
    plots.plot_curves(
        final.history,
        out / "figure3.png",
        title=f"Figure 3: loss for the best hyper-parameters, eta={pair['eta']:.4g}, "
        f"lambda={pair['lam']:.4g}",
        metrics=("loss",),
    )
    lines = [
        "## 3. Coarse-to-fine search of eta and lambda",
        "",
        f"{sizes.trials} pairs in three rounds of KerasTuner random search (`tuning`), eta and "
        f"lambda drawn on a log scale, each trial a 3-layer [50, 30] net with batch norm trained "
        f"{sizes.trial_epochs} epochs (eta decayed by 0.8 per epoch); each round's box shrinks "
        f"around its best trials. The search took {found.seconds:.0f} s.",
        f"With ASHA pruning (`kbn tune --pruning asha`), the same search reaches "
        f"{_pct(pruned.best['val_acc']) if pruned.best else 'no'} best validation accuracy with "
        f"{pruned.epochs_trained} of its {found.epochs_trained - found.finalist_epochs} epochs "
        f"in {pruned.seconds:.0f} s "
        f"({pruned.trials_stopped} trials stopped early).",
        "",
        "| round | eta range | lambda range | trials | best val acc | *report's interval* |",
        "|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(found.rounds):
        (report_eta, report_lam) = REPORT_INTERVALS[i] if i < len(REPORT_INTERVALS) else ("", "")
        best = "" if r["best_val_acc"] is None else _pct(r["best_val_acc"])
        lines.append(
            f"| {i + 1} | {r['eta_range'][0]:.4g} - {r['eta_range'][1]:.4g} | "
            f"{r['lam_range'][0]:.3g} - {r['lam_range'][1]:.3g} | {r['trials']} | {best} | "
            f"eta {report_eta[0]:g} - {report_eta[1]:g}, "
            f"lambda {report_lam[0]:g} - {report_lam[1]:g} |"
        )
    ours, theirs = final.summary["final"], report_pair.summary["final"]
    lines += [
        "",
        "![search](search.png)",
        "",
        found.finalists_summary() or "",
        "",
        f"Best pair: eta = {pair['eta']:.4g}, lambda = {pair['lam']:.4g} "
        f"({_pct(pair['val_acc'])} validation accuracy after {sizes.trial_epochs} epochs"
        f"{', the mean of its finalist runs' if found.winner else ''}). "
        f"Trained for {sizes.final_epochs} epochs:",
        "",
        "| pair | eta | lambda | train acc | test acc |",
        "|---|---|---|---|---|",
        f"| kbn's best | {pair['eta']:.4g} | {pair['lam']:.4g} | "
        f"{_pct(ours['train_acc'])} | {_pct(ours['test_acc'])} |",
        f"| the report's pair, trained by kbn | {REPORT_BEST['eta']} | {REPORT_BEST['lam']} | "
        f"{_pct(theirs['train_acc'])} | {_pct(theirs['test_acc'])} |",
        f"| *report* (CIFAR-10) | {REPORT_BEST['eta']} | {REPORT_BEST['lam']} | "
        f"{_pct(REPORT_BEST['train_acc'])} | {_pct(REPORT_BEST['test_acc'])} |",
        "",
        "![Figure 3](figure3.png)",
        "",
    ]
    return lines


# --------------------------------------------------------------------------
# 4. Eta study
# --------------------------------------------------------------------------

ETAS = (0.001, 0.09, 0.2)


def _eta_study(dataset, sizes, seed, out, progress):
    progress("4/4 eta study: 2-layer net, eta 0.001, 0.09, 0.2, with and without batch norm")
    runs = {}
    figures = []
    number = 4
    for eta in ETAS:
        for batch_norm in (True, False):
            name = f"study4-eta{eta:g}-{'bn' if batch_norm else 'no-bn'}"
            result = _run(
                dataset,
                out,
                name,
                [50],
                batch_norm=batch_norm,
                eta=eta,
                lam=1e-4,
                epochs=sizes.epochs,
                seed=seed,
                progress=progress,
            )
            runs[eta, batch_norm] = result
            with_bn = "with" if batch_norm else "with no"
            figure = f"figure{number}.png"
            plots.plot_curves(
                result.history,
                out / figure,
                metrics=("loss",),
                title=f"Figure {number}: 2-layer network {with_bn} batch normalization "
                f"and eta={eta:g}",
            )
            figures.append(f"![Figure {number}]({figure})")
            number += 1
    lines = [
        "## 4. Influence of eta on a 2-layer network with and without batch normalization",
        "",
        f"50 hidden units, lambda 1e-4, constant eta, {sizes.epochs} epochs.",
        "",
        "| eta | batch norm | first / last training loss | best val loss (epoch) | "
        "val loss rises after its best by | train acc | val acc |",
        "|---|---|---|---|---|---|---|",
    ]
    facts = {}
    for (eta, batch_norm), result in runs.items():
        facts[eta, batch_norm] = fact = _curve_facts(result)
        final = result.summary["final"]
        lines.append(
            f"| {eta:g} | {'yes' if batch_norm else 'no'} | "
            f"{fact['first']:.4f} / {fact['last']:.4f} | "
            f"{fact['best_val']:.4f} ({fact['best_epoch']}) | {fact['overshoot']:.4f} | "
            f"{_pct(final['train_acc'])} | {_pct(final['val_acc'])} |"
        )
    lines += ["", *[f"{f}\n" for f in figures], "### Conclusion (computed from the table)", ""]
    lines += _conclusion(runs, facts)
    return lines


def _curve_facts(result):
    loss = [v for v in result.history.get("loss", []) if v is not None and np.isfinite(v)]
    val = [v for v in result.history.get("val_loss", []) if v is not None and np.isfinite(v)]
    best = int(np.argmin(val)) if val else 0
    return {
        "first": loss[0] if loss else float("nan"),
        "last": loss[-1] if loss else float("nan"),
        "best_val": val[best] if val else float("nan"),
        "best_epoch": best + 1,
        "overshoot": (val[-1] - val[best]) if val else float("nan"),
        # Unsteady learning: how often, and how far, the validation loss went up.
        "rises": int(np.sum(np.diff(val) > 0)),
        "largest_rise": float(max(np.diff(val), default=0.0)) if len(val) > 1 else 0.0,
    }


def _conclusion(runs, facts):
    """Sentences whose every number and comparison comes from this run."""
    lines = []
    slow = {bn: facts[ETAS[0], bn] for bn in (True, False)}
    for bn, fact in slow.items():
        drop = fact["first"] - fact["last"]
        lines.append(
            f"- eta = {ETAS[0]:g}, {'with' if bn else 'without'} batch norm: the training loss "
            f"falls by {drop:.4f} in {len(runs[ETAS[0], bn].history['loss'])} epochs "
            f"({fact['first']:.4f} to {fact['last']:.4f})."
        )
    for eta in ETAS[1:]:
        parts = []
        for bn in (True, False):
            fact = facts[eta, bn]
            parts.append(
                f"{'with' if bn else 'without'} batch norm the validation loss rose in "
                f"{fact['rises']} of {len(runs[eta, bn].history['val_loss']) - 1} epochs "
                f"(largest rise {max(fact['largest_rise'], 0.0):.4f})"
            )
        lines.append(f"- eta = {eta:g}: " + "; ".join(parts) + ".")
    gains = {
        eta: runs[eta, True].summary["final"]["val_acc"]
        - runs[eta, False].summary["final"]["val_acc"]
        for eta in ETAS
    }
    best_gain = max(gains, key=gains.get)
    lines.append(
        "- Batch norm changes the final validation accuracy by "
        + ", ".join(f"{100 * g:+.2f} points at eta {eta:g}" for eta, g in gains.items())
        + f"; it helps most at eta {best_gain:g}."
    )
    return lines + [""]
