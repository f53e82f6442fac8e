"""Figures of a training run and of a hyper-parameter search, written as PNG.

Three figures, the ones the report (DD2424 assignment 3: k-layer networks with
batch normalization) shows:

* `plot_curves`: the training and validation curves of one run against the
  epoch ("3-Layer Network with Batch Normalization", "Loss functions for the
  best hyper-parameters").
* `plot_comparison`: several runs of one metric on one axes (with and without
  batch normalization).
* `plot_search`: the trials of a coarse-to-fine search over
  `(eta, lambda)` on log axes, coloured by validation accuracy, with each
  round's search box outlined.

and `plot_confusion`, the confusion matrix of `kbn evaluate --confusion`.

Every figure is a `matplotlib.figure.Figure` drawn by its own Agg canvas, so
nothing touches pyplot's global state, no display is needed, figures are
never left open and plotting from several threads is safe. Each PNG is written
atomically through `kbn.fileio.atomic_path`: a crash mid-write leaves the
previous file as it was.
"""

import math
import os
import pathlib
import textwrap
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from kbn.errors import KbnError
from kbn.fileio import atomic_path

DPI = 100
# Runs this short get a marker on every epoch, so a single epoch still shows.
MARKER_MAX_EPOCHS = 30
Y_LABELS = {"loss": "loss (cross-entropy + L2)", "accuracy": "accuracy"}
# One marker shape per search round (cycled), one outline colour per box.
ROUND_MARKERS = ("o", "s", "^", "D", "v", "P")
CMAP = "viridis"
BOX_COLOURS = ("tab:red", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive")


def plot_curves(
    history: dict[str, list[float]],
    path: str | os.PathLike,
    *,
    title: str,
    metrics: Sequence[str] = ("loss", "accuracy"),
) -> pathlib.Path:
    """Plot one run's training and validation curves against the epoch.

    One subplot per metric of `metrics` that `history` holds, side by side;
    in each, the training curve (`history[metric]`) and the validation curve
    (`history["val_" + metric]`) against the epochs `1, 2, ..., E`. A
    diverged run (NaN or infinite values) is drawn with its finite points
    only, and its legend entry and the figure title say where it diverged.

    Args:
        history: a Keras-style history dict (`keras.callbacks.History.history`)
            mapping a metric name to its per-epoch values, a list (or 1-D
            array) of length E >= 1: `"loss"`, `"accuracy"`, and optionally
            `"val_loss"`, `"val_accuracy"`.
        path: where to write the PNG (str or path-like); missing parent
            folders are created.
        title: the figure title, e.g.
            `"3-layer network with batch normalization, eta=0.1, lambda=1e-4"`.
        metrics: the metric names to plot, in order; those with neither a
            training nor a validation series in `history` are skipped.

    Returns:
        The `pathlib.Path` written.

    Raises:
        KbnError: when `history` holds none of `metrics`.

    >>> plot_curves({"loss": [2.1, 1.8], "val_loss": [2.2, 1.9]},
    ...             "run/curves.png", title="2-layer network")
    PosixPath('run/curves.png')
    """
    present = [m for m in metrics if m in history or f"val_{m}" in history]
    if not present:
        raise KbnError(
            f"plot_curves: the history has none of the metrics {list(metrics)}. "
            f"Received keys: {sorted(history)}"
        )
    fig = _new_figure((5.0 * len(present) + 0.5, 4.0))
    axes = fig.subplots(1, len(present), squeeze=False)[0]
    diverged = False
    for ax, metric in zip(axes, present):
        num_epochs = 0
        for key, label, colour in (
            (metric, "training", "tab:blue"),
            (f"val_{metric}", "validation", "tab:orange"),
        ):
            if key in history:
                diverged |= _plot_series(ax, history[key], label=label, color=colour)
                num_epochs = max(num_epochs, len(history[key]))
        _style_epoch_axes(ax, metric, num_epochs)
    fig.suptitle(_wrap(f"{title} (diverged)" if diverged else title, fig))
    return _save(fig, path)


def plot_comparison(
    histories: dict[str, dict[str, list[float]]],
    path: str | os.PathLike,
    *,
    title: str,
    metric: str = "loss",
) -> pathlib.Path:
    """Plot one metric of several runs on one axes.

    Each run gets one colour: its training curve solid, its validation curve
    dashed, labelled `"<label> training"` and `"<label> validation"`.
    Non-finite values are handled as in `plot_curves`.

    Args:
        histories: run label to Keras-style history dict (see `plot_curves`),
            e.g. `{"with BN": h1, "without BN": h2}`; runs may differ in
            length.
        path: where to write the PNG (str or path-like); missing parent
            folders are created.
        title: the figure title.
        metric: the metric to compare, `"loss"` or `"accuracy"` (or any key
            the histories share).

    Returns:
        The `pathlib.Path` written.

    Raises:
        KbnError: when `histories` is empty or a run has neither `metric`
            nor `"val_" + metric`.
    """
    if not histories:
        raise KbnError("plot_comparison needs at least one run. Received: {}")
    fig = _new_figure((7.0, 4.5))
    ax = fig.subplots()
    diverged = False
    num_epochs = 0
    for i, (label, history) in enumerate(histories.items()):
        if metric not in history and f"val_{metric}" not in history:
            raise KbnError(
                f"plot_comparison: run {label!r} has no {metric!r} or 'val_{metric}'. "
                f"Received keys: {sorted(history)}"
            )
        colour = f"C{i % 10}"  # the default colour cycle
        for key, kind, style in ((metric, "training", "-"), (f"val_{metric}", "validation", "--")):
            if key in history:
                diverged |= _plot_series(
                    ax, history[key], label=f"{label} {kind}", color=colour, linestyle=style
                )
                num_epochs = max(num_epochs, len(history[key]))
    _style_epoch_axes(ax, metric, num_epochs)
    ax.set_title(_wrap(f"{title} (diverged)" if diverged else title, fig))
    return _save(fig, path)


def plot_search(
    trials: list[dict],
    path: str | os.PathLike,
    *,
    title: str,
    boxes: list[dict] | None = None,
) -> pathlib.Path:
    """Scatter a hyper-parameter search over `(eta, lambda)` on log axes.

    Each trial is a point at `(eta, lam)`, coloured by its validation
    accuracy (colorbar "validation accuracy") and shaped by its round; a
    failed trial (`val_acc` None or NaN) is a grey x. The best trial is
    starred, its values written in the legend below the axes (where they
    never hide a trial). Each search box in `boxes` is
    outlined and labelled "round r", so the coarse-to-fine narrowing shows.

    Args:
        trials: a list of dicts, one per trial, with keys `"eta"` (float > 0,
            the learning rate), `"lam"` (float > 0, the L2 strength),
            `"val_acc"` (float, or None/NaN for a failed trial) and
            optionally `"round"` (int).
        path: where to write the PNG (str or path-like); missing parent
            folders are created.
        title: the figure title.
        boxes: optional list of dicts `{"eta_range": (lo, hi),
            "lam_range": (lo, hi), "round": r}`, each the box searched in
            round `r`, with `0 < lo < hi`.

    Returns:
        The `pathlib.Path` written.

    Raises:
        KbnError: when there is nothing to plot (no trials and no boxes), or
            a trial or box has a missing, non-positive or non-finite eta or
            lambda.
    """
    boxes = list(boxes or [])
    if not trials and not boxes:
        raise KbnError("plot_search needs at least one trial or box. Received none.")
    eta = np.array([_positive(t, "eta", "trial") for t in trials], dtype=float)  # (T,)
    lam = np.array([_positive(t, "lam", "trial") for t in trials], dtype=float)  # (T,)
    acc = np.array([_float_or_nan(t.get("val_acc")) for t in trials], dtype=float)  # (T,)
    rounds = [t.get("round") for t in trials]
    ok = np.isfinite(acc)  # (T,) trials that finished

    fig = _new_figure((7.5, 5.5))
    ax = fig.subplots()
    ax.set_xscale("log")
    ax.set_yscale("log")
    handles = []

    for i, box in enumerate(boxes):
        (e_lo, e_hi), (l_lo, l_hi) = _box_ranges(box, i)
        r = box.get("round", i + 1)
        colour = BOX_COLOURS[i % len(BOX_COLOURS)]
        ax.add_patch(
            Rectangle(
                (e_lo, l_lo),
                e_hi - e_lo,
                l_hi - l_lo,
                fill=False,
                edgecolor=colour,
                linewidth=1.5,
                linestyle="--",
                zorder=1,
            )
        )
        ax.annotate(
            f"round {r}",
            (e_lo, l_hi),
            xytext=(2, 2),
            textcoords="offset points",
            ha="left",
            va="bottom",
            color=colour,
            fontsize=9,
            fontweight="bold",
            zorder=2.5,
            bbox={
                "boxstyle": "square,pad=0.1",
                "facecolor": "white",
                "edgecolor": "none",
                "alpha": 0.6,
            },
        )

    norm = None
    if ok.any():
        vmin, vmax = float(acc[ok].min()), float(acc[ok].max())
        if vmin == vmax:  # one distinct accuracy: give the colour scale some width
            vmin, vmax = vmin - 0.005, vmax + 0.005
        norm = Normalize(vmin, vmax)
    round_values = sorted({r for r in rounds if r is not None}, key=_round_order)
    for key in [None, *round_values]:
        marker = "o" if key is None else ROUND_MARKERS[round_values.index(key) % len(ROUND_MARKERS)]
        sel = np.array([r == key for r in rounds], dtype=bool) & ok  # (T,)
        if sel.any():
            ax.scatter(
                eta[sel],
                lam[sel],
                c=acc[sel],
                cmap=CMAP,
                norm=norm,
                marker=marker,
                s=40,
                edgecolors="black",
                linewidths=0.5,
                zorder=3,
            )
        if key is not None:
            handles.append(
                Line2D(
                    [],
                    [],
                    linestyle="none",
                    marker=marker,
                    color="grey",
                    markeredgecolor="black",
                    label=f"round {key} trials",
                )
            )
    if norm is not None:
        fig.colorbar(ScalarMappable(norm=norm, cmap=CMAP), ax=ax, label="validation accuracy")

    failed = ~ok
    if failed.any():
        ax.scatter(eta[failed], lam[failed], marker="x", color="grey", s=40, zorder=2)
        handles.append(
            Line2D(
                [],
                [],
                linestyle="none",
                marker="x",
                color="grey",
                label=f"failed ({int(failed.sum())})",
            )
        )

    if ok.any():
        best = int(np.flatnonzero(ok)[np.argmax(acc[ok])])
        ax.scatter(
            [eta[best]],
            [lam[best]],
            marker="*",
            s=320,
            facecolor="none",
            edgecolors="red",
            linewidths=1.5,
            zorder=4,
        )
        handles.append(
            Line2D(
                [],
                [],
                linestyle="none",
                marker="*",
                markersize=12,
                markerfacecolor="none",
                markeredgecolor="red",
                label=f"best: eta={_fmt(eta[best])}, lambda={_fmt(lam[best])}, "
                f"val acc={_fmt(acc[best])}",
            )
        )
    ax.margins(0.08)

    ax.set_xlabel("eta (learning rate)")
    ax.set_ylabel("lambda (L2)")
    ax.grid(True, which="major", alpha=0.3)
    n_ok = int(ok.sum())
    title = _wrap(title, fig)
    ax.set_title(f"{title}\n{n_ok} of {len(trials)} trials finished" if failed.any() else title)
    if handles:
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncols=min(len(handles), 3),
            fontsize=8,
            frameon=False,
        )
    return _save(fig, path)


