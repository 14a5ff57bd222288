"""The explorer in front of a class, in a real browser (Debian's headless Chromium, Playwright) at
a projector's 1280 × 720.

The sweep: every family × {64×64, 48×80, 512×512} × {smallest budget, largest budget, a budget typed
out of range}; after each view no panel is in an error state and every figure's titles lie inside
its plot. The links: a URL opens its view, a new family changes the URL, back and forward return.
Screenshots of every view go to ``test-artifacts/sweep/``; with ``UPDATE_SCREENSHOTS=1`` the
README's Explore and Compare screenshots are refreshed. Timings are printed (``-s``), not asserted.
"""
from __future__ import annotations

import os
import shutil
import time

import pytest
import torch

from surm_core import FAMILIES, from_budget, session
from test_app import served_app
from test_browser import ARTIFACTS, CHROMIUM, SCREENSHOTS, wait_plot

pytestmark = pytest.mark.skipif(not CHROMIUM.exists() and not os.environ.get("CI"),
                                reason="needs Debian's chromium at /usr/bin/chromium (CI installs it)")

PLOTS = ("heatmap", "parameters", "spectrum", "eigenvalues", "displacement")
SHAPES = [(64, 64), (48, 80), (512, 512)]
TIMEOUT_MS = 180_000  # a 512 × 512 LDR at its top budget on a busy 2-core machine


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    with served_app(tmp_path_factory.mktemp("runs")) as url:
        yield url
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    context.close()


# -- waiting for a view and checking it --------------------------------------------------------------
DRAWN = """(ids) => ids.every(id => {
  const p = document.querySelector(`#${id} .js-plotly-plot`);
  return p && p.layout && !(p.layout.annotations || []).some(a => String(a.text).includes('computing'));
})"""
#: Every plot drawn with its exact values (no "computing…" placeholder, no estimate) for the view.
VIEW_DONE = """([ids, name, count]) => ids.every(id => {
  const p = document.querySelector(`#${id} .js-plotly-plot`);
  return p && p.layout && p.layout.meta !== 'estimate'
    && !(p.layout.annotations || []).some(a => String(a.text).includes('computing'));
}) && document.querySelector('#heatmap .js-plotly-plot').layout.title.text.includes(name)
   && document.querySelector('#heatmap .js-plotly-plot').layout.title.text.includes(count)"""

PROBLEMS = """(ids) => {
  const problems = [];
  for (const el of document.querySelectorAll('.error')) {
    if (el.offsetParent !== null && el.textContent.includes('Error')) problems.push('error state: ' + (el.closest('[id]') || {}).id);
  }
  for (const id of ids) {
    const p = document.querySelector(`#${id} .js-plotly-plot`);
    const frame = p.querySelector('.main-svg').getBoundingClientRect();
    for (const t of p.querySelectorAll('text.gtitle, text[class$="title"], text.annotation-text')) {
      const r = t.getBoundingClientRect();
      if (!t.textContent.trim() || r.width === 0) continue;
      if (r.left < frame.left - 1 || r.right > frame.right + 1 || r.top < frame.top - 1 || r.bottom > frame.bottom + 1)
        problems.push(`${id}: "${t.textContent}" (${Math.round(r.left)}–${Math.round(r.right)}) outside its plot `
                      + `(${Math.round(frame.left)}–${Math.round(frame.right)})`);
    }
  }
  return problems;
}"""


def wait_view(page, family: str, shape, num_params: int) -> float:
    """Seconds until every plot shows the view of ``family`` at ``shape`` with ``num_params``."""
    t0 = time.perf_counter()
    page.wait_for_function(VIEW_DONE, arg=[list(PLOTS), f"{family} {shape[0]}×{shape[1]}", f"{num_params:,} param"])
    return time.perf_counter() - t0


def check_view(page, name: str) -> None:
    problems = page.evaluate(PROBLEMS, list(PLOTS))
    sweep = ARTIFACTS / "sweep"
    sweep.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(sweep / f"{name}.jpeg"), type="jpeg", quality=60)
    assert problems == [], f"{name}: {problems}"


def open_link(page, query: str) -> None:
    """Show the view of ``query`` as a preset link does (no reload)."""
    page.evaluate("(q) => { history.pushState(null, '', '?' + q); surmLink.restore(); }", query)


