"""The Explore tab: one member of a family at a budget, its heatmap beside its parameters, its
spectra, displacement and explanation.

The budget is a number box (typed, Enter or Tab) and a slider over log(budget) from the family's
smallest to the dense map's count (dragging, arrow keys). Neither rejects a value: the session
moves a budget into range and says so. A family switch starts at its smallest configuration.
"""
from __future__ import annotations

import dataclasses

import gradio as gr

from surm_core import FAMILIES, session
from .errors import visible_errors

#: Every visitor's explorations run at once: maps above ``session.QUICK_CELLS`` queue among
#: themselves inside the session (``session.LARGE_AT_ONCE``), so a small one never waits.
EXPLORE = dict(concurrency_limit=None, trigger_mode="always_last")


@dataclasses.dataclass
class ExploreTab:
    """The tab's controls (in the order of ``session.links.EXPLORE_DEFAULTS``), ``show``: the event
    handler that computes the view of ``inputs`` into ``outputs`` (for links), and the events
    that show a new view (a link follows each)."""

    controls: list
    inputs: list
    outputs: list
    show: object
    events: list


def budget_box(family, d_out, d_in, budget, max_size):
    """The budget field at ``budget``, its range said below it."""
    low, high = session.budget_range(family, d_out, d_in, max_size)
    return gr.update(value=budget, info=f"{family} needs at least {low:,}; the dense map has {high:,}")


def build(demo: gr.Blocks, max_size: int = session.MAX_EXPLORE_SIZE) -> ExploreTab:
    with gr.Row():
        with gr.Column(scale=1, min_width=250):
            family = gr.Dropdown(list(FAMILIES), value="circulant", label="family", elem_id="family")
            # numbers without Gradio's precision: the session says what is wrong with 64.5, 'abc' or
            # None (precision=0 answers "Could not preprocess input component" through the API)
            with gr.Row():
                d_out = gr.Number(64, label="d_out", min_width=80, elem_id="d_out")
                d_in = gr.Number(64, label="d_in", min_width=80, elem_id="d_in")
            budget = gr.Number(64, label="budget (parameters)", elem_id="budget",
                               info="circulant needs at least 64; the dense map has 4,096")
            slider = gr.Slider(0, session.SLIDER_STEPS, value=0, step=1, label="budget, log scale", show_label=False,
                               container=False,
                               elem_id="budget_slider", elem_classes=["surm-log-slider"])
            budget_note = gr.Markdown(elem_id="explore_note")
            with gr.Row():
                op_a = gr.Dropdown(list(session.OPERATORS), value="Z1", label="A", min_width=90, elem_id="op_a")
                op_b = gr.Dropdown(list(session.OPERATORS), value="Z-1", label="B", min_width=90, elem_id="op_b")
            with gr.Row(equal_height=True):
                seed = gr.Number(0, label="seed", min_width=90, elem_id="seed")
                large = gr.Checkbox(False, label="large text", min_width=90, elem_id="large")
        with gr.Column(scale=2, min_width=320):
            heatmap = gr.Plot(label="ΔW", elem_id="heatmap")
        with gr.Column(scale=2, min_width=320):
            parameters = gr.Plot(label="its parameters", elem_id="parameters")
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            spectrum = gr.Plot(label="singular values", elem_id="spectrum")
        with gr.Column(scale=2, min_width=320):
            eigen = gr.Plot(label="eigenvalues", elem_id="eigenvalues")
        with gr.Column(scale=3, min_width=420):
            displacement = gr.Plot(label="displacement A·M − M·B", elem_id="displacement")
    with gr.Row():
        with gr.Column(scale=3):
            explanation = gr.Markdown(elem_id="explanation")
        with gr.Column(scale=1, min_width=250):
            solved = gr.JSON(label="solved configuration", elem_id="solved", open=True)
    shown = gr.State(None)  # the settings on screen: the same ones again (Enter, then Tab) are skipped

    controls = [family, d_out, d_in, budget, seed, op_a, op_b, large]
    figures = [solved, heatmap, spectrum, eigen, displacement, explanation]
    outputs = [budget, slider, budget_note, parameters, *figures, shown]

    def refused(error: ValueError):
        """Settings the explorer cannot show: the message, and the last view stays (no panel in error)."""
        gr.Warning(str(error))
        return (gr.skip(),) * 2 + (f"**Not shown:** {error}",) + (gr.skip(),) * (len(outputs) - 3)

    def show(family, d_out, d_in, budget, seed, A, B, large, shown_now):
        """The view of the controls' settings, in stages; the budget moved into range (and said so)."""
        key = (family, d_out, d_in, budget, seed, A, B, large)
        if key == shown_now:
            yield (gr.skip(),) * len(outputs)
            return
        try:
            yield from _show(key)
        except ValueError as e:
            yield refused(e)

    def _show(key):
        family, d_out, d_in, budget, seed, A, B, large = key
        sent = None
        for r in session.explore_stages(family, d_out, d_in, budget, seed, A, B, clamp=True, large_text=large,
                                        max_size=max_size):
            shown_budget = r.config["budget"]
            low, high = r.config["smallest_budget"], r.config["dense_params"]
            view = (r.parameters, r.config, r.heatmap, r.spectrum, r.eigenvalues, r.displacement, r.explanation)
            if sent is None:  # the first stage: the controls follow the shown configuration
                yield (budget_box(family, d_out, d_in, shown_budget, max_size),
                       session.slider_position(shown_budget, low, high), r.note, *view,
                       key[:3] + (shown_budget,) + key[4:])
            else:  # a later stage resends only new figures
                yield (gr.skip(),) * 3 + tuple(gr.skip() if new is old else new for new, old in zip(view, sent)) + (
                    gr.skip(),)
            sent = view

    def show_new_family(family, d_out, d_in, budget, *rest):
        yield from show(family, d_out, d_in, None, *rest)

    def show_slider(position, family, d_out, d_in, budget, *rest):
        try:
            low, high = session.budget_range(family, d_out, d_in, max_size)
        except ValueError as e:
            yield refused(e)
            return
        yield from show(family, d_out, d_in, session.slider_budget(position, low, high), *rest)

    @visible_errors
    def explore_api(family, d_out, d_in, budget, seed, A, B):
        """The solved configuration, heatmap, spectrum, eigenvalues, displacement and explanation
        (a budget outside the family's range is an error)."""
        r = session.explore(family, d_out, d_in, budget, seed, A, B, max_size=max_size)
        return r.config, r.heatmap, r.spectrum, r.eigenvalues, r.displacement, r.explanation

    inputs = [*controls, shown]
    private = dict(api_visibility="private", **EXPLORE)
    events = [
        gr.on([budget.submit, budget.blur, d_out.submit, d_out.blur, d_in.submit, d_in.blur, seed.submit, seed.blur,
               op_a.input, op_b.input, large.input], show, inputs, outputs, **private),
        gr.on([family.input], show_new_family, inputs, outputs, **private),
        gr.on([slider.input], show_slider, [slider, *inputs], outputs, **private),
    ]
    # the API's /explore: the page never fires it (the button is hidden)
    api = gr.Button(visible=False)
    api.click(explore_api, controls[:7], figures[:6], api_name="explore", concurrency_limit=None)
    return ExploreTab(controls, inputs, outputs, show, events)
