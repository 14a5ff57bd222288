"""The structure search's figure: every trial's accuracy against its trainable parameters, the
Pareto front of the complete ones, pruned trials faded at the accuracy where they stopped.

``trials`` are dicts with ``number``, ``state`` (``"complete"``, ``"pruned"``, ``"running"``,
``"failed"``, ``"waiting"``), ``method``, ``label`` (the configuration, for the hover),
``trainable_params`` (None until known) and ``value`` (the objective — accuracy, or a causal LM's
eval loss —: the final one, or the last evaluation of a pruned or running trial; None before any).
"""
from __future__ import annotations

import plotly.graph_objects as go

from .style import GRID_LINE, color, empty_figure, figure, title_margin

#: How visible each state's points are: pruned and running trials are not results yet.
OPACITY = {"complete": 1.0, "running": 0.45, "pruned": 0.25}


def search_front(trials, objective: str = "accuracy") -> go.Figure:
    """The objective (y: ``"accuracy"``, higher is better, or ``"eval loss"``, lower is better)
    against trainable parameters (log x) per trial, coloured by family, with the front as a step line.

    >>> search_front([{"number": 0, "state": "complete", "method": "head-only", "label": "head-only",
    ...                "trainable_params": 11141, "value": 0.95}]).data[0].x
    (11141,)
    """
    if objective not in ("accuracy", "eval loss"):
        raise ValueError(f"objective must be 'accuracy' or 'eval loss', got {objective!r}")
    sign = 1 if objective == "accuracy" else -1
    what = objective[0].upper() + objective[1:]
    shown = [t for t in trials if t["state"] in OPACITY and t.get("value") is not None and t.get("trainable_params")]
    if not shown:
        return empty_figure(f"{what} vs trainable parameters", "No trial has been evaluated yet.")
    title = f"{what} vs trainable parameters<br><sub>faded: pruned (where it stopped) or still running</sub>"
    # the legend below the plot: beside it, it would take a fifth of the narrow column
    fig = figure(title, xaxis=dict(type="log", title="trainable parameters"),
                 yaxis=dict(title="eval accuracy (higher is better)" if sign > 0 else "eval loss (lower is better)"),
                 legend=dict(orientation="h", yanchor="top", y=-0.22), margin=dict(**title_margin(title), b=100))
    for method in dict.fromkeys(t["method"] for t in shown):
        mine = [t for t in shown if t["method"] == method]
        fig.add_trace(go.Scatter(
            x=[t["trainable_params"] for t in mine], y=[t["value"] for t in mine], mode="markers", name=method,
            text=[f"trial {t['number']} ({t['state']}): {t['label']}" for t in mine], hoverinfo="text+x+y",
            marker=dict(size=11, color=color(method), opacity=[OPACITY[t["state"]] for t in mine],
                        line=dict(width=[0 if t["state"] == "complete" else 1 for t in mine], color=color(method)))))
    complete = sorted((t for t in shown if t["state"] == "complete"), key=lambda t: (t["trainable_params"], -sign * t["value"]))
    front, best = [], float("-inf")
    for t in complete:
        if sign * t["value"] > best:
            front.append(t)
            best = sign * t["value"]
    if front:
        fig.add_trace(go.Scatter(x=[t["trainable_params"] for t in front], y=[t["value"] for t in front],
                                 mode="lines", line=dict(shape="hv", **GRID_LINE), name="Pareto front", hoverinfo="skip"))
    return fig
