"""The explorer in a real browser: Debian's headless Chromium driven by Playwright.

It explores (family and budget changes re-render the plots; a bad size shows a message and the
page keeps working), compares, and fine-tunes a tiny model: a run to the end, then one whose
live plot grows until Stop while a second Start is answered; both show in the runs table and the
Pareto view. A screenshot of each tab goes to ``test-artifacts/``; with ``UPDATE_SCREENSHOTS=1`` they are also
copied to ``docs/screenshots/`` for the README (the Explore and Compare ones come from
``test_browser_explore.py``). In CI (``CI`` set) the test never skips.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from surm_core import from_budget
from test_app import served_app, tiny_csv, tiny_model

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOTS = ROOT / "docs" / "screenshots"
#: Long enough for the waits below on a busy 2-core machine, short enough to fail a broken page.
TIMEOUT_MS = 60_000

pytestmark = pytest.mark.skipif(not CHROMIUM.exists() and not os.environ.get("CI"),
                                reason="needs Debian's chromium at /usr/bin/chromium (CI installs it)")


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the served app previews and tries the tiny model in this process: see conftest.one_thread
    with served_app(tmp_path_factory.mktemp("runs")) as url:
        yield url
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def page(url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        yield page
        browser.close()


def close_messages(page) -> None:
    """Close the messages shown now; one that closes itself meanwhile is not waited for."""
    page.locator("[data-testid=toast-close]").evaluate_all("buttons => buttons.forEach(b => b.click())")


def screenshot(page, name: str, docs: bool = True) -> None:
    """A full-page screenshot in test-artifacts/; with UPDATE_SCREENSHOTS=1 and ``docs`` also the README's."""
    close_messages(page)  # messages already checked
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if docs and os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, SCREENSHOTS / path.name)


def plot(elem_id: str) -> str:
    """JavaScript for the plotly graph div inside the component ``elem_id``."""
    return f"document.querySelector('#{elem_id} .js-plotly-plot')"


def wait_plot(page, elem_id: str, condition: str = "true", arg=None):
    """Wait until the plot exists and ``condition`` (JS over ``p``, the graph div, and ``arg``) holds."""
    page.wait_for_function(f"(arg) => {{ const p = {plot(elem_id)}; return p && p.data && ({condition}); }}",
                           arg=arg)