def plot_confusion(
    confusion: np.ndarray | Sequence[Sequence[int]],
    class_names: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str,
) -> pathlib.Path:
    """Draw a confusion matrix as a grid of cells, rows the true classes.

    Cell `[i, j]` is shaded by the fraction of class `i`'s examples that
    were predicted as class `j` (each row sums to 1, so rare classes read as
    well as common ones) and, for up to 20 classes, shows its count. The
    y-axis labels carry each class's accuracy (the diagonal over the row).

    Args:
        confusion: counts of shape (K, K) (array or nested lists), row `i`
            the examples of true class `i`, column `j` those predicted as
            class `j`.
        class_names: K strings, the names of the classes in order.
        path: where to write the PNG (str or path-like); missing parent
            folders are created.
        title: the figure title.

    Returns:
        The `pathlib.Path` written.

    Raises:
        KbnError: when `confusion` is not square, has negative counts, or
            its size differs from the number of class names.
    """
    counts = np.asarray(confusion, dtype=np.int64)  # (K, K)
    names = [str(name) for name in class_names]
    if (
        counts.ndim != 2
        or counts.shape[0] != counts.shape[1]
        or counts.shape[0] != len(names)
        or not len(names)
        or (counts < 0).any()
    ):
        raise KbnError(
            f"plot_confusion needs a K x K matrix of counts >= 0 and K class names. "
            f"Received: a matrix of shape {counts.shape} and {len(names)} names"
        )
    k = len(names)
    rows = counts.sum(axis=1, keepdims=True)  # (K, 1)
    fractions = counts / np.maximum(rows, 1)  # (K, K), rows sum to 1 (0 for empty rows)
    side = min(12.0, 3.0 + 0.5 * k)
    fig = _new_figure((side + 1.5, side))
    ax = fig.subplots()
    image = ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="fraction of the true class")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    str(counts[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if fractions[i, j] > 0.5 else "black",
                )
    accuracy = [f"{counts[i, i] / rows[i, 0]:.2f}" if rows[i, 0] else "-" for i in range(k)]
    ax.set_xticks(
        range(k), names, rotation=45 if k > 5 else 0, ha="right" if k > 5 else "center", fontsize=8
    )
    ax.set_yticks(range(k), [f"{n} ({a})" for n, a in zip(names, accuracy)], fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (accuracy)")
    total = int(counts.sum())
    overall = f"{np.trace(counts) / total:.4f}" if total else "-"
    ax.set_title(_wrap(f"{title}\naccuracy {overall}, n {total}", fig))
    return _save(fig, path)


def _new_figure(figsize):
    """A pyplot-free figure with its own Agg canvas."""
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    """Write `fig` to `path` as PNG, atomically; return the path."""
    path = pathlib.Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _plot_series(ax, values, **line_kwargs):
    """Plot per-epoch `values` (length E) at epochs 1..E, finite points only.

    None is an epoch without a value (a run that validates every few
    epochs) and is left out, the line joining its neighbours. Non-finite
    points become gaps; the label then names the first diverged epoch.
    Returns whether the series diverged.
    """
    known = [(epoch, value) for epoch, value in enumerate(values, start=1) if value is not None]
    epochs = np.asarray([epoch for epoch, _ in known], dtype=int)  # (E',)
    y = np.asarray([_float_or_nan(value) for _, value in known], dtype=float)  # (E',)
    bad = ~np.isfinite(y)
    label = line_kwargs.pop("label")
    if bad.any():
        first = int(epochs[bad][0])
        label = f"{label} (diverged at epoch {first})"
        ax.axvline(first, color=line_kwargs["color"], linestyle=":", linewidth=1)
    ax.plot(
        epochs,
        np.where(bad, np.nan, y),
        label=label,
        marker="o" if len(y) <= MARKER_MAX_EPOCHS else None,
        markersize=3,
        **line_kwargs,
    )
    return bool(bad.any())


def _style_epoch_axes(ax, metric, num_epochs):
    """Label the axes; show epochs 1..num_epochs, diverged ones and a lone epoch too."""
    num_epochs = max(num_epochs, 1)
    pad = max(0.5, 0.04 * (num_epochs - 1))
    ax.set_xlim(1 - pad, num_epochs + pad)
    ax.set_xlabel("epoch")
    ax.set_ylabel(Y_LABELS.get(metric, metric))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def _wrap(title, fig):
    """`title` broken into lines that fit the figure's width (about 10 characters an inch)."""
    width = max(20, int(fig.get_figwidth() * 10))
    return "\n".join(textwrap.fill(line, width) for line in title.splitlines())


def _fmt(value):
    """`0.0864`, `1.825e-04`: four significant digits, readable at any scale."""
    return f"{value:.4g}" if 1e-3 <= abs(value) < 1e4 else f"{value:.3e}"


def _round_order(r):
    """Sort rounds 1, 2, ..., 10 numerically, any non-numeric labels after them."""
    return (0, r, "") if isinstance(r, (int, float)) else (1, 0, str(r))


def _float_or_nan(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _positive(mapping, key, what):
    value = _float_or_nan(mapping.get(key))
    if not (math.isfinite(value) and value > 0):
        raise KbnError(
            f"plot_search: every {what} needs a finite {key} > 0 for the log axes. "
            f"Received: {mapping!r}"
        )
    return value


def _box_ranges(box, index):
    ranges = []
    for key in ("eta_range", "lam_range"):
        try:
            lo, hi = (float(v) for v in box[key])
        except (KeyError, TypeError, ValueError):
            raise KbnError(
                f"plot_search: box {index} needs {key}=(lo, hi). Received: {box!r}"
            ) from None
        if not (0 < lo < hi and math.isfinite(hi)):
            raise KbnError(
                f"plot_search: box {index} needs 0 < lo < hi in {key}. Received: {key}={box[key]!r}"
            )
        ranges.append((lo, hi))
    return ranges
