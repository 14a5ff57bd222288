"""Figures of one structured map: its entries, singular values, eigenvalues and displacement.

Every builder takes a family module (``surm_core.make(...)``) or a plain 2-D tensor/ndarray and
gets all numbers from ``surm_core.analysis``; these functions only draw.
"""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from surm_core import analysis
from surm_core.families import StructuredMatrix

from .style import DIVERGING, GRID_LINE, OTHER_COLOR, color, empty_figure, figure

#: Heatmaps show at most this many rows and columns; larger matrices are sampled with a stride
#: (every s-th row and column, exact entries) so the browser gets ~65k numbers, not millions.
MAX_CELLS = 256
#: Tile edges are drawn only while there are few enough of them to stay readable.
MAX_EDGES = 32


def as_matrix(m) -> torch.Tensor:
    """The dense float64 matrix of a family module, tensor or ndarray (``ValueError`` otherwise)."""
    if isinstance(m, StructuredMatrix):
        with torch.no_grad():
            return m.to_dense().double()
    if isinstance(m, (torch.Tensor, np.ndarray)):
        t = torch.as_tensor(m).detach().to("cpu", torch.float64)
        if t.ndim != 2 or 0 in t.shape:
            raise ValueError(f"expected a non-empty 2-D matrix, got shape {tuple(t.shape)}")
        return t
    raise ValueError(f"expected a structured family module or a 2-D matrix, got {type(m).__name__}")


def name_of(m) -> str:
    """How a map is named in titles: its family (with shape), or "matrix"."""
    rows, cols = m.shape
    return f"{m.family if isinstance(m, StructuredMatrix) else 'matrix'} ({rows}×{cols})"


