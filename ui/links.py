"""The page's address is its state: the shown view's settings live in the URL's query
(``surm_core.session.links``), so a link opens the same view, back and forward move between
views, and the lecture presets are plain links.

How: after each view is computed, its canonical query goes into a hidden text box, and a
script writes it into the address bar (``history.pushState``; the first one after opening the
page replaces instead, so a hand-typed link is tidied, not doubled). Opening the page, a
``popstate`` (back/forward) and a click on a preset all press a hidden button that reads
``location.search``, sets every control and recomputes the view, without reloading the page.
"""
from __future__ import annotations

import gradio as gr

from surm_core import session
from .compare import CompareTab
from .explore import ExploreTab

#: Goes into the page's <head> (``launch(head=…)``).
HEAD = """<script>
window.surmLink = (() => {
  let first = true;  // the first view after opening the page replaces the entry it was opened with
  function write(query) {
    if (!query) return;
    const url = "?" + query;
    if (url !== location.search) {
      (first ? history.replaceState : history.pushState).call(history, null, "", url);
    }
    first = false;
  }
  function restore() { document.getElementById("url_restore").click(); }
  addEventListener("popstate", restore);
  document.addEventListener("click", (event) => {  // a preset link: no reload, one history entry
    const a = event.target.closest("a[href^='?tab=']");
    if (!a || event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    history.pushState(null, "", a.getAttribute("href"));
    restore();
  });
  async function copy() {
    const button = document.getElementById("copy_link");
    try {
      await navigator.clipboard.writeText(location.href);  // needs https or localhost
      button.textContent = "Link copied ✓";
      setTimeout(() => { button.textContent = "Copy link"; }, 2000);
    } catch (e) {
      window.prompt("Copy this link:", location.href);
    }
  }
  function large(on) { document.body.classList.toggle("surm-large", Boolean(on)); }
  return {write, restore, copy, large};
})();
</script>"""

#: Page styles (``launch(css=…)``): hidden helpers, the budget slider without its own number box
#: (the budget field above it is the number), and the large-text option.
CSS = """
.surm-hidden { display: none !important; }
.surm-log-slider .head, .surm-log-slider .min_value, .surm-log-slider .max_value { display: none !important; }
body.surm-large .gradio-container {
  --text-xs: 14px; --text-sm: 16px; --text-md: 19px; --text-lg: 21px; --text-xl: 24px;
  --block-label-text-size: 16px; --block-info-text-size: 15px; --block-title-text-size: 18px;
  --input-text-size: 19px; --prose-text-size: 19px; --checkbox-label-text-size: 17px;
}
"""


def bar() -> None:
    """The copy-link button and the lecture presets, above the tabs."""
    with gr.Row(equal_height=True):
        with gr.Column(scale=5):
            with gr.Accordion("Lecture presets: a view per step, each a link", open=False, elem_id="presets"):
                gr.Markdown(session.presets_markdown())
        with gr.Column(scale=1, min_width=140):
            copy = gr.Button("Copy link", size="sm", elem_id="copy_link")
    copy.click(None, None, None, js="() => surmLink.copy()")


def wire(demo: gr.Blocks, tabs: gr.Tabs, tab_items: dict, explore: ExploreTab, compare: CompareTab) -> None:
    """Connect the URL with the controls of both tabs (``tab_items``: tab id -> ``gr.Tab``)."""
    query = gr.Textbox(elem_id="page_link", elem_classes=["surm-hidden"], container=False)
    restore = gr.Button(elem_id="url_restore", elem_classes=["surm-hidden"])
    tab = gr.State("explore")
    settings = [tab, *explore.controls, *compare.controls]
    large = explore.controls[-1]

    def link(tab, family, d_out, d_in, budget, seed, A, B, large, target, size, table_budget, compare_seed,
             families, r):
        ex = dict(family=family, d_out=d_out, d_in=d_in, budget=budget, seed=seed, A=A, B=B, large=large)
        co = dict(target=target, size=size, table_budget=table_budget, compare_seed=compare_seed,
                  families=families, r=r)
        return session.query_string(session.LinkView(tab, ex, co))

    def apply(search):
        view = session.parse_query(search or "")
        if view.notes:
            gr.Warning("This link: " + "; ".join(view.notes) + ".")
        if view.tab is None:  # a bare address: a tab chosen while the page was opening stays chosen
            return (gr.skip(), gr.skip(), *view.explore.values(), *view.compare.values())
        return (gr.Tabs(selected=view.tab), view.tab, *view.explore.values(), *view.compare.values())

    def compare_if_shown(tab, *args):
        if tab == "compare":
            yield from compare.compare(*args)
        else:
            yield (gr.skip(),) * len(compare.compare_outputs)

    def dial_if_shown(tab, *args):
        if tab == "compare":
            yield from compare.dial(*args)
        else:
            yield (gr.skip(),) * len(compare.dial_outputs)

    kind, size, table_budget, compare_seed, families, r = compare.controls
    # always_last: a link followed while the page's own opening is still being applied (the default
    # view is on screen at once, so a hand or a test can be that quick) runs after it, not never
    opened = gr.on([demo.load, restore.click], apply, query, [tabs, *settings], js="() => [location.search]",
                   api_visibility="private", queue=False, trigger_mode="always_last")
    shown = [
        opened.then(explore.show, explore.inputs, explore.outputs, api_visibility="private"),
        opened.then(compare_if_shown, [tab, kind, size, table_budget, compare_seed, families, large],
                    compare.compare_outputs, api_visibility="private"),
        opened.then(dial_if_shown, [tab, kind, size, compare_seed, r, large], compare.dial_outputs,
                    api_visibility="private"),
        *explore.events, *compare.events,
        *(item.select(lambda name=name: name, None, tab, api_visibility="private", queue=False)
          for name, item in tab_items.items()),
    ]
    # after a view is complete the controls hold what it shows (a budget moved into range, too)
    for event in shown:
        event.then(link, settings, query, api_visibility="private", queue=False)
    query.change(None, query, None, js="(q) => surmLink.write(q)")
    large.change(None, large, None, js="(on) => surmLink.large(on)")
