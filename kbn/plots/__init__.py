"""Figures as PNG: learning curves, run comparisons, the search's scatter, confusion matrices."""

from kbn.plots.figures import plot_comparison, plot_confusion, plot_curves, plot_search

__all__ = ["plot_comparison", "plot_confusion", "plot_curves", "plot_search"]
