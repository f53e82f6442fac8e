"""Figures as PNG: learning curves, run comparisons, the search's scatter, confusion matrices,
the learning-rate range test's curve."""

from kbn.plots.figures import plot_comparison, plot_confusion, plot_curves, plot_search
from kbn.plots.range_test import plot_range_test

__all__ = ["plot_comparison", "plot_confusion", "plot_curves", "plot_range_test", "plot_search"]
