"""Fine-tuning figures: live curves of one run, and parameter / accuracy views across runs.

``events`` are the fine-tuning engine's event dicts (``step``, ``loss``, ``train_acc``,
``eval_acc`` (None when not evaluated), ``trainable_params``, ``examples_per_s``, ``elapsed_s``,
``device``; a last one with ``"event": "done"`` and ``reason``). ``runs`` are dicts with ``name``
(or ``method``) as the label, optional ``method`` (a family name, ``"full"`` or ``"head-only"``: the
colour), ``trainable_params``, optional ``status`` (how the run ended: ``"completed"``,
``"stopped"``, ...), and for ``pareto`` ``final_eval_acc`` (None: not evaluated). Each run is its
own bar and its own point, even when two share a label. A causal LM's events and runs carry
``eval_loss`` and ``perplexity`` (``final_eval_loss``) besides: pass ``task="causal-lm"``.
"""
from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import GRID_LINE, OTHER_COLOR, SERIES_COLORS, color, empty_figure, figure, log_ticks


def _check_dicts(name: str, items) -> list[dict]:
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, dict) for i in items):
        raise ValueError(f"{name} must be a list of dicts, got {type(items).__name__}")
    return list(items)


def training_curves(events, task: str = "text-classification") -> go.Figure:
    """Loss (left) and train/eval accuracy (right) against step for one run; for a causal LM
    (``task="causal-lm"``) the train and eval loss per completion token (left) and the eval
    perplexity (right, log axis).

    >>> training_curves([{"step": 1, "loss": 0.7, "train_acc": 0.5, "eval_acc": None}]).data[0].y
    (0.7,)
    """
    events = _check_dicts("events", events)
    steps = [e for e in events if e.get("step") is not None and e.get("loss") is not None]
    if not steps:
        return empty_figure("Training", "No training steps yet: press Start to fine-tune.")
    causal = task == "causal-lm"
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        ("loss per completion token", "eval perplexity (lower is better)") if causal else ("loss", "accuracy")))
    x = [e["step"] for e in steps]
    fig.add_trace(go.Scatter(x=x, y=[e["loss"] for e in steps], name="train loss",
                             mode="lines", line=dict(color=SERIES_COLORS[0])), row=1, col=1)
    if causal:
        evals = [e for e in steps if e.get("eval_loss") is not None]
        fig.add_trace(go.Scatter(x=[e["step"] for e in evals], y=[e["eval_loss"] for e in evals], name="eval loss",
                                 mode="lines+markers", line=dict(color=SERIES_COLORS[2])), row=1, col=1)
        fig.add_trace(go.Scatter(x=[e["step"] for e in evals], y=[e["perplexity"] for e in evals],
                                 name="eval perplexity", mode="lines+markers",
                                 line=dict(color=SERIES_COLORS[1])), row=1, col=2)
        fig.update_yaxes(type="log", row=1, col=2)
    else:
        train = [e for e in steps if e.get("train_acc") is not None]
        fig.add_trace(go.Scatter(x=[e["step"] for e in train], y=[e["train_acc"] for e in train],
                                 name="train accuracy", mode="lines",
                                 line=dict(color=SERIES_COLORS[1])), row=1, col=2)
        evals = [e for e in steps if e.get("eval_acc") is not None]
        fig.add_trace(go.Scatter(x=[e["step"] for e in evals], y=[e["eval_acc"] for e in evals],
                                 name="eval accuracy", mode="lines+markers",
                                 line=dict(color=SERIES_COLORS[2])), row=1, col=2)
        fig.update_yaxes(range=[0, 1.02], row=1, col=2)  # fixed, so the live plot does not jump
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

    >>> parameter_bars([{"name": "my run", "trainable_params": 4608}]).data[0].y
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
    # whole-number ticks (plotly labels a log axis's minor ticks "4 3 2"), room above the labels
    counts = [_params(r) for r in runs] + list((references or {}).values())
    log_range = [math.log10(min(counts)) - 0.3, math.log10(max(counts)) + 0.3]
    fig.update_yaxes(range=log_range, **log_ticks(log_range))
    for name, count in (references or {}).items():
        fig.add_hline(y=count, line=dict(color=OTHER_COLOR, dash="dash", width=1))
        # annotations on a log axis are placed in log10 units (shapes are not)
        fig.add_annotation(text=f"{name}: {count:,}", x=0, xref="x domain", xanchor="left",
                           y=math.log10(count), yanchor="bottom", showarrow=False)
    return fig


#: What the Pareto view plots per task: the summary key, the axis title, whether higher is better.
PARETO_METRICS = {
    "text-classification": ("final_eval_acc", "eval accuracy (higher is better)", True),
    "image-classification": ("final_eval_acc", "eval accuracy (higher is better)", True),
    "causal-lm": ("final_eval_loss", "eval loss (lower is better)", False),
}


def pareto(runs, task: str = "text-classification") -> go.Figure:
    """Final eval accuracy (a causal LM's: final eval loss, lower is better) against trainable
    parameters (log x) for every evaluated run, with the Pareto front (no other run is both
    smaller and better) as a step line. A run that did not complete (stopped, diverged) is an
    open marker, its status in its hover text.

    >>> pareto([{"name": "a", "trainable_params": 10, "final_eval_acc": 0.8}]).data[0].x
    (10,)
    """
    if task not in PARETO_METRICS:
        raise ValueError(f"task must be one of {', '.join(PARETO_METRICS)}, got {task!r}")
    key, axis, higher = PARETO_METRICS[task]
    sign = 1 if higher else -1
    what = "Accuracy" if higher else "Eval loss"
    runs = [r for r in _check_dicts("runs", runs) if r.get(key) is not None]
    if not runs:
        return empty_figure(f"{what} vs parameters", "No evaluated runs yet.")
    runs.sort(key=lambda r: (_params(r), -sign * r[key]))
    fig = figure(f"{what} vs trainable parameters (Pareto view)",
                 xaxis=dict(type="log", title="trainable parameters"),
                 yaxis=dict(title=axis, **({"range": [0, 1.05]} if higher else {"rangemode": "tozero"})))
    status = [r.get("status", "completed") for r in runs]
    fig.add_trace(go.Scatter(x=[_params(r) for r in runs], y=[r[key] for r in runs],
                             mode="markers+text", text=[_label(r) for r in runs], cliponaxis=False,
                             textposition="top center", name="runs", showlegend=False,
                             customdata=status,
                             hovertemplate="%{text} (%{customdata}): %{y:.3f} at %{x:,} parameters<extra></extra>",
                             marker=dict(size=11, color=[color(r.get("method")) for r in runs],
                                         symbol=["circle" if s == "completed" else "circle-open" for s in status],
                                         line=dict(width=2))))
    front, best = [], float("-inf")
    for r in runs:  # ascending parameters: a run is on the front if it beats every smaller one
        if sign * r[key] > best:
            front.append(r)
            best = sign * r[key]
    fig.add_trace(go.Scatter(x=[_params(r) for r in front], y=[r[key] for r in front],
                             mode="lines", line=dict(shape="hv", **GRID_LINE), name="Pareto front",
                             hoverinfo="skip"))
    return fig
