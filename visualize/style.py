"""The explorer's look, defined once: template, colours, diverging scale, empty figures."""
from __future__ import annotations

import math

import plotly.graph_objects as go
import plotly.io as pio

from surm_core.families import FAMILIES

#: The look of every figure, made plotly's default on import: plotly_white with our titles and
#: margins, merged once here (a "plotly_white+surm" default is merged again, ~50 ms, for every
#: figure built; a figure that names its template pays ~20 ms of validation). Titles are
#: left-aligned at a size that fits a third of a 1280-pixel-wide page (a projector); a figure
#: with more title lines takes a larger top margin (``title_margin``).
TEMPLATE = "surm"
pio.templates[TEMPLATE] = pio.templates.merge_templates(pio.templates["plotly_white"], go.layout.Template(layout=dict(
    title=dict(x=0.01, xanchor="left", font=dict(size=15)), margin=dict(l=60, r=20, t=72, b=50))))
pio.templates.default = TEMPLATE

#: Signed entries: blue negative, white zero, red positive (used with ``zmid=0``).
DIVERGING = "RdBu_r"

#: Colours of the fine-tuning baselines; each family's is its class's ``color``.
BASELINE_COLORS = {"full": "#4d4d4d", "head-only": "#8c564b"}
OTHER_COLOR = "#7f7f7f"
#: Colours of a training run's curves: train loss, train accuracy, eval accuracy.
SERIES_COLORS = ("#1f77b4", "#ff7f0e", "#d62728")

#: Thin lines drawn over heatmaps at tile/block edges.
GRID_LINE = dict(color="rgba(0, 0, 0, 0.35)", width=1)


def color(name: str | None) -> str:
    """The colour of a family or baseline name, the same in every figure; grey for anything else."""
    family = FAMILIES.get(name) if isinstance(name, str) else None
    return (family.color if family else BASELINE_COLORS.get(name)) or OTHER_COLOR


def title_margin(title: str, below: int = 0) -> dict:
    """A top margin that holds every line of ``title`` (plotly centres a title in the margin), and
    ``below`` more pixels under it (tick labels on top of a plot, subplot titles)."""
    return dict(t=72 + 2 * (20 * title.count("<br>") + below))


def figure(title: str, **layout) -> go.Figure:
    """An empty figure (in the default template, ``TEMPLATE``) with ``title``, its margin fitted."""
    layout.setdefault("margin", title_margin(title))
    return go.Figure(layout=dict(title=dict(text=title), **layout))


#: Font sizes of ``enlarge``: for a projector at the back of a room (plotly's default text is 12
#: pixels, our titles 15); text with a size of its own (subplot titles, notes) grows by ``LARGE_SCALE``.
LARGE_FONT, LARGE_TITLE = 16, 19
LARGE_SCALE = LARGE_TITLE / 15


def enlarge(fig: go.Figure) -> go.Figure:
    """``fig`` with larger text everywhere (a projector), and its top margin grown to hold the
    larger title lines; returns it."""
    for note in fig.layout.annotations:
        note.font.size = round((note.font.size or LARGE_FONT / LARGE_SCALE) * LARGE_SCALE)
    top = fig.layout.margin.t
    if top is not None:
        fig.layout.margin.t = round(top * LARGE_SCALE)
    return fig.update_layout(font=dict(size=LARGE_FONT), title=dict(font=dict(size=LARGE_TITLE)))


def empty_figure(title: str, hint: str) -> go.Figure:
    """A figure with no data and ``hint`` written in the middle (e.g. "press Start")."""
    fig = figure(title)
    fig.add_annotation(text=hint, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=15, color=OTHER_COLOR))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def log_ticks(log_range: list[float]) -> dict:
    """Tick labels of a log axis over ``log_range`` (log10 units), each one a whole number: powers
    of ten (every few decades) when it spans two decades or more, else 1-2-5 steps (plotly would label the minor
    ticks with a bare leading digit, "9 8 7 … 2", which reads as nonsense below 1).

    >>> log_ticks([-0.2, 0.5])["ticktext"]
    ['1', '2']
    >>> log_ticks([2.5, 3.5])["ticktext"]
    ['500', '1,000', '2,000']
    """
    low, high = log_range
    if high - low >= 2:  # a power of ten every few decades: at most ~7 labels
        return dict(dtick=math.ceil((high - low) / 7), exponentformat="power")
    values = [m * 10.0 ** e for e in range(math.floor(low), math.ceil(high) + 1) for m in (1, 2, 5)]
    shown = [v for v in values if low <= math.log10(v) <= high]
    return dict(tickvals=shown, ticktext=[f"{v:,.0f}" if v >= 1 else f"{v:g}" for v in shown])
