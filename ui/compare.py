"""The Compare tab: how well every family approximates a matrix as the budget grows."""
from __future__ import annotations

import gradio as gr

from surm_core import session
from .errors import visible_errors


@visible_errors
def compare(kind, n, budget, seed):
    """Approximation curves of every family for the target, the table at one budget, and a note
    (LDR, fitted iteratively, arrives last)."""
    for r in session.compare_stages(kind, n, budget, seed):
        yield r.curves, r.rows, r.note


def build(demo: gr.Blocks) -> None:
    with gr.Row():
        kind = gr.Dropdown(list(session.TARGET_KINDS), value="gaussian", label="target")
        size = gr.Number(64, precision=0, label="size n")
        table_budget = gr.Number(512, precision=0, label="table budget")
        compare_seed = gr.Number(0, precision=0, label="seed")
        compare_btn = gr.Button("Compare", variant="primary")
    curves = gr.Plot(label="approximation curves", elem_id="curves")
    compare_note = gr.Markdown(label="note", elem_id="compare_note")
    table = gr.Dataframe(headers=session.TABLE_COLUMNS, label="families at the table budget", elem_id="table")
    # Fitting every family at every budget takes seconds: its own group keeps exploring quick.
    gr.on([compare_btn.click, kind.change], compare, [kind, size, table_budget, compare_seed],
          [curves, table, compare_note], api_name="compare", concurrency_id="compare", concurrency_limit=1,
          trigger_mode="always_last")
