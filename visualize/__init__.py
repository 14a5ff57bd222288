"""Plotly figures of SURM Explorer: pure functions, data in, ``plotly.graph_objects.Figure`` out."""
from .compare import approximation_curves, approximation_table, target_matrix
from .matrices import displacement_figure, eigenvalue_plot, heatmap, spectrum
from .search import search_front
from .training import parameter_bars, pareto, training_curves

__all__ = [
    "heatmap", "spectrum", "eigenvalue_plot", "displacement_figure",
    "approximation_curves", "approximation_table", "target_matrix",
    "training_curves", "parameter_bars", "pareto", "search_front",
]
