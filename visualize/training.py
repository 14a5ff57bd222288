"""Fine-tuning figures: live curves of one run, and parameter / accuracy views across runs.

``events`` are the fine-tuning engine's event dicts (``step``, ``loss``, ``train_acc``,
``eval_acc`` (None when not evaluated), ``trainable_params``, ``examples_per_s``, ``elapsed_s``,
``device``; a last one with ``"event": "done"`` and ``reason``). ``runs`` are dicts with ``name``
(or ``method``) as the label, optional ``method`` (a family name, ``"full"`` or ``"head-only"``: the
colour), ``trainable_params``, optional ``status`` (how the run ended: ``"completed"``,
``"stopped"``, ...), and for ``pareto`` ``final_eval_acc`` (None: not evaluated). Each run is its
own bar and its own point, even when two share a label.
"""
from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import GRID_LINE, OTHER_COLOR, color, empty_figure, figure


def _check_dicts(name: str, items) -> list[dict]:
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, dict) for i in items):
        raise ValueError(f"{name} must be a list of dicts, got {type(items).__name__}")
    return list(items)


def training_curves(events) -> go.Figure:
    """Loss (left) and train/eval accuracy (right) against step for one run.

    >>> training_curves([{"step": 1, "loss": 0.7, "train_acc": 0.5, "eval_acc": None}]).data[0].y
    (0.7,)
    """
    events = _check_dicts("events", events)
    steps = [e for e in events if e.get("step") is not None and e.get("loss") is not None]
    if not steps:
        return empty_figure("Training", "No training steps yet: press Start to fine-tune.")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    x = [e["step"] for e in steps]
    fig.add_trace(go.Scatter(x=x, y=[e["loss"] for e in steps], name="train loss",
                             mode="lines", line=dict(color=color("lowrank"))), row=1, col=1)
    train = [e for e in steps if e.get("train_acc") is not None]
    fig.add_trace(go.Scatter(x=[e["step"] for e in train], y=[e["train_acc"] for e in train],
                             name="train accuracy", mode="lines",
                             line=dict(color=color("toeplitz"))), row=1, col=2)
    evals = [e for e in steps if e.get("eval_acc") is not None]
    fig.add_trace(go.Scatter(x=[e["step"] for e in evals], y=[e["eval_acc"] for e in evals],
                             name="eval accuracy", mode="lines+markers",
                             line=dict(color=color("circulant"))), row=1, col=2)
    last = steps[-1]
    title = f"Training: step {last['step']}"
    if last.get("examples_per_s") is not None:
        title += f", {last['examples_per_s']:.0f} examples/s"
    if last.get("device"):
        title += f" on {last['device']}"
    done = [e for e in events if e.get("event") == "done"]
    if done:
        title += f" (done: {done[-1].get('reason', 'finished')})"
    fig.update_layout(title=dict(text=title))
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)  # fixed, so the live plot does not jump
    return fig


def _label(run: dict) -> str:
    label = run.get("name") or run.get("method")
    if not label:
        raise ValueError(f"a run needs a 'name' or a 'method', got keys {sorted(run)}")
    return str(label)


def _params(run: dict) -> int:
    n = run.get("trainable_params")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"run {_label(run)!r} needs a positive integer 'trainable_params', got {n!r}")
    return n


def parameter_bars(runs, references: dict[str, int] | None = None) -> go.Figure:
    """Trainable parameters of each run (bars, log axis), with ``references`` drawn as dashed
    lines, e.g. ``{"LoRA r=8": 147456, "full fine-tuning": 22713218}`` for the same model.

    >>> parameter_bars([{"name": "circulant", "trainable_params": 4608}]).data[0].y
    (4608,)
    """
    runs = _check_dicts("runs", runs)
    if not runs:
        return empty_figure("Trainable parameters", "No runs yet: finished runs appear here.")
    fig = figure("Trainable parameters per run", yaxis=dict(type="log", title="trainable parameters"),
                 showlegend=False)
    # bars sit at positions 0, 1, ... labelled by run: runs that share a label stay apart
    positions = list(range(len(runs)))
    fig.add_trace(go.Bar(x=positions, y=[_params(r) for r in runs],
                         marker_color=[color(r.get("method")) for r in runs],
                         hovertext=[_label(r) for r in runs], hovertemplate="%{hovertext}: %{y:,}<extra></extra>",
                         texttemplate="%{y:.3s}", textposition="outside"))
    fig.update_xaxes(tickmode="array", tickvals=positions, ticktext=[_label(r) for r in runs])
    for name, count in (references or {}).items():
        fig.add_hline(y=count, line=dict(color=OTHER_COLOR, dash="dash", width=1))
        # annotations on a log axis are placed in log10 units (shapes are not)
        fig.add_annotation(text=f"{name}: {count:,}", x=0, xref="x domain", xanchor="left",
                           y=math.log10(count), yanchor="bottom", showarrow=False)
    return fig


def pareto(runs) -> go.Figure:
    """Final eval accuracy against trainable parameters (log x) for every evaluated run, with the
    Pareto front (no other run is both smaller and more accurate) as a step line. A run that did
    not complete (stopped, diverged) is an open marker, its status in its hover text.

    >>> pareto([{"name": "a", "trainable_params": 10, "final_eval_acc": 0.8}]).data[0].x
    (10,)
    """
    runs = [r for r in _check_dicts("runs", runs) if r.get("final_eval_acc") is not None]
    if not runs:
        return empty_figure("Accuracy vs parameters", "No evaluated runs yet.")
    runs.sort(key=lambda r: (_params(r), -r["final_eval_acc"]))
    fig = figure("Accuracy vs trainable parameters (Pareto view)",
                 xaxis=dict(type="log", title="trainable parameters"),
                 yaxis=dict(title="final eval accuracy", range=[0, 1.05]))
    status = [r.get("status", "completed") for r in runs]
    fig.add_trace(go.Scatter(x=[_params(r) for r in runs], y=[r["final_eval_acc"] for r in runs],
                             mode="markers+text", text=[_label(r) for r in runs],
                             textposition="top center", name="runs", showlegend=False,
                             customdata=status,
                             hovertemplate="%{text} (%{customdata}): %{y:.3f} at %{x:,} parameters<extra></extra>",
                             marker=dict(size=11, color=[color(r.get("method")) for r in runs],
                                         symbol=["circle" if s == "completed" else "circle-open" for s in status],
                                         line=dict(width=2))))
    front, best = [], float("-inf")
    for r in runs:  # ascending parameters: a run is on the front if it beats every smaller one
        if r["final_eval_acc"] > best:
            front.append(r)
            best = r["final_eval_acc"]
    fig.add_trace(go.Scatter(x=[_params(r) for r in front], y=[r["final_eval_acc"] for r in front],
                             mode="lines", line=dict(shape="hv", **GRID_LINE), name="Pareto front",
                             hoverinfo="skip"))
    return fig