def keep(page, name: str) -> None:
    """A full-page screenshot in test-artifacts/ (and the README's, with UPDATE_SCREENSHOTS=1)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, SCREENSHOTS / path.name)


# -- the sweep -----------------------------------------------------------------------------------
def test_every_family_shape_and_budget_shows_without_errors_and_with_whole_titles(page, url):
    start = time.perf_counter()
    page.goto(url)
    first = wait_view(page, "circulant", (64, 64), 64)
    print(f"\npage open -> first complete Explore view: {time.perf_counter() - start:.2f} s")
    slider = page.locator("#budget_slider input[type=range]")
    budget = page.locator("#budget input")
    timings = []
    for i, family in enumerate(FAMILIES):
        for j, shape in enumerate(SHAPES):
            low, high = session.budget_range(family, *shape)
            count = {b: from_budget(family, *shape, b).num_params for b in (low, high)}
            name = f"{family}-{shape[0]}x{shape[1]}"
            if (i + j) % 2 == 0:  # smallest (a link without a budget), largest (End), typed below (Tab)
                steps = [(None, low, "smallest"), ("End", high, "largest"), (("10", "Tab"), low, "typed-10")]
            else:  # largest (a link), smallest (Home), typed above (Enter)
                steps = [(high, high, "largest"), ("Home", low, "smallest"), (("99999999", "Enter"), high, "typed-99999999")]
            for action, shown, label in steps:
                t0 = time.perf_counter()
                if action is None or isinstance(action, int):
                    budget_part = "" if action is None else f"&budget={action}"
                    open_link(page, f"tab=explore&family={family}&d_out={shape[0]}&d_in={shape[1]}{budget_part}")
                elif isinstance(action, str):
                    slider.press(action)
                else:
                    budget.fill(action[0])
                    budget.press(action[1])
                wait_view(page, family, shape, count[shown])
                timings.append((name, label, time.perf_counter() - t0))
                if label.startswith("typed") and low < high:
                    page.locator("#explore_note").get_by_text("is below" if shown == low else "is above").wait_for()
                    assert page.locator("#budget input").input_value() == str(shown)
                check_view(page, f"{name}-{label}")
    print("\n".join(f"{n:<28} {label:<16} {s:6.2f} s" for n, label, s in timings))
    print(f"sweep: {len(timings)} views in {time.perf_counter() - start:.0f} s (first view {first:.2f} s)")


# -- links ---------------------------------------------------------------------------------------------
def controls(page) -> dict:
    return {elem_id: page.locator(f"#{elem_id} input").first.input_value()
            for elem_id in ("family", "d_out", "d_in", "budget", "seed")}


def test_a_link_opens_its_view_and_back_and_forward_move_between_views(page, url):
    query = "tab=explore&family=toeplitz&d_out=96&d_in=40&budget=300&seed=3"
    page.goto(f"{url}?{query}")
    wait_view(page, "toeplitz", (96, 40), from_budget("toeplitz", 96, 40, 300).num_params)
    assert controls(page) == {"family": "toeplitz", "d_out": "96", "d_in": "40", "budget": "300", "seed": "3"}
    assert page.url.endswith("?" + query)  # canonical already: not rewritten
    page.evaluate("window.stillTheSamePage = true")

    page.locator("#family input").click()
    page.get_by_role("option", name="ldr", exact=True).click()
    low = session.budget_range("ldr", 96, 40)[0]
    wait_view(page, "ldr", (96, 40), from_budget("ldr", 96, 40, low).num_params)
    page.wait_for_function("(q) => location.search.includes(q)", arg=f"family=ldr&d_out=96&d_in=40&budget={low}")

    page.go_back()
    wait_view(page, "toeplitz", (96, 40), from_budget("toeplitz", 96, 40, 300).num_params)
    assert page.url.endswith("?" + query) and controls(page)["budget"] == "300"
    page.go_forward()
    wait_view(page, "ldr", (96, 40), from_budget("ldr", 96, 40, low).num_params)
    assert controls(page)["family"] == "ldr"

    # a preset is a link: the view changes, the page is not reloaded
    page.get_by_text("Lecture presets").click()
    page.get_by_role("link", name="Tiles: a budget met by smaller circulants").click()
    wait_view(page, "circulant", (64, 64), 256)
    assert "4 × 4 grid of 16 × 16 tiles" in page.locator("#explore_note").inner_text()
    assert page.evaluate("window.stillTheSamePage") is True

    page.get_by_role("button", name="Copy link").click()
    page.get_by_role("button", name="Link copied ✓").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == page.url

    page.get_by_role("tab", name="Compare").click()
    page.wait_for_function("() => location.search.startsWith('?tab=compare')")
    page.go_back()
    page.wait_for_function("() => location.search.startsWith('?tab=explore')")
    page.get_by_role("tab", name="Explore", selected=True).wait_for()


def test_a_tab_chosen_while_the_page_opens_stays_chosen(page, url):
    # The page's opening applies its link; a bare address names no tab, so it must not take a
    # visitor who already clicked one back to Explore (it did: a quick click was undone).
    page.goto(url)
    page.get_by_role("tab", name="Search").click()
    page.wait_for_function("() => location.search.includes('tab=')")  # the opening is applied
    page.wait_for_timeout(500)
    assert page.get_by_role("tab", name="Search").get_attribute("aria-selected") == "true"
    assert page.locator("#search_families").is_visible()


def test_lecture_views_readable_on_a_projector(page, url):
    """The README's screenshots: a tiled Toeplitz map in large text, and the dial on Compare."""
    page.goto(f"{url}?tab=explore&family=toeplitz&d_out=64&d_in=64&budget=127&seed=0")
    wait_view(page, "toeplitz", (64, 64), 127)
    page.locator("#large input").check()
    page.wait_for_function("() => document.body.classList.contains('surm-large')")
    wait_plot(page, "heatmap", "p.layout.font && p.layout.font.size === arg", 16)
    check_view(page, "large-text")
    page.wait_for_function("() => location.search.includes('large=1')")
    page.locator("#large input").uncheck()
    wait_plot(page, "heatmap", "!p.layout.font || p.layout.font.size !== 16")
    keep(page, "explore")

    page.goto(f"{url}?tab=compare&target=psd&size=32&table_budget=128&families=lowrank,circulant,toeplitz&r=4")
    wait_plot(page, "curves", "p.data.length === 3 && p.layout.shapes.some(s => s.x0 === 128)")
    wait_plot(page, "dial", "p.layout.title.text.startsWith('Displacement rank r = 4')")
    wait_plot(page, "operators", "p.data.length === 3")
    problems = page.evaluate(PROBLEMS, ["curves", "dial", "operators"])
    assert problems == []
    t0 = time.perf_counter()
    page.locator("#dial_r input[type=range]").press("ArrowLeft")  # r = 3
    wait_plot(page, "dial", "p.layout.title.text.startsWith('Displacement rank r = 3')")
    print(f"\ndial r = 4 -> 3 at 32 × 32: {time.perf_counter() - t0:.2f} s")
    keep(page, "compare")
    page.wait_for_function("() => location.search.endsWith('r=3')")


