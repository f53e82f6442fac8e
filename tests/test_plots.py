"""Tests for kbn.plots: every figure is a readable PNG, written atomically, from any
history a run can leave behind (no validation, one epoch, diverged), with nothing
left open in pyplot."""

import math

import matplotlib.image
import matplotlib.pyplot as plt
import pytest
from matplotlib.figure import Figure

from kbn import plots
from kbn.errors import KbnError

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
    both = matplotlib.image.imread(
        plots.plot_curves(HISTORY, tmp_path / "both.png", title="t"))
    loss_only = matplotlib.image.imread(
        plots.plot_curves(HISTORY, tmp_path / "loss.png", title="t", metrics=("loss",)))
    assert both.shape[0] == loss_only.shape[0]
    assert both.shape[1] > 1.5 * loss_only.shape[1]


def test_plot_curves_creates_missing_parent_folders(tmp_path):
    out = plots.plot_curves(HISTORY, tmp_path / "runs" / "a" / "b" / "curves.png", title="t")
    assert_png(out)


def test_plot_curves_accepts_a_string_path(tmp_path):
    out = plots.plot_curves(HISTORY, str(tmp_path / "curves.png"), title="t")
    assert out == tmp_path / "curves.png"
    assert_png(out)


def test_plot_curves_handles_a_history_without_validation(tmp_path):
    history = {"loss": HISTORY["loss"], "accuracy": HISTORY["accuracy"]}
    assert_png(plots.plot_curves(history, tmp_path / "curves.png", title="t"))


def test_plot_curves_handles_a_single_epoch(tmp_path):
    history = {key: values[:1] for key, values in HISTORY.items()}
    assert_png(plots.plot_curves(history, tmp_path / "curves.png", title="one epoch"))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_plot_curves_survives_a_diverged_run(tmp_path, bad):
    history = {
        "loss": [2.3, 5.0, 80.0, bad, bad],
        "val_loss": [2.3, 6.0, bad, bad, bad],
        "accuracy": [0.1, 0.1, 0.1, 0.1, 0.1],
    }
    assert_png(plots.plot_curves(history, tmp_path / "curves.png", title="diverged"))


def test_plot_curves_survives_a_run_that_is_nan_from_the_start(tmp_path):
    history = {"loss": [math.nan] * NUM_EPOCHS, "val_loss": [None] * NUM_EPOCHS}
    assert_png(plots.plot_curves(history, tmp_path / "curves.png", title="t"))


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
        {"with BN": HISTORY, "without BN": diverged}, tmp_path / "cmp" / "loss.png",
        title="3-layer network")
    assert_png(out)
    (fig,) = figures
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.lines if not line.get_label().startswith("_")}
    assert set(lines) == {"with BN training", "with BN validation",
                          "without BN training (diverged at epoch 2)",
                          "without BN validation (diverged at epoch 2)"}
    assert lines["with BN training"].get_linestyle() == "-"
    assert lines["with BN validation"].get_linestyle() == "--"
    assert lines["with BN training"].get_color() == lines["with BN validation"].get_color()
    assert (lines["with BN training"].get_color()
            != lines["without BN training (diverged at epoch 2)"].get_color())


def test_plot_comparison_handles_runs_without_validation_and_of_one_epoch(tmp_path):
    runs = {"a": {"accuracy": [0.3]}, "b": {"accuracy": [0.2, 0.3], "val_accuracy": [0.2, 0.25]}}
    assert_png(plots.plot_comparison(runs, tmp_path / "acc.png", title="t", metric="accuracy"))


def test_plot_comparison_rejects_a_run_without_the_metric(tmp_path):
    with pytest.raises(KbnError, match="'b'"):
        plots.plot_comparison({"a": HISTORY, "b": {"accuracy": [0.1]}}, tmp_path / "x.png",
                              title="t")
    with pytest.raises(KbnError):
        plots.plot_comparison({}, tmp_path / "x.png", title="t")


def test_plot_search_draws_trials_failures_best_and_boxes(tmp_path, monkeypatch):
    figures = record_figures(monkeypatch)
    out = plots.plot_search(TRIALS, tmp_path / "search" / "search.png", title="search",
                            boxes=BOXES)
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


def test_plot_search_handles_trials_without_rounds_and_without_boxes(tmp_path):
    trials = [{"eta": t["eta"], "lam": t["lam"], "val_acc": t["val_acc"]} for t in TRIALS]
    assert_png(plots.plot_search(trials, tmp_path / "search.png", title="t"))


def test_plot_search_handles_a_single_trial(tmp_path):
    assert_png(plots.plot_search(TRIALS[:1], tmp_path / "search.png", title="t"))


def test_plot_search_handles_only_failed_trials(tmp_path):
    failed = [t for t in TRIALS if t["val_acc"] is None or math.isnan(t["val_acc"])]
    assert_png(plots.plot_search(failed, tmp_path / "search.png", title="t", boxes=BOXES))


def test_plot_search_rejects_a_non_positive_eta_and_a_bad_box(tmp_path):
    with pytest.raises(KbnError, match="eta"):
        plots.plot_search([{"eta": 0.0, "lam": 1e-3, "val_acc": 0.3}], tmp_path / "s.png",
                          title="t")
    with pytest.raises(KbnError, match="lam_range"):
        plots.plot_search(TRIALS, tmp_path / "s.png", title="t",
                          boxes=[{"eta_range": (0.01, 0.1), "lam_range": (1e-3, 1e-4)}])
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


def record_figures(monkeypatch):
    """Collect every Figure kbn.plots saves, to inspect its artists."""
    figures = []
    original = plots._save

    def save(fig, path):
        figures.append(fig)
        return original(fig, path)

    monkeypatch.setattr(plots, "_save", save)
    return figures