def stride_for(rows: int, cols: int) -> int:
    """Sampling stride that keeps both sides of a heatmap within ``MAX_CELLS``."""
    return -(-max(rows, cols) // MAX_CELLS)


def tile_edges(m) -> tuple[list[int], list[int]]:
    """Row and column indices where the family's tiles/blocks start (its ``tile_edges()``), each
    side only while it has at most ``MAX_EDGES`` of them (empty: none to show)."""
    edges_r, edges_c = m.tile_edges()
    return (edges_r if len(edges_r) <= MAX_EDGES else [],
            edges_c if len(edges_c) <= MAX_EDGES else [])


def _matrix_trace(M: torch.Tensor, stride: int, **heatmap) -> go.Heatmap:
    rows, cols = M.shape
    return go.Heatmap(
        z=M[::stride, ::stride].numpy(), x=np.arange(0, cols, stride), y=np.arange(0, rows, stride),
        colorscale=DIVERGING, zmid=0, hovertemplate="row %{y}, col %{x}: %{z:.4g}<extra></extra>",
        **heatmap,
    )


def _edge_trace(edges_r, edges_c, rows, cols) -> go.Scatter:
    """Thin lines between cells at the given row/column edges, as one None-separated trace."""
    x, y = [], []
    for e in edges_c:
        x += [e - 0.5, e - 0.5, None]
        y += [-0.5, rows - 0.5, None]
    for e in edges_r:
        x += [-0.5, cols - 0.5, None]
        y += [e - 0.5, e - 0.5, None]
    return go.Scatter(x=x, y=y, mode="lines", line=GRID_LINE, hoverinfo="skip", showlegend=False)


def heatmap(m, title: str | None = None) -> go.Figure:
    """Heatmap of the entries (diverging colours, white at 0), rows downward like a matrix, with
    tile/block edges of the family drawn as thin lines; above ``MAX_CELLS`` a side, every s-th
    row and column is shown (said in the title).

    >>> heatmap(torch.eye(3)).data[0].z.tolist()
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    M = as_matrix(m)
    rows, cols = M.shape
    stride = stride_for(rows, cols)
    text = title or f"Entries of {name_of(m)}"
    if isinstance(m, StructuredMatrix):
        text += f", {m.num_params:,} parameters"
    if stride > 1:
        text += f"<br><sub>sampled: 1 row and column in {stride} shown</sub>"
    if not M.any():
        text += "<br><sub>all zero (an adapter at initialisation)</sub>"
    fig = figure(text, yaxis=dict(autorange="reversed", scaleanchor="x", constrain="domain"),
                 xaxis=dict(constrain="domain", side="top"))
    fig.add_trace(_matrix_trace(M, stride))
    edges_r, edges_c = tile_edges(m) if isinstance(m, StructuredMatrix) else ([], [])
    if edges_r or edges_c:
        fig.add_trace(_edge_trace(edges_r, edges_c, rows, cols))
    return fig


# -- spectra ---------------------------------------------------------------------------------
def _log_axis(values: list[torch.Tensor]) -> tuple[float, list[float]]:
    """The lowest value a log axis shows, and its range (log10 units), for descending nonnegative
    vectors: down to the smallest positive value but at most 17 decades below the largest
    (float64 round-off lies there; zeros have no place on a log axis at all)."""
    top = max(float(v[0]) for v in values)
    low = max(min(float(v[v > 0].min()) for v in values), top * 1e-17)
    return low, [math.log10(low) - 0.2, math.log10(top) + 0.2]


def _values_trace(s: torch.Tensor, **scatter) -> go.Scatter:
    """σ_1 ≥ σ_2 ≥ … against their index, without the trailing exact zeros (a log axis has no
    place for them; the rank marker says where they start)."""
    s = s[s > 0]
    return go.Scatter(x=np.arange(1, len(s) + 1), y=s.numpy(), mode="lines+markers",
                      marker=dict(size=3), **scatter)


def _rank_marker(x: int, low: float, high: float, line_color: str, group: str) -> go.Scatter:
    return go.Scatter(x=[x, x], y=[low, high], mode="lines", legendgroup=group, showlegend=False,
                      line=dict(color=line_color, dash="dash", width=1),
                      hovertemplate=f"numerical rank {x}<extra>{group}</extra>")


def spectrum(mats: dict, k: int | None = None) -> go.Figure:
    """Singular values σ_1 ≥ σ_2 ≥ … (log y) of each map in ``mats`` (name -> module or matrix),
    overlaid, with each numerical rank (``analysis.numerical_rank``) marked by a dashed line.
    ``k``: only the top k values (``analysis.singular_values(m, k)``).

    >>> [t.name for t in spectrum({"I": torch.eye(2)}).data]
    ['I (rank 2)', None]
    """
    if not isinstance(mats, dict):
        raise ValueError(f"mats must be a dict of name -> module or matrix, got {type(mats).__name__}")
    if not mats:
        return empty_figure("Singular values", "Pick a family to see its singular values.")
    values = {name: analysis.singular_values(m, k) for name, m in mats.items()}
    # with all values at hand the rank needs no second SVD (k: the rank within the top k)
    ranks = {name: analysis.numerical_rank(m, values=s) if k is None else analysis.numerical_rank(m)
             for (name, m), s in zip(mats.items(), values.values())}
    nonzero = [s for s in values.values() if s[0] > 0]
    fig = figure("Singular values (numerical rank dashed)", xaxis=dict(title="index i"),
                 yaxis=dict(type="log", title="σ_i", exponentformat="power"))
    low, log_range = _log_axis(nonzero) if nonzero else (1.0, None)
    for name, s in values.items():
        m = mats[name]
        c = color(m.family if isinstance(m, StructuredMatrix) else name)
        label = f"{name} (rank {ranks[name]})" if s[0] > 0 else f"{name} (all zero)"
        fig.add_trace(_values_trace(s, name=label, legendgroup=name, line=dict(color=c)))
        if s[0] > 0:
            fig.add_trace(_rank_marker(ranks[name], low, float(s[0]), c, name))
    if nonzero:
        fig.update_yaxes(range=log_range)
    else:
        fig.add_annotation(text="All singular values are 0 (ΔW = 0, an adapter at initialisation).",
                           x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False)
    return fig


def eigenvalue_plot(m) -> go.Figure:
    """Eigenvalues of a square map in the complex plane (``analysis.eigenvalues``), with what the
    family's structure says about them (its ``eigenvalue_caption()``) under the title.
    ValueError if not square.

    >>> eigenvalue_plot(torch.diag(torch.tensor([1.0, -2.0]))).data[0].x.tolist()
    [-2.0, 1.0]
    """
    lam = analysis.eigenvalues(m)
    title = f"Eigenvalues of {name_of(m)} in the complex plane"
    caption = m.eigenvalue_caption() if isinstance(m, StructuredMatrix) else None
    if caption:
        title += f"<br><sub>{caption}</sub>"
    fig = figure(title, xaxis=dict(title="Re λ", zeroline=True),
                 yaxis=dict(title="Im λ", zeroline=True, scaleanchor="x"))
    fig.add_trace(go.Scatter(
        x=lam.real.numpy(), y=lam.imag.numpy(), mode="markers", name="λ",
        marker=dict(size=6, color=color(m.family if isinstance(m, StructuredMatrix) else None)),
        hovertemplate="λ = %{x:.4g} %{y:+.4g}i<extra></extra>"))
    return fig


# -- displacement ----------------------------------------------------------------------------
def displacement_figure(M, A="Z1", B="Z-1") -> go.Figure:
    """The Sylvester residual ∇_{A,B}(M) = A M − M B as a heatmap (left) and its singular values
    (right, log y), with the displacement rank (``analysis.displacement_rank``) in the title and
    marked. ``A``/``B``: operator names ("Z1", "Z-1", "Z<f>": the f-shifts Z_f) or matrices.

    >>> displacement_figure(torch.eye(3), "Z1", "Z1").layout.title.text.endswith("rank 0")
    True
    """
    R = analysis.displacement(M, A, B)
    s = analysis.singular_values(R)
    rank = analysis.displacement_rank(M, A, B, values=s)
    a, b = (op if isinstance(op, str) else name for op, name in ((A, "A"), (B, "B")))
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.18,
                        subplot_titles=(f"residual {a}·M − M·{b}", "its singular values"))
    stride = stride_for(*R.shape)
    fig.add_trace(_matrix_trace(R, stride, colorbar=dict(x=0.46, xanchor="left", thickness=12)), row=1, col=1)
    fig.add_trace(_values_trace(s, line=dict(color=color(getattr(M, "family", None))),
                                name="σ_i(∇)", showlegend=False), row=1, col=2)
    title = f"Displacement of {name_of(M)} under ({a}, {b}): displacement rank {rank}"
    if stride > 1:
        title += f"<br><sub>residual sampled: 1 row and column in {stride} shown</sub>"
    fig.update_layout(title=dict(text=title))
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_yaxes(type="log", exponentformat="power", row=1, col=2)
    if s[0] > 0:
        low, log_range = _log_axis([s])
        fig.add_trace(_rank_marker(rank, low, float(s[0]), OTHER_COLOR, "∇"), row=1, col=2)
        fig.update_yaxes(range=log_range, row=1, col=2)
    else:
        fig.add_annotation(text="the residual is exactly 0", x=0.82, y=0.5, xref="paper",
                           yref="paper", showarrow=False)
        fig.update_xaxes(visible=False, row=1, col=2)
        fig.update_yaxes(visible=False, row=1, col=2)
    return fig
