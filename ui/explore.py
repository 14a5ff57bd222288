"""The Explore tab: one member of a family at a budget, its heatmap, spectra, displacement and
explanation."""
from __future__ import annotations

import gradio as gr

from surm_core import FAMILIES, session
from .errors import visible_errors

EXPLORE = dict(concurrency_id="explore", concurrency_limit=2, trigger_mode="always_last")


@visible_errors
def explore(family, d_out, d_in, budget, seed, A, B):
    """The solved configuration, heatmap, spectrum, eigenvalues, displacement and explanation
    (for a large map the heatmap first, the spectral plots when computed)."""
    sent = None
    for r in session.explore_stages(family, d_out, d_in, budget, seed, A, B):
        outputs = (r.config, r.heatmap, r.spectrum, r.eigenvalues, r.displacement, r.explanation)
        # an intermediate stage resends only new figures; the last one sends all (an API caller
        # gets the last yield as the result)
        if sent is None or r.complete:
            yield outputs
        else:
            yield tuple(gr.skip() if new is old else new for new, old in zip(outputs, sent))
        sent = outputs


@visible_errors
def explore_new_layout(family, d_out, d_in, budget, seed, A, B):
    """A new family or size: move the budget slider into the new range first, then explore."""
    low, high = session.budget_range(family, d_out, d_in)
    budget = session.clamp_budget(family, d_out, d_in, budget)
    slider = gr.update(minimum=low, maximum=high, value=budget,
                       info=f"{family} needs at least {low:,}; the dense map has {d_out * d_in:,}")
    for outputs in explore(family, d_out, d_in, budget, seed, A, B):
        yield (slider, *outputs)
        slider = gr.skip()


def build(demo: gr.Blocks) -> None:
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            family = gr.Dropdown(list(FAMILIES), value="circulant", label="family", elem_id="family")
            with gr.Row():
                d_out = gr.Number(64, precision=0, label="d_out", min_width=80, elem_id="d_out")
                d_in = gr.Number(64, precision=0, label="d_in", min_width=80, elem_id="d_in")
            # Wide bounds for API callers; a page gets its family's range on load.
            budget = gr.Slider(1, session.MAX_EXPLORE_SIZE ** 2, value=64, step=1, precision=0,
                               label="budget (parameters)", elem_id="budget")
            seed = gr.Number(0, precision=0, label="seed", elem_id="seed")
            with gr.Row():
                op_a = gr.Dropdown(list(session.OPERATORS), value="Z1", label="A", min_width=80)
                op_b = gr.Dropdown(list(session.OPERATORS), value="Z-1", label="B", min_width=80)
        with gr.Column(scale=2):
            heatmap = gr.Plot(label="heatmap", elem_id="heatmap")
        with gr.Column(scale=2):
            spectrum = gr.Plot(label="singular values", elem_id="spectrum")
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            solved = gr.JSON(label="solved configuration", elem_id="solved", open=True)
        with gr.Column(scale=2):
            eigen = gr.Plot(label="eigenvalues", elem_id="eigenvalues")
        with gr.Column(scale=3):
            displacement = gr.Plot(label="displacement A·M − M·B", elem_id="displacement")
    explanation = gr.Markdown(label="explanation", elem_id="explanation")

    inputs = [family, d_out, d_in, budget, seed, op_a, op_b]
    outputs = [solved, heatmap, spectrum, eigen, displacement, explanation]
    # The slider's release also follows a typed budget once the field loses focus (Tab).
    gr.on([budget.release, seed.submit, op_a.change, op_b.change], explore, inputs, outputs,
          api_name="explore", **EXPLORE)
    gr.on([demo.load, family.change, d_out.submit, d_in.submit], explore_new_layout, inputs,
          [budget, *outputs], api_visibility="private", **EXPLORE)
