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

from .style import DIVERGING, GRID_LINE, OTHER_COLOR, color, empty_figure, figure, log_ticks, title_margin

#: Heatmaps show at most this many rows and columns; a larger matrix is shown in cells of s × s
#: entries, each cell holding its entry of largest magnitude (so the browser gets ~65k numbers,
#: not millions, and a lone nonzero row or column still shows).
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
    return f"{m.family if isinstance(m, StructuredMatrix) else 'matrix'} {rows}×{cols}"


def stride_for(rows: int, cols: int) -> int:
    """Cell size s that keeps both sides of a heatmap within ``MAX_CELLS``."""
    return -(-max(rows, cols) // MAX_CELLS)


def pooled(M: torch.Tensor, s: int) -> torch.Tensor:
    """M in cells of s × s entries (the last ones cut short), each cell its entry of largest
    magnitude, sign kept: no structure hides between sampled rows (s = 1: M itself).

    >>> pooled(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, -2.0], [1.0, 0.0, 0.0]]), 2)
    tensor([[ 0., -2.],
            [ 1.,  0.]])
    """
    if s == 1:
        return M
    rows, cols = M.shape
    R, C = -(-rows // s), -(-cols // s)
    padded = M.new_zeros(R * s, C * s)
    padded[:rows, :cols] = M
    cells = padded.reshape(R, s, C, s).permute(0, 2, 1, 3).reshape(R, C, s * s)
    return cells.gather(-1, cells.abs().argmax(-1, keepdim=True)).squeeze(-1)


def cell_note(s: int) -> str:
    return f"cells: the largest |entry| of {s} × {s}" if s > 1 else ""


def tile_edges(m) -> tuple[list[int], list[int]]:
    """Row and column indices where the family's tiles/blocks start (its ``tile_edges()``), each
    side only while it has at most ``MAX_EDGES`` of them (empty: none to show)."""
    edges_r, edges_c = m.tile_edges()
    return (edges_r if len(edges_r) <= MAX_EDGES else [],
            edges_c if len(edges_c) <= MAX_EDGES else [])


def matrix_trace(M: torch.Tensor, stride: int, **heatmap) -> go.Heatmap:
    """A heatmap trace of M in cells of stride × stride (:func:`pooled`), rows and columns at the cell centres."""
    rows, cols = M.shape
    # cell centres, so that a cell covers its entries' positions and tile edges fall between cells
    centre = (stride - 1) / 2
    hover = ("row %{y}, col %{x}: %{z:.4g}" if stride == 1 else
             f"{stride}×{stride} cell around row %{{y}}, col %{{x}}: largest |entry| %{{z:.4g}}")
    return go.Heatmap(
        # float32 halves what a page receives (a 1024 × 1024 map: 0.45 MB, not 0.82 MB of JSON);
        # hover shows 4 digits
        z=pooled(M, stride).float().numpy(), x=np.arange(0, cols, stride) + centre, y=np.arange(0, rows, stride) + centre,
        hovertemplate=hover + "<extra></extra>", **{"colorscale": DIVERGING, "zmid": 0, **heatmap},
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


def _subtitle(*notes: str) -> str:
    """Notes under a title, one line each (empty notes left out)."""
    return "".join(f"<br><sub>{n}</sub>" for n in notes if n)


def heatmap(m, title: str | None = None) -> go.Figure:
    """Heatmap of the entries (diverging colours, white at 0), rows downward like a matrix, with
    tile/block edges of the family drawn as thin lines; above ``MAX_CELLS`` a side, in cells of
    s × s entries showing each cell's largest-magnitude entry (:func:`pooled`; said in the title).

    >>> heatmap(torch.eye(3)).data[0].z.tolist()
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    M = as_matrix(m)
    rows, cols = M.shape
    stride = stride_for(rows, cols)
    name = name_of(m) + (f", {m.num_params:,} parameters" if isinstance(m, StructuredMatrix) else "")
    text = (title or "Entries") + _subtitle(
        name, cell_note(stride), "all zero (an adapter at initialisation)" if not M.any() else "")
    fig = figure(text, yaxis=dict(autorange="reversed", scaleanchor="x", constrain="domain"),
                 xaxis=dict(constrain="domain", side="top"),  # column numbers on top, like a matrix's
                 margin=title_margin(text, below=20))
    fig.add_trace(matrix_trace(M, stride, colorbar=dict(thickness=12)))
    edges_r, edges_c = tile_edges(m) if isinstance(m, StructuredMatrix) else ([], [])
    if edges_r or edges_c:
        fig.add_trace(_edge_trace(edges_r, edges_c, rows, cols))
    return fig


def parameter_figure(m) -> go.Figure:
    """The family's own parameters beside its matrix (``m.parameter_views()``): a vector as bars
    against its index, a matrix as a heatmap (in cells above ``MAX_CELLS``), one panel each,
    top to bottom; derived views (a spectrum) are drawn in grey.

    >>> from surm_core import make
    >>> [t.type for t in parameter_figure(make("dense", 2, 3, init="random", seed=0)).data]
    ['heatmap']
    """
    views = m.parameter_views()
    fig = make_subplots(rows=len(views), cols=1, vertical_spacing=0.3 / len(views),
                        subplot_titles=[v.title for v in views])
    for i, view in enumerate(views, start=1):
        values = view.values.detach().to("cpu", torch.float64)
        if values.ndim == 1:
            fig.add_trace(go.Bar(x=np.arange(len(values)), y=values.numpy(), showlegend=False,
                                 marker_color=OTHER_COLOR if view.derived else color(m.family),
                                 hovertemplate="[%{x}] = %{y:.4g}<extra></extra>"), row=i, col=1)
        else:
            stride = stride_for(*values.shape)
            shades = dict(colorscale="Greys", zmid=None) if view.derived else {}
            fig.add_trace(matrix_trace(values, stride, showscale=False, **shades), row=i, col=1)
            fig.update_yaxes(autorange="reversed", tickformat="d", row=i, col=1)
            if values.shape[0] <= 4:  # a few rows or columns (tiles, factors): one tick each, not halves
                fig.update_yaxes(dtick=1, row=i, col=1)
            if values.shape[1] <= 4:
                fig.update_xaxes(dtick=1, tickformat="d", row=i, col=1)
    derived = "grey: derived from them" if any(v.derived for v in views) else ""
    title = f"The {m.num_params:,} parameters that make ΔW"
    title += _subtitle("these numbers, put in place, are the matrix", derived)
    fig.update_layout(title=dict(text=title), margin=title_margin(title, below=20))
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


SIGMA_I = "σ<sub>i</sub>"


#: ``layout.meta`` of a figure that shows estimates (``estimate=True``): exact values follow.
ESTIMATE = "estimate"


def is_estimate(fig: go.Figure) -> bool:
    """Whether ``fig`` shows estimates (its exact version is still to come)."""
    return fig.layout.meta == ESTIMATE


def _estimated(fig: go.Figure) -> go.Figure:
    fig.layout.meta = ESTIMATE
    return fig


def spectrum(mats: dict, k: int | None = None, estimate: bool = False) -> go.Figure:
    """Singular values σ_1 ≥ σ_2 ≥ … (log y) of each map in ``mats`` (name -> module or matrix),
    overlaid, with each numerical rank (``analysis.numerical_rank``) marked by a dashed line.
    ``k``: only the top k values (``analysis.singular_values(m, k)``). ``estimate``: a map
    whose values would need a dense SVD shows the top ``analysis.ESTIMATE_K`` estimated
    (``analysis.estimate_singular_values``, no rank), and the title says so (:func:`is_estimate`).

    >>> [t.name for t in spectrum({"I": torch.eye(2)}).data]
    ['I (rank 2)', None]
    """
    if not isinstance(mats, dict):
        raise ValueError(f"mats must be a dict of name -> module or matrix, got {type(mats).__name__}")
    if not mats:
        return empty_figure("Singular values", "Pick a family to see its singular values.")
    values, estimated = {}, set()
    for name, m in mats.items():
        s = analysis.cheap_singular_values(m) if estimate and k is None else None
        if estimate and k is None and s is None:
            s = analysis.estimate_singular_values(m)
            estimated.add(name)
        values[name] = analysis.singular_values(m, k) if s is None else s
    # with all values at hand the rank needs no second SVD (k: the rank within the top k)
    ranks = {name: analysis.numerical_rank(m, values=values[name]) if k is None else analysis.numerical_rank(m)
             for name, m in mats.items() if name not in estimated}
    nonzero = [s for s in values.values() if s[0] > 0]
    note = (f"estimate: top {analysis.ESTIMATE_K} (randomized SVD); exact ones follow" if estimated
            else "log scale; numerical rank dashed")
    fig = figure("Singular values" + _subtitle(note),
                 xaxis=dict(title="index i"), yaxis=dict(type="log", title=SIGMA_I),
                 legend=dict(orientation="h", x=0, y=-0.2, yanchor="top"))
    low, log_range = _log_axis(nonzero) if nonzero else (1.0, None)
    for name, s in values.items():
        m = mats[name]
        c = color(m.family if isinstance(m, StructuredMatrix) else name)
        label = (f"{name} (top {len(s)}, estimated)" if name in estimated else
                 f"{name} (rank {ranks[name]})" if s[0] > 0 else f"{name} (all zero)")
        fig.add_trace(_values_trace(s, name=label, legendgroup=name, line=dict(color=c)))
        if s[0] > 0 and name not in estimated:
            fig.add_trace(_rank_marker(ranks[name], low, float(s[0]), c, name))
    if estimated:
        _estimated(fig)
    if nonzero:
        fig.update_yaxes(range=log_range, **log_ticks(log_range))
    else:
        fig.add_annotation(text="All singular values are 0 (ΔW = 0, an adapter at initialisation).",
                           x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False)
    return fig


def eigenvalue_plot(m, estimate: bool = False) -> go.Figure:
    """Eigenvalues of a square map in the complex plane (``analysis.eigenvalues``), with what the
    family's structure says about them (its ``eigenvalue_caption()``) under the title.
    ``estimate``: a map whose eigenvalues would need a dense ``eigvals`` shows Ritz values
    (``analysis.estimate_eigenvalues``), and the title says so (:func:`is_estimate`).
    ValueError if not square.

    >>> eigenvalue_plot(torch.diag(torch.tensor([1.0, -2.0]))).data[0].x.tolist()
    [-2.0, 1.0]
    """
    lam = analysis.cheap_eigenvalues(m) if estimate else None
    estimated = estimate and lam is None
    if estimated:
        lam = analysis.estimate_eigenvalues(m)
        caption = f"estimate: {len(lam)} Ritz values (outermost first); exact ones follow"
    else:
        lam = analysis.eigenvalues(m) if lam is None else lam
        caption = m.eigenvalue_caption() if isinstance(m, StructuredMatrix) else None
    fig = figure("Eigenvalues in the complex plane" + _subtitle(name_of(m), caption),
                 xaxis=dict(title="Re λ", zeroline=True),
                 yaxis=dict(title="Im λ", zeroline=True, scaleanchor="x"))
    fig.add_trace(go.Scatter(
        x=lam.real.numpy(), y=lam.imag.numpy(), mode="markers", name="λ",
        marker=dict(size=6, color=color(m.family if isinstance(m, StructuredMatrix) else None)),
        hovertemplate="λ = %{x:.4g} %{y:+.4g}i<extra></extra>"))
    return _estimated(fig) if estimated else fig


def no_eigenvalues_figure(d_out: int, d_in: int) -> go.Figure:
    """Why a rectangular map shows no eigenvalues."""
    return empty_figure("Eigenvalues", f"No eigenvalues for a<br>{d_out} × {d_in} map: M v = λ v<br>"
                        "needs a square M<br>(d_out = d_in)")


# -- displacement ----------------------------------------------------------------------------
def displacement_figure(M, A="Z1", B="Z-1", estimate: bool = False) -> go.Figure:
    """The Sylvester residual ∇_{A,B}(M) = A M − M B as a heatmap (left, in cells of its
    largest entries above ``MAX_CELLS``: a lone nonzero column still shows) and its singular
    values (right, log y), with the displacement rank (``analysis.displacement_rank``) ending the
    title and marked. ``A``/``B``: operator names ("Z1", "Z-1", "Z<f>": the f-shifts Z_f) or
    matrices. ``estimate``: a residual whose values would need a dense SVD shows the top
    ``analysis.ESTIMATE_K`` estimated, and a lower bound on the rank (:func:`is_estimate`).

    >>> displacement_figure(torch.eye(3), "Z1", "Z1").layout.title.text.endswith("rank 0")
    True
    """
    R = analysis.displacement(M, A, B)
    s = analysis.cheap_singular_values(R) if estimate else None
    estimated = estimate and s is None
    if estimated:
        s = analysis.estimate_singular_values(R)
    else:
        s = analysis.singular_values(R) if s is None else s
    # an estimate undercounts (each estimated σ_i is at most the true one): a lower bound
    rank = analysis.displacement_rank(M, A, B, values=s)
    a, b = (op if isinstance(op, str) else name for op, name in ((A, "A"), (B, "B")))
    stride = stride_for(*R.shape)
    residual = f"residual {a}·M − M·{b}" + (f"<br><sub>largest |entry| of {stride} × {stride}</sub>" if stride > 1 else "")
    fig = make_subplots(rows=1, cols=2, column_widths=[0.5, 0.5], horizontal_spacing=0.14,
                        subplot_titles=(residual, f"its singular values {SIGMA_I}"))
    # the colour bar lies under the residual, clear of the right plot's tick labels
    left, right = fig.layout.xaxis.domain
    fig.add_trace(matrix_trace(R, stride, colorbar=dict(orientation="h", x=(left + right) / 2, xanchor="center",
                                                         y=-0.08, yanchor="top", len=0.9 * (right - left),
                                                         thickness=10)), row=1, col=1)
    fig.add_trace(_values_trace(s, line=dict(color=color(getattr(M, "family", None))),
                                name="σ_i(∇)", showlegend=False), row=1, col=2)
    title = f"Displacement of {name_of(M)}<br>under ({a}, {b}): displacement rank {rank}"
    if estimated:
        title = (f"Displacement of {name_of(M)}<br>under ({a}, {b}): displacement rank ≥ {rank}"
                 f"<br><sub>estimate: top {len(s)} σ (randomized SVD); exact ones follow</sub>")
    # under the title: the subplot titles (two lines when the residual is drawn in cells)
    fig.update_layout(title=dict(text=title), margin=dict(title_margin(title, below=20 + 14 * (stride > 1)), b=80))
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2)
    if s[0] > 0:
        low, log_range = _log_axis([s])
        if not estimated:
            fig.add_trace(_rank_marker(rank, low, float(s[0]), OTHER_COLOR, "∇"), row=1, col=2)
        fig.update_yaxes(range=log_range, row=1, col=2, **log_ticks(log_range))
    else:
        fig.add_annotation(text="the residual is exactly 0", x=0.78, y=0.5, xref="paper",
                           yref="paper", showarrow=False)
        fig.update_xaxes(visible=False, row=1, col=2)
        fig.update_yaxes(visible=False, row=1, col=2)
    return _estimated(fig) if estimated else fig
