"""The Search tab in a real browser (Debian's headless Chromium, Playwright): a 3-trial search of
a tiny model fills the trials table and the front as trials finish, and "Train this one" opens
the Fine-tune tab with the chosen trial's settings. Its screenshot goes to ``test-artifacts/``
(and with ``UPDATE_SCREENSHOTS=1`` to ``docs/screenshots/search.png``)."""
from __future__ import annotations

from surm_core.session import METHODS
from test_browser import CHROMIUM, page, plot, screenshot, url, wait_plot  # noqa: F401 (fixtures)
from test_finetune import make_tiny_model, write_topics_csv

pytestmark = __import__("test_browser").pytestmark
#: The search runs in its own process: a few minutes at most, even on a busy machine.
SEARCH_MS = 600_000


def test_a_live_search_and_train_this_one(page, tmp_path):  # noqa: F811
    page.get_by_role("tab", name="Search").click()
    page.locator("#search_model textarea, #search_model input").first.fill(make_tiny_model(tmp_path / "model"))
    page.locator("#search_dataset input[type=file]").set_input_files(write_topics_csv(tmp_path / "topics.csv"))
    page.locator("#search_families").get_by_label("head-only").check()
    for elem_id, value in (("search_max_budget", "128"), ("search_trials", "3"), ("search_steps", "6"),
                           ("search_max_length", "16")):
        page.locator(f"#{elem_id} input").fill(value)
    page.get_by_role("button", name="Start search").click()

    # The table and the front grow while the search runs (its process first imports torch and
    # loads the model: minutes on a busy 2-core machine), then the status says it is done.
    page.wait_for_function("document.querySelector('#search_table').innerText.includes('complete')", timeout=SEARCH_MS)
    wait_plot(page, "search_front", "p.data.length >= 1")
    page.locator("#search_status").get_by_text("Done: 3 of 3 trials done").wait_for(timeout=SEARCH_MS)
    wait_plot(page, "search_front", "p.data.length >= 2")  # the trials and the front
    rows_js = """Object.values([...document.querySelectorAll('#search_table [role=gridcell]')].reduce((rows, c) =>
        ((rows[c.dataset.row] ??= [])[c.dataset.col] = c.textContent.trim(), rows), {}))"""
    page.wait_for_function(f"{rows_js}.length === 3")
    rows = page.evaluate(rows_js)
    assert [r[0] for r in rows] == ["2", "1", "0"] and all(r[1] == "complete" or r[1] == "pruned" for r in rows)
    page.locator("#search_best").get_by_text("Best so far: trial").wait_for()
    screenshot(page, "search")

    # Train this one: the Fine-tune tab opens with the trial's method and learning rate.
    method, lr = rows[2][2], float(rows[2][4])
    page.locator("#search_pick input").click()
    page.get_by_role("option", name="0", exact=True).click()
    page.get_by_role("button", name="Train this one").click()
    page.locator("#search_note").get_by_text("Filled from trial 0").wait_for(state="attached")  # on the tab left
    assert page.get_by_role("tab", name="Fine-tune").get_attribute("aria-selected") == "true"
    label = dict((value, label) for label, value in METHODS)[method]
    page.wait_for_function("(v) => document.querySelector('#method input').value === v", arg=label)
    assert abs(float(page.locator("#lr input").input_value()) / lr - 1) < 0.01  # the table shows 3 digits
    assert page.locator("#steps input").input_value() == "6"
    assert page.locator("#max_length input").input_value() == "16"
