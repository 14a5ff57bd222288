"""The Compare tab: how well every family approximates a matrix as the budget grows, and the
displacement-rank dial (the nearest LDR map for r = 1 … 16, with the shift operators)."""
from __future__ import annotations

import dataclasses

import gradio as gr

from surm_core import FAMILIES, session
from .errors import visible_errors

#: Every visitor's comparisons run at once: large targets queue among themselves in the session.
COMPARE = dict(concurrency_limit=None, trigger_mode="always_last")


@dataclasses.dataclass
class CompareTab:
    """The tab's controls (in the order of ``session.links.COMPARE_DEFAULTS``), the event handlers
    that compute the comparison and the dial from them (for links), and the events that show a
    new view (a link follows each)."""

    controls: list
    compare_outputs: list
    dial_outputs: list
    compare: object
    dial: object
    events: list


def build(demo: gr.Blocks, large, max_size: int = session.MAX_EXPLORE_SIZE) -> CompareTab:
    """``large``: the Explore tab's large-text checkbox (one setting for the page)."""
    with gr.Row():
        kind = gr.Dropdown(list(session.TARGET_KINDS), value="gaussian", label="target", elem_id="target")
        size = gr.Number(64, label="size n", elem_id="size")
        table_budget = gr.Number(512, label="table budget", elem_id="table_budget")
        compare_seed = gr.Number(0, label="seed", elem_id="compare_seed")
        compare_btn = gr.Button("Compare", variant="primary", elem_id="compare_btn")
    families = gr.CheckboxGroup(list(FAMILIES), value=list(FAMILIES), label="families", elem_id="families")
    curves = gr.Plot(label="approximation curves", elem_id="curves")
    compare_note = gr.Markdown(elem_id="compare_note")
    table = gr.Dataframe(headers=session.TABLE_COLUMNS, label="families at the table budget", elem_id="table")
    gr.Markdown("### The displacement rank as a dial\nThe nearest map `Σᵢ₌₁..ᵣ C(gᵢ)·S(hᵢ)` to the target: "
                "its displacement `Z₁·M − M·Z₋₁` has rank ≤ r (r = n would reach any matrix, with twice the "
                "dense map's parameters).")
    r = gr.Slider(1, session.DIAL_MAX_R, value=1, step=1, label="displacement rank r", elem_id="dial_r")
    dial_plot = gr.Plot(label="the dial", elem_id="dial")
    dial_note = gr.Markdown(elem_id="dial_note")
    operators = gr.Plot(label="the shift operators", elem_id="operators")

    controls = [kind, size, table_budget, compare_seed, families, r]

    @visible_errors
    def compare(kind, n, budget, seed, families, large):
        """Approximation curves of the chosen families for the target, the table at one budget, and
        a note (LDR, fitted iteratively, arrives last)."""
        for c in session.compare_stages(kind, n, budget, seed, families, large_text=large, max_size=max_size):
            yield c.curves, c.rows, c.note

    @visible_errors
    def dial(kind, n, seed, r, large):
        for d in session.dial_stages(kind, n, seed, r, large_text=large, max_size=max_size):
            yield d.figure, d.operators, d.note

    compare_outputs, dial_outputs = [curves, table, compare_note], [dial_plot, operators, dial_note]
    events = [
        gr.on([compare_btn.click, kind.input], compare, [kind, size, table_budget, compare_seed, families, large],
              compare_outputs, api_name="compare", **COMPARE),
        gr.on([compare_btn.click, kind.input, r.input], dial, [kind, size, compare_seed, r, large], dial_outputs,
              api_name="dial", **COMPARE),
    ]
    return CompareTab(controls, compare_outputs, dial_outputs, compare, dial, events)