def test_time_to_first_and_all_figures_at_1024(page, url):
    """Printed, not asserted: from a change to the first figures, and to all of them, per family."""
    page.goto(f"{url}?tab=explore&family=circulant&d_out=1024&d_in=1024")
    wait_view(page, "circulant", (1024, 1024), 1024)
    first = "([name, count]) => { const t = document.querySelector('#heatmap .js-plotly-plot').layout.title.text;" \
            " return t.includes(name) && t.includes(count); }"
    rows = []
    for family in FAMILIES:
        budget = max(4 * 1024, session.budget_range(family, 1024, 1024)[0])
        count = from_budget(family, 1024, 1024, budget).num_params
        t0 = time.perf_counter()
        open_link(page, f"tab=explore&family={family}&d_out=1024&d_in=1024&budget={budget}")
        page.wait_for_function(first, arg=[f"{family} 1024×1024", f"{count:,} param"])
        shown = time.perf_counter() - t0
        page.wait_for_function(DRAWN, arg=list(PLOTS))  # every panel, estimates allowed
        drawn = time.perf_counter() - t0
        assert page.evaluate(PROBLEMS, list(PLOTS)) == [], family  # estimates' titles fit too
        wait_view(page, family, (1024, 1024), count)
        rows.append((family, budget, shown, drawn, time.perf_counter() - t0))
        check_view(page, f"{family}-1024x1024")
    print("\nfamily               budget  first figures s  all figures s  exact s  (1024 × 1024, browser round trip)")
    print("\n".join(f"{f:<20} {b:>9,} {s:16.2f} {d:14.2f} {a:8.2f}" for f, b, s, d, a in rows))
