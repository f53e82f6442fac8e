"""Tests for kbn.plots: every figure is a readable PNG, written atomically, from any
history a run can leave behind (no validation, one epoch, diverged), with nothing
left open in pyplot."""

import math

import matplotlib.image
import matplotlib.pyplot as plt
import pytest
from matplotlib.figure import Figure

from kbn.errors import KbnError
from kbn.plots import figures as plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NUM_EPOCHS = 5
MAX_PNG_BYTES = 200_000

HISTORY = {
    "loss": [2.3, 1.9, 1.7, 1.6, 1.55],
    "val_loss": [2.2, 2.0, 1.85, 1.8, 1.78],
    "accuracy": [0.20, 0.33, 0.40, 0.44, 0.46],
    "val_accuracy": [0.22, 0.31, 0.36, 0.39, 0.40],
}
TRIALS = [
    {"eta": 0.01, "lam": 1e-6, "val_acc": 0.31, "round": 1},
    {"eta": 0.3, "lam": 1e-2, "val_acc": 0.25, "round": 1},
    {"eta": 0.6, "lam": 1e-3, "val_acc": None, "round": 1},
    {"eta": 0.09, "lam": 2e-4, "val_acc": 0.44, "round": 2},
    {"eta": 0.12, "lam": 1e-3, "val_acc": float("nan"), "round": 2},
]
BOXES = [
    {"eta_range": (0.01, 0.7), "lam_range": (1e-6, 0.1), "round": 1},
    {"eta_range": (0.08, 0.2), "lam_range": (4e-5, 3e-3), "round": 2},
]