def choose(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def test_explore_and_compare(page):
    # Explore: the page loads with circulant at 64 × 64, budget 64.
    wait_plot(page, "heatmap", "p.layout.title.text.includes('circulant')")
    for elem_id in ("spectrum", "eigenvalues", "displacement"):
        wait_plot(page, elem_id)
    screenshot(page, "explore-smoke", docs=False)  # the README's come from test_browser_explore.py

    # Another family re-renders every plot with it.
    choose(page, "family", "monarch")
    wait_plot(page, "heatmap", "p.layout.title.text.includes('monarch')")
    wait_plot(page, "spectrum", "p.data.some(t => String(t.name).includes('monarch'))")

    # Another budget: the solved member changes to what from_budget gives.
    before = page.evaluate(f"JSON.stringify({plot('heatmap')}.data[0].z)")
    budget = page.locator("#budget input[type=number]")
    budget.fill("1024")
    budget.press("Tab")
    expected = from_budget("monarch", 64, 64, 1024).num_params
    page.locator("#solved").get_by_text(str(expected)).first.wait_for()
    wait_plot(page, "heatmap", "JSON.stringify(p.data[0].z) !== arg", before)

    # A size beyond the explorer's limit is a message in the page, and the page keeps working.
    d_out = page.locator("#d_out input")
    d_out.fill("5000")
    d_out.press("Enter")
    page.get_by_text("is larger than the explorer shows").first.wait_for()
    d_out.fill("32")
    d_out.press("Enter")
    wait_plot(page, "heatmap", "p.layout.title.text.includes('32')")

    # A large map answers in stages; every plot ends up showing it.
    for elem_id in ("d_out", "d_in"):
        page.locator(f"#{elem_id} input").fill("512")
        page.locator(f"#{elem_id} input").press("Enter")
    wait_plot(page, "heatmap", "p.layout.title.text.includes('512×512')")
    for elem_id in ("displacement", "eigenvalues"):  # the spectrum arrives with the displacement
        wait_plot(page, elem_id, "p.data.length > 0 && p.layout.title.text.includes('512×512')")
    wait_plot(page, "spectrum", "p.data.length > 0")

    # Compare.
    page.get_by_role("tab", name="Compare").click()
    page.get_by_role("button", name="Compare", exact=True).click()
    page.locator("#compare_note").get_by_text("ldr is fitted iteratively").wait_for()
    wait_plot(page, "curves", "p.data.some(t => t.name === 'ldr')")
    page.locator("#table").get_by_text("lowrank").first.wait_for()
    screenshot(page, "compare-smoke", docs=False)


#: A fine-tune starts a process (Python, torch, transformers): on a busy 2-core machine that alone
#: can take a minute.
RUN_TIMEOUT_MS = 240_000


def test_a_live_finetune_its_runs_and_the_try_box(page, tmp_path):
    # Fine-tune a tiny model on a tiny CSV: one short run to the end, then one stopped while its
    # live plot grows; a second Start meanwhile gets an answer. Both land in the runs table and
    # the Pareto view (the stopped one evaluated what it reached).
    # opened by its address: a click on the tab could race the page's own switch to the address's tab
    page.goto(page.url.split("?")[0] + "?tab=finetune")
    page.locator("#model textarea, #model input").first.fill(tiny_model(tmp_path / "model"))
    page.locator("#model textarea, #model input").first.press("Tab")
    page.locator("#dataset input[type=file]").set_input_files(tiny_csv(tmp_path / "topics.csv"))
    for elem_id, value in (("ft_budget", "16"), ("steps", "60"), ("batch_size", "8"), ("lr", "0.1"),
                           ("eval_every", "30")):
        page.locator(f"#{elem_id} input").fill(value)
    page.locator("#plan").get_by_text("2 layers adapted (query, value)").wait_for()
    page.get_by_role("button", name="Start").click()
    page.locator("#status").get_by_text("Done (completed): Step 60/60").wait_for(timeout=RUN_TIMEOUT_MS)
    wait_plot(page, "pareto", "p.data.length > 0 && p.data[0].x.length === 1")

    choose(page, "method", "lowrank (LoRA)")
    page.locator("#lora_r input").fill("2")
    page.locator("#steps input").fill("5000")
    # a long name: the runs table must wrap it rather than scroll sideways
    page.locator("#run_name textarea, #run_name input").first.fill("lora-stopped-under-a-long-name-that-must-wrap-in-the-table")
    page.get_by_role("button", name="Start").click()
    page.wait_for_function("() => { const s = document.querySelector('#status').innerText; "
                           "return s.includes('Step') && s.includes('elapsed') && !s.includes('Done'); }",
                           timeout=RUN_TIMEOUT_MS)
    wait_plot(page, "live", "!p.layout.title.text.includes('done') && p.data.length > 0 && p.data[0].x.length >= 2")
    page.get_by_role("button", name="Start").click()
    page.get_by_text("one at a time per page").first.wait_for()
    close_messages(page)
    seen = page.evaluate(f"{plot('live')}.data[0].x.length")
    wait_plot(page, "live", "p.data[0].x.length > arg", seen)
    page.get_by_role("button", name="Stop").click()
    page.locator("#status").get_by_text("Done (stopped)").wait_for()
    page.wait_for_function("document.querySelector('#runs').innerText.includes('lora-stopped')")
    page.wait_for_function("document.querySelector('#runs').innerText.includes('stopped, resumable')")
    wait_plot(page, "pareto", "p.data[0].x.length === 2 && p.data[0].marker.symbol.includes('circle-open')")

    # The stopped run is picked: its download comes with the Python that loads it, and it can be tried.
    page.locator("#snippet").get_by_text("load_adapter").first.wait_for()
    page.locator("#try_text textarea").fill("goal match team score coach")
    page.locator("#try_text textarea").press("Enter")
    page.locator("#try_label").get_by_text(re.compile("^(sports|business)$")).first.wait_for()
    screenshot(page, "finetune")

    # the runs table fits a 1280-pixel page: every column shown, none scrolled out of sight
    page.set_viewport_size({"width": 1280, "height": 720})
    page.wait_for_function("() => { const v = document.querySelector('#runs .virtual-table-viewport'); "
                           "return v && v.clientWidth > 0 && v.scrollWidth <= v.clientWidth "
                           "&& document.documentElement.scrollWidth <= window.innerWidth; }")
