"""Plotly figures of SURM Explorer: pure functions, data in, ``plotly.graph_objects.Figure`` out."""
from .compare import approximation_curves, approximation_table, dial_figure, operators_figure, target_matrix
from .matrices import (displacement_figure, eigenvalue_plot, heatmap, is_estimate, no_eigenvalues_figure,
                       parameter_figure, spectrum)
from .search import search_front
from .training import parameter_bars, pareto, training_curves

__all__ = [
    "heatmap", "parameter_figure", "spectrum", "eigenvalue_plot", "no_eigenvalues_figure", "displacement_figure",
    "is_estimate", "approximation_curves", "approximation_table", "target_matrix", "dial_figure", "operators_figure",
    "training_curves", "parameter_bars", "pareto", "search_front",
]
