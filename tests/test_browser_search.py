"""The Search tab in a real browser (Debian's headless Chromium, Playwright): a 2-trial search of
a tiny model fills the trials table and the front as trials finish while the Explore tab keeps
answering, "Train this one" opens the Fine-tune tab with the chosen trial's settings, and so does
an uploaded ``best.json``. Its screenshot goes to ``test-artifacts/``; the README's
(``docs/screenshots/search.png``) shows a longer search of the same tiny model (12 trials of 9
steps, the page 1280 pixels wide), which would not suit CI."""
from __future__ import annotations

import json

from surm_core.session import METHODS
from test_browser import CHROMIUM, choose, page, plot, screenshot, url, wait_plot  # noqa: F401 (fixtures)
from test_finetune import make_tiny_model, write_topics_csv

pytestmark = __import__("test_browser").pytestmark
#: The search runs in its own process: a few minutes at most, even on a busy machine.
SEARCH_MS = 600_000


def method_label(method: str) -> str:
    return dict((value, label) for label, value in METHODS)[method]


def test_a_live_search_and_train_this_one(page, tmp_path, monkeypatch):  # noqa: F811
    # The search process inherits this; one thread, as conftest.one_thread explains (the served
    # app and the browser use the other core).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    model, dataset = make_tiny_model(tmp_path / "model"), write_topics_csv(tmp_path / "topics.csv")
    page.get_by_role("tab", name="Search").click()
    page.locator("#search_model textarea, #search_model input").first.fill(model)
    page.locator("#search_dataset input[type=file]").set_input_files(dataset)
    page.locator("#search_families").get_by_label("head-only").check()
    for elem_id, value in (("search_max_budget", "128"), ("search_trials", "2"), ("search_steps", "3"),
                           ("search_max_length", "16")):
        page.locator(f"#{elem_id} input").fill(value)
    page.get_by_role("button", name="Start search").click()

    # While the search's process starts (it imports torch and loads the model first), exploring answers.
    page.wait_for_function("document.querySelector('#search_status').innerText.trim() !== ''")
    page.get_by_role("tab", name="Explore").click()
    choose(page, "family", "monarch")
    wait_plot(page, "heatmap", "p.layout.title.text.includes('monarch')")
    page.get_by_role("tab", name="Search").click()

    # The table and the front grow as trials finish, then the status says the search is done.
    page.wait_for_function("document.querySelector('#search_table').innerText.includes('complete')", timeout=SEARCH_MS)
    wait_plot(page, "search_front", "p.data.length >= 1")
    page.locator("#search_status").get_by_text("Done: 2 of 2 trials done").wait_for(timeout=SEARCH_MS)
    rows_js = """Object.values([...document.querySelectorAll('#search_table [role=gridcell]')].reduce((rows, c) =>
        ((rows[c.dataset.row] ??= [])[c.dataset.col] = c.textContent.trim(), rows), {}))"""
    page.wait_for_function(f"{rows_js}.length === 2")
    rows = page.evaluate(rows_js)
    assert [r[0] for r in rows] == ["1", "0"] and all(r[1] == "complete" or r[1] == "pruned" for r in rows)
    wait_plot(page, "search_front", "p.data.some(t => t.name === 'Pareto front')")
    page.locator("#search_best").get_by_text("Best so far: trial").wait_for()
    screenshot(page, "search", docs=False)

    # Train this one: the Fine-tune tab opens with the trial's method and learning rate.
    method, lr = rows[1][2], float(rows[1][4])
    page.locator("#search_pick input").click()
    page.get_by_role("option", name="0", exact=True).click()
    page.get_by_role("button", name="Train this one").click()
    page.locator("#search_note").get_by_text("Filled from trial 0").wait_for(state="attached")  # on the tab left
    assert page.get_by_role("tab", name="Fine-tune").get_attribute("aria-selected") == "true"
    page.wait_for_function("(v) => document.querySelector('#method input').value === v", arg=method_label(method))
    assert abs(float(page.locator("#lr input").input_value()) / lr - 1) < 0.01  # the table shows 3 digits
    assert page.locator("#steps input").input_value() == "3"
    assert page.locator("#max_length input").input_value() == "16"

    # A best.json (here one written by hand, as a command-line search writes it) does the same.
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"model": model, "dataset": dataset, "method": "circulant", "budget": 48, "lr": 0.02,
                                "steps": 7, "max_length": 16, "warmup_ratio": 0.3}))
    page.get_by_role("tab", name="Search").click()
    with page.expect_file_chooser() as chooser:
        page.locator("#search_load").click()
    chooser.value.set_files(str(best))
    page.locator("#search_note").get_by_text("Filled from best.json (circulant, lr=0.02)").wait_for(state="attached")
    assert page.get_by_role("tab", name="Fine-tune").get_attribute("aria-selected") == "true"
    page.wait_for_function("(v) => document.querySelector('#method input').value === v", arg=method_label("circulant"))
    page.wait_for_function("document.querySelector('#steps input').value === '7'")
    assert page.locator("#ft_budget input[type=number]").input_value() == "48"
    assert page.locator("#warmup input").input_value() == "0.3"