def assert_png(path):
    """`path` is a complete PNG that matplotlib reads as an RGB(A) image."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) < MAX_PNG_BYTES
    image = matplotlib.image.imread(path)
    height, width, channels = image.shape
    assert 200 <= height <= 2000 and 200 <= width <= 2000
    assert channels in (3, 4)
    assert image.std() > 0  # something was drawn


def test_plot_curves_writes_a_png_and_returns_its_path(tmp_path):
    out = plots.plot_curves(HISTORY, tmp_path / "curves.png", title="3-layer network")
    assert out == tmp_path / "curves.png"
    assert_png(out)


def test_plot_curves_draws_one_subplot_per_metric_side_by_side(tmp_path):
    both = matplotlib.image.imread(plots.plot_curves(HISTORY, tmp_path / "both.png", title="t"))
    loss_only = matplotlib.image.imread(
        plots.plot_curves(HISTORY, tmp_path / "loss.png", title="t", metrics=("loss",))
    )
    assert both.shape[0] == loss_only.shape[0]
    assert both.shape[1] > 1.5 * loss_only.shape[1]


def test_plot_curves_creates_missing_parent_folders(tmp_path, monkeypatch):
    figures = record_figures(monkeypatch)
    out = plots.plot_curves(HISTORY, tmp_path / "runs" / "a" / "b" / "curves.png", title="t")
    assert out == tmp_path / "runs" / "a" / "b" / "curves.png"
    assert_png(out)
    (fig,) = figures
    loss_ax, acc_ax = fig.axes
    assert series(loss_ax) == {"training": HISTORY["loss"], "validation": HISTORY["val_loss"]}
    assert series(acc_ax) == {
        "training": HISTORY["accuracy"],
        "validation": HISTORY["val_accuracy"],
    }


def test_plot_curves_accepts_a_string_path(tmp_path):
    out = plots.plot_curves(HISTORY, str(tmp_path / "curves.png"), title="t")
    assert out == tmp_path / "curves.png"
    assert_png(out)


def test_plot_curves_handles_a_history_without_validation(tmp_path, monkeypatch):
    figures = record_figures(monkeypatch)
    history = {"loss": HISTORY["loss"], "accuracy": HISTORY["accuracy"]}
    assert_png(plots.plot_curves(history, tmp_path / "curves.png", title="t"))
    (fig,) = figures
    loss_ax, acc_ax = fig.axes
    assert fig.get_suptitle() == "t"
    assert series(loss_ax) == {"training": HISTORY["loss"]}
    assert series(acc_ax) == {"training": HISTORY["accuracy"]}
    assert legend(loss_ax) == legend(acc_ax) == ["training"]
    assert (loss_ax.get_ylabel(), acc_ax.get_ylabel()) == ("loss (cross-entropy + L2)", "accuracy")


def test_plot_curves_handles_a_single_epoch(tmp_path, monkeypatch):
    figures = record_figures(monkeypatch)
    history = {key: values[:1] for key, values in HISTORY.items()}
    assert_png(plots.plot_curves(history, tmp_path / "curves.png", title="one epoch"))
    (fig,) = figures
    for ax, metric in zip(fig.axes, ("loss", "accuracy")):
        assert series(ax) == {"training": history[metric], "validation": history[f"val_{metric}"]}
        # A lone point is a marker, at epoch 1, inside a view of some width.
        assert all(line.get_marker() == "o" for line in ax.lines)
        assert all(list(line.get_xdata()) == [1] for line in ax.lines)
        lo, hi = ax.get_xlim()
        assert lo < 1 < hi and hi - lo >= 1
        assert 1 in ax.get_xticks()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_plot_curves_survives_a_diverged_run(tmp_path, monkeypatch, bad):
    figures = record_figures(monkeypatch)
    history = {
        "loss": [2.3, 5.0, 80.0, bad, bad],
        "val_loss": [2.3, 6.0, bad, bad, bad],
        "accuracy": [0.1, 0.1, 0.1, 0.1, 0.1],
    }
    assert_png(plots.plot_curves(history, tmp_path / "curves.png", title="run"))
    (fig,) = figures
    loss_ax, acc_ax = fig.axes
    assert fig.get_suptitle() == "run (diverged)"
    # The finite points are drawn, the rest are gaps.
    assert series(loss_ax) == {
        "training (diverged at epoch 4)": [2.3, 5.0, 80.0, NAN, NAN],
        "validation (diverged at epoch 3)": [2.3, 6.0, NAN, NAN, NAN],
    }
    assert series(acc_ax) == {"training": history["accuracy"]}
    # A dotted line marks each divergence, and the view stays finite with every point in it.
    assert sorted(vertical_lines(loss_ax)) == [3, 4]
    lo, hi = loss_ax.get_ylim()
    assert math.isfinite(lo) and math.isfinite(hi) and lo <= 2.3 and hi >= 80.0


def test_plot_curves_survives_a_run_that_is_nan_from_the_start(tmp_path, monkeypatch):
    figures = record_figures(monkeypatch)
    history = {"loss": [math.nan] * NUM_EPOCHS, "val_loss": [math.inf] * NUM_EPOCHS}
    assert_png(plots.plot_curves(history, tmp_path / "curves.png", title="t"))
    (fig,) = figures
    (ax,) = fig.axes  # no accuracy in the history: no accuracy subplot
    assert fig.get_suptitle() == "t (diverged)"
    assert legend(ax) == ["training (diverged at epoch 1)", "validation (diverged at epoch 1)"]
    assert vertical_lines(ax) == [1, 1]
    assert ax.get_xlim() == pytest.approx((1 - 0.5, NUM_EPOCHS + 0.5), abs=0.2)


def test_plot_curves_joins_the_validated_epochs_of_a_run_that_validates_every_few(
    tmp_path, monkeypatch
):
    figures = record_figures(monkeypatch)
    history = {"loss": [2.0, 1.5, 1.2, 1.0, 0.9], "val_loss": [None, 1.6, None, 1.1, 1.0]}
    plots.plot_curves(history, tmp_path / "curves.png", title="t")
    (ax,) = figures[0].axes
    assert figures[0].get_suptitle() == "t"  # an epoch without validation is no divergence
    assert series(ax) == {"training": history["loss"], "validation": [1.6, 1.1, 1.0]}
    validation = next(line for line in ax.lines if line.get_label() == "validation")
    assert list(validation.get_xdata()) == [2, 4, 5] and vertical_lines(ax) == []


def test_plot_curves_marks_divergence_in_the_legend_and_title(tmp_path, monkeypatch):
    figures = record_figures(monkeypatch)
    history = {"loss": [2.3, 5.0, math.nan], "val_loss": [2.3, math.inf, math.nan]}
    plots.plot_curves(history, tmp_path / "curves.png", title="eta=0.9")
    (fig,) = figures
    assert fig.get_suptitle() == "eta=0.9 (diverged)"
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["training (diverged at epoch 3)", "validation (diverged at epoch 2)"]


def test_plot_curves_labels_axes_like_the_report(tmp_path, monkeypatch):
    figures = record_figures(monkeypatch)
    plots.plot_curves(HISTORY, tmp_path / "curves.png", title="2-layer network, eta=0.001")
    (fig,) = figures
    loss_ax, acc_ax = fig.axes
    assert fig.get_suptitle() == "2-layer network, eta=0.001"
    assert loss_ax.get_xlabel() == acc_ax.get_xlabel() == "epoch"
    assert loss_ax.get_ylabel() == "loss (cross-entropy + L2)"
    assert acc_ax.get_ylabel() == "accuracy"
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ["training", "validation"]
    assert list(loss_ax.lines[0].get_xdata()) == list(range(1, NUM_EPOCHS + 1))
    ticks = [t for t in loss_ax.get_xticks() if loss_ax.get_xlim()[0] <= t <= loss_ax.get_xlim()[1]]
    assert all(float(t).is_integer() for t in ticks)


def test_plot_curves_rejects_a_history_without_the_metrics(tmp_path):
    with pytest.raises(KbnError, match="val_acc"):
        plots.plot_curves({"val_acc": [0.1]}, tmp_path / "curves.png", title="t")
    assert not (tmp_path / "curves.png").exists()


def test_plot_comparison_draws_solid_training_and_dashed_validation(tmp_path, monkeypatch):
    figures = record_figures(monkeypatch)
    diverged = {"loss": [2.3, math.nan, math.nan], "val_loss": [2.3, math.inf, math.nan]}
    out = plots.plot_comparison(
        {"with BN": HISTORY, "without BN": diverged},
        tmp_path / "cmp" / "loss.png",
        title="3-layer network",
    )
    assert_png(out)
    (fig,) = figures
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.lines if not line.get_label().startswith("_")}
    assert set(lines) == {
        "with BN training",
        "with BN validation",
        "without BN training (diverged at epoch 2)",
        "without BN validation (diverged at epoch 2)",
    }
    assert lines["with BN training"].get_linestyle() == "-"
    assert lines["with BN validation"].get_linestyle() == "--"
    assert lines["with BN training"].get_color() == lines["with BN validation"].get_color()
    assert (
        lines["with BN training"].get_color()
        != lines["without BN training (diverged at epoch 2)"].get_color()
    )


def test_plot_comparison_handles_runs_without_validation_and_of_one_epoch(tmp_path, monkeypatch):
    figures = record_figures(monkeypatch)
    runs = {"a": {"accuracy": [0.3]}, "b": {"accuracy": [0.2, 0.3], "val_accuracy": [0.2, 0.25]}}
    assert_png(plots.plot_comparison(runs, tmp_path / "acc.png", title="t", metric="accuracy"))
    (fig,) = figures
    (ax,) = fig.axes
    assert ax.get_title() == "t"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("epoch", "accuracy")
    assert series(ax) == {
        "a training": [0.3],
        "b training": [0.2, 0.3],
        "b validation": [0.2, 0.25],
    }
    lines = {line.get_label(): line for line in ax.lines}
    assert lines["a training"].get_marker() == "o"  # the one-epoch run still shows
    assert lines["a training"].get_color() != lines["b training"].get_color()
    assert lines["b validation"].get_linestyle() == "--"
    lo, hi = ax.get_xlim()
    assert lo < 1 and hi > 2  # the longer run sets the epochs shown


def test_plot_comparison_rejects_a_run_without_the_metric(tmp_path):
    with pytest.raises(KbnError, match="'b'"):
        plots.plot_comparison(
            {"a": HISTORY, "b": {"accuracy": [0.1]}}, tmp_path / "x.png", title="t"
        )
    with pytest.raises(KbnError):
        plots.plot_comparison({}, tmp_path / "x.png", title="t")


def test_plot_search_draws_trials_failures_best_and_boxes(tmp_path, monkeypatch):
    figures = record_figures(monkeypatch)
    out = plots.plot_search(TRIALS, tmp_path / "search" / "search.png", title="search", boxes=BOXES)
    assert_png(out)
    (fig,) = figures
    ax, colorbar_ax = fig.axes
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert ax.get_xlabel() == "eta (learning rate)"
    assert ax.get_ylabel() == "lambda (L2)"
    assert colorbar_ax.get_ylabel() == "validation accuracy"
    assert len(ax.patches) == len(BOXES)
    assert {t.get_text() for t in ax.texts} == {"round 1", "round 2"}
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "failed (2)" in legend
    assert "best: eta=0.09, lambda=2.000e-04, val acc=0.44" in legend
    # Every box is inside the view.
    (x_lo, x_hi), (y_lo, y_hi) = ax.get_xlim(), ax.get_ylim()
    assert x_lo <= 0.01 and x_hi >= 0.7 and y_lo <= 1e-6 and y_hi >= 0.1


def test_plot_search_handles_trials_without_rounds_and_without_boxes(tmp_path, monkeypatch):
    figures = record_figures(monkeypatch)
    trials = [{"eta": t["eta"], "lam": t["lam"], "val_acc": t["val_acc"]} for t in TRIALS]
    assert_png(plots.plot_search(trials, tmp_path / "search.png", title="t"))
    (fig,) = figures
    ax, colorbar_ax = fig.axes
    assert colorbar_ax.get_ylabel() == "validation accuracy"
    assert len(ax.patches) == len(ax.texts) == 0  # no boxes, no round labels
    finished, failed, best = ax.collections
    assert points(finished) == [(0.01, 1e-6), (0.3, 1e-2), (0.09, 2e-4)]
    assert list(finished.get_array()) == [0.31, 0.25, 0.44]
    assert points(failed) == [(0.6, 1e-3), (0.12, 1e-3)]
    assert points(best) == [(0.09, 2e-4)]
    assert fig_legend(fig) == ["failed (2)", "best: eta=0.09, lambda=2.000e-04, val acc=0.44"]
    assert ax.get_title() == "t\n3 of 5 trials finished"


def test_plot_search_handles_a_single_trial(tmp_path, monkeypatch):
    figures = record_figures(monkeypatch)
    assert_png(plots.plot_search(TRIALS[:1], tmp_path / "search.png", title="t"))
    (fig,) = figures
    ax, colorbar_ax = fig.axes
    trial, best = ax.collections
    assert points(trial) == points(best) == [(0.01, 1e-6)]
    # One accuracy still gets a colour scale of some width, around it.
    lo, hi = trial.norm.vmin, trial.norm.vmax
    assert lo < 0.31 < hi
    assert fig_legend(fig) == ["round 1 trials", "best: eta=0.01, lambda=1.000e-06, val acc=0.31"]
    (x_lo, x_hi), (y_lo, y_hi) = ax.get_xlim(), ax.get_ylim()
    assert x_lo < 0.01 < x_hi and y_lo < 1e-6 < y_hi
    assert ax.get_title() == "t"


def test_plot_search_handles_only_failed_trials(tmp_path, monkeypatch):
    figures = record_figures(monkeypatch)
    failed = [t for t in TRIALS if t["val_acc"] is None or math.isnan(t["val_acc"])]
    assert_png(plots.plot_search(failed, tmp_path / "search.png", title="t", boxes=BOXES))
    (fig,) = figures
    (ax,) = fig.axes  # no accuracy, no colorbar
    (crosses,) = ax.collections  # no coloured trials, no best
    assert points(crosses) == [(0.6, 1e-3), (0.12, 1e-3)]
    assert len(ax.patches) == len(BOXES)
    assert {t.get_text() for t in ax.texts} == {"round 1", "round 2"}
    assert fig_legend(fig) == ["round 1 trials", "round 2 trials", "failed (2)"]
    assert ax.get_title() == "t\n0 of 2 trials finished"


def test_plot_search_rejects_a_non_positive_eta_and_a_bad_box(tmp_path):
    with pytest.raises(KbnError, match="eta"):
        plots.plot_search(
            [{"eta": 0.0, "lam": 1e-3, "val_acc": 0.3}], tmp_path / "s.png", title="t"
        )
    with pytest.raises(KbnError, match="lam_range"):
        plots.plot_search(
            TRIALS,
            tmp_path / "s.png",
            title="t",
            boxes=[{"eta_range": (0.01, 0.1), "lam_range": (1e-3, 1e-4)}],
        )
    with pytest.raises(KbnError):
        plots.plot_search([], tmp_path / "s.png", title="t")
    assert list(tmp_path.iterdir()) == []


def test_plots_leave_no_open_figures_and_no_temporary_files(tmp_path):
    plt.close("all")
    plots.plot_curves(HISTORY, tmp_path / "a.png", title="t")
    plots.plot_comparison({"x": HISTORY}, tmp_path / "b.png", title="t")
    plots.plot_search(TRIALS, tmp_path / "c.png", title="t", boxes=BOXES)
    assert plt.get_fignums() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "c.png"]


def test_a_failed_save_leaves_the_previous_png_untouched(tmp_path, monkeypatch):
    path = plots.plot_curves(HISTORY, tmp_path / "curves.png", title="good")
    good = path.read_bytes()

    def crash_mid_write(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(PNG_SIGNATURE + b"torn")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", crash_mid_write)
    for draw in (
        lambda: plots.plot_curves(HISTORY, path, title="bad"),
        lambda: plots.plot_comparison({"x": HISTORY}, path, title="bad"),
        lambda: plots.plot_search(TRIALS, path, title="bad", boxes=BOXES),
    ):
        with pytest.raises(OSError, match="disk full"):
            draw()
        assert path.read_bytes() == good
        assert list(tmp_path.iterdir()) == [path]


NAN = "nan"  # how `series` shows a gap


def series(ax):
    """{legend label: y values} of the curves on `ax`, gaps (NaN) shown as NAN."""
    return {
        line.get_label(): [NAN if math.isnan(y) else pytest.approx(y) for y in line.get_ydata()]
        for line in ax.lines
        if not line.get_label().startswith("_")
    }


def legend(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def fig_legend(fig):
    return [t.get_text() for t in fig.legends[0].get_texts()]


def vertical_lines(ax):
    """The epochs marked by unlabelled vertical lines (divergence markers)."""
    return [
        line.get_xdata()[0]
        for line in ax.lines
        if line.get_label().startswith("_") and len(set(line.get_xdata())) == 1
    ]


def points(collection):
    """The (x, y) data points of a scatter collection, rounded for comparison."""
    return [(float(f"{x:.6g}"), float(f"{y:.6g}")) for x, y in collection.get_offsets()]


def record_figures(monkeypatch):
    """Collect every Figure kbn.plots saves, to inspect its artists."""
    figures = []
    original = plots._save

    def save(fig, path):
        figures.append(fig)
        return original(fig, path)

    monkeypatch.setattr(plots, "_save", save)
    return figures
