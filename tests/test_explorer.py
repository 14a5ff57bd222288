"""The Explore and Compare tabs without a browser: what the session computes, the page's event
handlers run through Gradio's own output processing, links (URL state) and presets, the
parameters each family shows, and the limits on what one request may cost."""
from __future__ import annotations

import asyncio
import importlib
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import app
import visualize
from surm_core import FAMILIES, analysis, from_budget, make, session

explore_session = importlib.import_module("surm_core.session.explore")  # the module (the package exports its function)

ROOT = Path(__file__).resolve().parent.parent


# -- the parameters beside ΔW ----------------------------------------------------------------------
@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("shape, budget", [((16, 16), None), ((12, 20), None), ((16, 16), 160), ((16, 16), 256)])
def test_parameter_views_are_all_the_parameters(family, shape, budget):
    """What a student sees beside ΔW is every trainable number, each once (a budget of 160 tiles
    the FFT families; the dense count, 256, makes tiles of 1 × 1)."""
    if budget is None:
        m = make(family, *shape, init="random", seed=0)
    else:
        m = from_budget(family, *shape, max(budget, session.budget_range(family, *shape)[0]), init="random", seed=0)
    views = m.parameter_views()
    shown = [v for v in views if not v.derived]
    assert views and all(v.title and v.values.ndim in (1, 2) for v in views)
    assert sum(v.values.numel() for v in shown) == m.num_params
    drawn = torch.cat([v.values.flatten() for v in shown]).sort().values
    params = torch.cat([p.detach().flatten() for p in m.parameters()]).sort().values
    assert torch.equal(drawn, params)


def test_parameter_views_read_as_their_textbook_names():
    m = make("toeplitz", 5, 5, init="random", seed=0)
    column, row = (v.values for v in m.parameter_views())
    T = m.to_dense().detach()
    assert torch.equal(column, T[:, 0]) and torch.equal(row, T[0, 1:])  # first column; first row after t[0] (shared)
    c, spectrum = make("circulant", 6, 6, init="random", seed=1).parameter_views()
    assert spectrum.derived and torch.allclose(spectrum.values, torch.fft.fft(c.values).abs())
    k = make("kronecker", 6, 4, a_shape=(2, 2), init="random", seed=0)
    A, B = (v.values for v in k.parameter_views())
    assert torch.allclose(torch.kron(A, B), k.to_dense().detach())


def test_parameter_figure_draws_each_view():
    m = make("ldr", 12, 12, r=2, init="random", seed=0)
    fig = session.explore("ldr", 12, 12, 48).parameters
    assert [t.type for t in fig.data] == ["heatmap", "heatmap"]
    g = from_budget("ldr", 12, 12, 48, init="random", seed=0).double().parameter_views()[0].values
    np.testing.assert_array_equal(fig.data[0].z, g.numpy())
    assert m.num_params == 48 and "48 parameters" in fig.layout.title.text


# -- budget: a slider over log(budget), clamping with a note ---------------------------------------
def test_slider_positions_spread_over_log_budget():
    low, high = 64, 4096
    positions = [session.slider_position(b, low, high) for b in (64, 128, 512, 4096)]
    assert positions == sorted(positions) and positions[0] == 0 and positions[-1] == session.SLIDER_STEPS
    for b in (64, 100, 777, 4096):
        assert abs(session.slider_budget(session.slider_position(b, low, high), low, high) - b) <= b * 0.005
    # dense: one budget, and the slider keeps its range (it never gets minimum == maximum)
    assert session.slider_position(4096, 4096, 4096) == 0 and session.slider_budget(700, 4096, 4096) == 4096


@pytest.mark.parametrize("typed, shown, note", [
    (10, 64, "budget 10 is below circulant's smallest (64): showing 64"),
    (99999, 4096, "budget 99,999 is above the dense map's 4,096 parameters: showing 4,096"),
    (300, 300, ""),
])
def test_a_budget_out_of_range_is_clamped_and_said(typed, shown, note):
    result = session.explore("circulant", 64, 64, typed, clamp=True)
    assert result.config["budget"] == shown and result.heatmap.data
    assert (note in result.note) if note else not result.note.startswith("**Note")
    if typed < 64:
        with pytest.raises(ValueError, match="too small"):
            session.explore("circulant", 64, 64, typed)  # the API stays strict below the range


def test_the_note_says_how_a_tiled_or_cropped_map_is_laid_out():
    tiled = session.explore("circulant", 64, 64, 256)
    assert "4 × 4 grid of 16 × 16 tiles" in tiled.note and "displacement rank" in tiled.note
    assert "grid" not in session.explore("circulant", 64, 64, 64).note
    assert "cropped to 48 × 80" in session.explore("toeplitz", 48, 80, 159).note


def test_a_rectangular_map_says_why_it_has_no_eigenvalues():
    for result in (session.explore("toeplitz", 48, 16, 100), list(session.explore_stages("circulant", 512, 300, 512))[0]):
        assert not result.eigenvalues.data and "needs a square M" in result.eigenvalues.layout.annotations[0].text


# -- the page's handlers, through Gradio's own output processing -----------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return app.build_app(tmp_path_factory.mktemp("runs"))


def component(demo, elem_id):
    (block,) = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id]
    return block


def handler(demo, elem_id, event, name=None):
    """The function the page runs when ``event`` fires on the component ``elem_id`` (``name``: the
    one of that name, when the event runs several)."""
    target = component(demo, elem_id)._id
    (fn,) = [f for f in demo.fns.values() if (target, event) in f.targets and name in (None, f.fn.__name__)]
    return fn


def run(demo, fn, *args) -> list[dict]:
    """Every update the handler sends, processed as Gradio processes it (a bad update raises),
    as {elem_id or position: value}."""
    sent = []
    for values in fn.fn(*args):
        processed = asyncio.run(demo.postprocess_data(fn, list(values), None))
        sent.append({getattr(block, "elem_id", None) or i: value
                     for i, (block, value) in enumerate(zip(fn.outputs, processed))})
    return sent


def settings(family="circulant", d_out=64, d_in=64, budget=64, seed=0, A="Z1", B="Z-1", large=False, shown=None):
    return [family, d_out, d_in, budget, seed, A, B, large, shown]


def value(update):
    if isinstance(update, dict) and "__type__" in update:
        update = update["value"]
    return update.model_dump() if hasattr(update, "model_dump") else update


def test_page_switching_to_dense_shows_it(demo):
    # the budget slider's range was set to [d_out·d_in, d_out·d_in], which Gradio refuses: every panel
    # showed "Error"
    sent = run(demo, handler(demo, "family", "input"), *settings("dense"))
    first, last = sent[0], sent[-1]
    assert value(first["budget"]) == 4096 and value(first["budget_slider"]) == 0
    assert "dense needs at least 4,096" in first["budget"]["info"]
    assert value(last["solved"])["num_params"] == 4096


def test_page_family_switch_lands_on_the_smallest_member(demo):
    # lowrank at 128 then circulant: the old budget gave a 2 × 2 grid of tiles beside a text saying
    # "displacement rank at most 1"
    sent = run(demo, handler(demo, "family", "input"), *settings("circulant", budget=128))
    config = value(sent[0]["solved"])
    assert config["hparams"] == {"block": 64} and config["num_params"] == 64 and value(sent[0]["budget"]) == 64
    assert "grid" not in sent[0]["explore_note"]


@pytest.mark.parametrize("event", ["submit", "blur"])  # Enter and Tab
def test_page_typed_budget_out_of_range_is_clamped_and_said(demo, event):
    sent = run(demo, handler(demo, "budget", event), *settings(budget=10))
    assert value(sent[0]["budget"]) == 64 and value(sent[-1]["solved"])["budget"] == 64
    assert "budget 10 is below circulant's smallest (64): showing 64" in sent[0]["explore_note"]
    sent = run(demo, handler(demo, "budget", event), *settings(budget=99999))
    assert value(sent[0]["budget"]) == 4096 and value(sent[0]["budget_slider"]) == session.SLIDER_STEPS


def test_page_slider_sets_the_budget_and_the_same_view_is_not_recomputed(demo):
    sent = run(demo, handler(demo, "budget_slider", "input"), session.SLIDER_STEPS // 2, *settings())
    assert value(sent[0]["budget"]) == 512 and value(sent[-1]["solved"])["num_params"] <= 512
    shown = tuple(settings(budget=512)[:8])
    (again,) = run(demo, handler(demo, "budget", "blur"), *settings(budget=512, shown=shown))
    assert all(v == {"__type__": "update"} for k, v in again.items() if isinstance(k, str))  # Enter, Tab: one view


def test_page_a_bad_size_is_a_message_and_the_view_stays(demo):
    (sent,) = run(demo, handler(demo, "d_out", "submit"), *settings(d_out=5000))
    assert "**Not shown:** d_out = 5000 is larger than the explorer shows" in sent["explore_note"]
    assert all(v == {"__type__": "update"} for k, v in sent.items() if k not in ("explore_note",) and isinstance(k, str))


# -- large maps: estimates first, then the exact figures -------------------------------------------
def test_a_large_map_shows_labelled_estimates_then_the_exact_figures():
    # a dense map of 160 × 160 (staged above 128 × 128): its SVDs and eigenvalues need dense decompositions
    stages = list(session.explore_stages("dense", 160, 160, 160 * 160, seed=1))
    placeholders, estimated, *_, exact = stages
    assert "computing" in placeholders.spectrum.layout.annotations[0].text and not placeholders.complete
    assert estimated.estimates == ("spectrum", "displacement", "eigenvalues") and not estimated.complete
    for name in estimated.estimates:
        fig = getattr(estimated, name)
        assert visualize.is_estimate(fig) and "estimate" in fig.layout.title.text and fig.data
    assert "displacement rank ≥" in estimated.displacement.layout.title.text
    assert estimated.heatmap is placeholders.heatmap  # earlier figures are kept, not recomputed
    assert exact.complete and exact.estimates == ()
    for name in ("spectrum", "displacement", "eigenvalues"):
        fig = getattr(exact, name)
        assert not visualize.is_estimate(fig) and "estimate" not in fig.layout.title.text
    W = from_budget("dense", 160, 160, 160 * 160, init="random", seed=1).double().to_dense().detach()
    np.testing.assert_allclose(exact.spectrum.data[0].y, torch.linalg.svdvals(W).numpy(), rtol=1e-10)
    assert exact.displacement.layout.title.text.endswith("displacement rank 160")
    assert len(exact.eigenvalues.data[0].x) == 160
    # where structure gives every value cheaply, there is no estimate (a circulant: FFTs)
    circulant = list(session.explore_stages("circulant", 160, 160, 160))
    assert len(circulant) == 2 and circulant[-1].complete and circulant[-1].estimates == ()


def test_estimates_lie_within_their_stated_tolerance():
    gen = torch.Generator().manual_seed(3)
    G = torch.randn(512, 512, dtype=torch.float64, generator=gen) / 512 ** 0.5  # the flattest spectrum
    maps = {"gaussian": G, **{f: from_budget(f, 512, 512, 8 * 512, init="random", seed=0).double()
                              for f in ("ldr", "toeplitz", "monarch")}}
    for name, M in maps.items():
        X = M if isinstance(M, torch.Tensor) else M.to_dense().detach()
        s, estimate = torch.linalg.svdvals(X), analysis.estimate_singular_values(M)
        assert len(estimate) == analysis.ESTIMATE_K
        assert (estimate <= s[:len(estimate)] * (1 + 1e-10)).all(), name  # each at most the true value
        assert ((s[:len(estimate)] - estimate).abs() <= 0.03 * s[0]).all(), name  # as estimate_singular_values says
        lam, ritz = torch.linalg.eigvals(X), analysis.estimate_eigenvalues(M)[:5]
        distance = (ritz[:, None] - lam[None, :]).abs().min(dim=1).values
        assert (distance <= 0.03 * lam.abs().max()).all(), name  # the five outermost Ritz values
    # a map of low rank is found exactly (an invariant Krylov space), and a decaying spectrum closely
    low = from_budget("lowrank", 300, 300, 2 * 300 * 3, init="random", seed=0).double()
    np.testing.assert_allclose(analysis.estimate_singular_values(low)[:3], analysis.singular_values(low)[:3], rtol=1e-8)


def test_large_text_enlarges_every_explorer_figure():
    from visualize.style import LARGE_FONT, LARGE_TITLE
    plain, large = (session.explore("kronecker", 24, 24, 100, large_text=on) for on in (False, True))
    staged = list(session.explore_stages("ldr", 130, 130, 520, large_text=True))[0]  # placeholders too
    compared = session.compare("psd", 16, 64, families=["lowrank"], large_text=True)
    dial = list(session.dial_stages("psd", 8, 0, 1, large_text=True))[-1]
    figures = [getattr(large, n) for n in ("heatmap", "parameters", "spectrum", "eigenvalues", "displacement")]
    figures += [staged.spectrum, compared.curves, dial.figure, dial.operators]
    for fig in figures:
        assert fig.layout.font.size == LARGE_FONT and fig.layout.title.font.size == LARGE_TITLE
        assert all(a.font.size is None or a.font.size > 15 for a in fig.layout.annotations)
    before, after = plain.parameters.layout, large.parameters.layout
    assert after.margin.t > before.margin.t  # room for the larger title lines
    assert [a.font.size for a in after.annotations] > [a.font.size for a in before.annotations]  # subplot titles
    assert plain.spectrum.layout.font.size is None  # the default: plotly's


# -- links: the URL holds the view ----------------------------------------------------------------
def test_a_link_opens_exactly_its_view():
    view = session.parse_query("?tab=explore&family=toeplitz&d_out=96&d_in=40&budget=300&seed=3")
    ex = view.explore
    assert (view.tab, ex["family"], ex["d_out"], ex["d_in"], ex["budget"], ex["seed"]) == ("explore", "toeplitz", 96,
                                                                                           40, 300, 3)
    result = session.explore(ex["family"], ex["d_out"], ex["d_in"], ex["budget"], ex["seed"], clamp=True)
    assert result.config["budget"] == 300 and "Note" not in result.note  # valid: not clamped away


def test_links_are_canonical_and_round_trip():
    view = session.parse_query("tab=compare&target=psd&families=ldr,lowrank&r=4&large=1&A=Z0")
    assert view.compare["families"] == ["lowrank", "ldr"] and view.compare["r"] == 4 and view.explore["large"]
    query = session.query_string(view)
    assert query == "tab=compare&A=Z0&large=1&target=psd&families=lowrank,ldr&r=4"
    assert session.query_string(session.parse_query(query)) == query
    assert session.parse_query("family=ldr").tab is None  # names no tab: the page keeps the one shown
    default = session.query_string(session.LinkView())
    assert default == "tab=explore&family=circulant&d_out=64&d_in=64&seed=0"  # no budget: the smallest


@pytest.mark.parametrize("query, note", [
    ("tab=nope", "tab='nope' is not one of explore, compare, finetune"),
    ("family=lora", "family='lora' is not one of"),
    ("d_out=-3", "d_out=-3 is out of range"),
    ("budget=lots", "budget='lots' is not a whole number"),
    ("families=lowrank,lora", "families lora unknown"),
    ("r=99", "the dial goes up to 16"),
])
def test_a_bad_link_falls_back_to_defaults_and_says_so(query, note):
    view = session.parse_query(query)
    assert any(note in n for n in view.notes), view.notes
    assert session.parse_query(session.query_string(view)).notes == []


@pytest.mark.parametrize("title, what, query", session.PRESETS)
def test_every_preset_is_a_canonical_link_to_a_view_that_opens(title, what, query):
    view = session.parse_query(query)
    assert view.notes == [] and session.query_string(view) == query
    ex, co = view.explore, view.compare
    if view.tab == "explore":
        assert session.explore(ex["family"], ex["d_out"], ex["d_in"], ex["budget"], ex["seed"]).heatmap.data
    else:
        assert set(co["families"]) <= set(FAMILIES) and co["target"] in session.TARGET_KINDS
    assert f"?{query}" in session.presets_markdown()


def test_readme_lists_the_presets_as_links():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for title, _, query in session.PRESETS:
        assert f"[{title}](http://127.0.0.1:7860/?{query})" in readme


# -- what one request may cost ------------------------------------------------------------------
def test_a_map_above_the_servers_limit_is_refused_with_its_cost():
    with pytest.raises(ValueError, match=r"at most 256 a side \(its --max-map\); a 300 × 300 map would take about"):
        session.explore("circulant", 300, 64, 300, max_size=256)
    with pytest.raises(ValueError, match="at most 256 a side"):
        session.compare("gaussian", 300, 512, max_size=256)
    assert session.explore_cost(1024, 1024).bytes < 2**30  # the default limit stays far below a GiB
    assert app.parse_args(["--max-map", "512"]).max_map == 512


def test_large_maps_queue_among_themselves_and_small_ones_never_wait():
    explore_session._large_maps.acquire()  # a large map is being computed
    try:
        small = threading.Thread(target=session.explore, args=("toeplitz", 64, 64, 200))
        small.start()
        small.join(timeout=60)
        assert not small.is_alive()  # answered although the large queue is taken
        done = threading.Event()
        large = threading.Thread(target=lambda: (session.explore("circulant", 200, 200, 200), done.set()))
        large.start()
        assert not done.wait(timeout=1.0)  # waits for its turn
    finally:
        explore_session._large_maps.release()
    large.join(timeout=60)
    assert done.is_set()


# -- Compare and the dial ----------------------------------------------------------------------------
def test_compare_takes_the_chosen_families_and_says_when_none_fits():
    result = session.compare("psd", 16, 64, families=["lowrank", "monarch"])
    assert {t.name for t in result.curves.data} == {"lowrank", "monarch"}
    assert [row[0] for row in result.rows] == ["lowrank", "monarch"]
    assert any(s.x0 == 64 for s in result.curves.layout.shapes)  # the table's budget is marked
    empty = session.compare("psd", 16, 3, families=["lowrank"])
    assert empty.rows == [] and "No family fits a budget of 3" in empty.note
    with pytest.raises(ValueError, match="pick at least one family"):
        session.compare("psd", 16, 64, families=[])


def test_compare_with_a_budget_no_family_fits_names_each_smallest(demo):
    # a table budget of 1 was an empty table and one sentence; the page should say what would fit
    result = session.compare("gaussian", 64, 1)
    assert result.rows == [] and result.curves.data  # the curves still show every family
    assert "**No family fits a budget of 1 parameter at 64 × 64**" in result.note
    for family in FAMILIES:
        assert f"{family} {session.budget_range(family, 64, 64)[0]:,}" in result.note
    assert "at least 64 fills the table" in result.note
    some = session.compare("gaussian", 64, 100, families=["circulant", "lowrank", "dense"])
    assert [row[0] for row in some.rows] == ["circulant"]
    assert some.note.startswith("Not in the table (the table budget of 100 at 64 × 64 is below their smallest): "
                                "lowrank 128, dense 4,096.")
    # through the page: a message in the note, an empty table, no error
    sent = run(demo, handler(demo, "compare_btn", "click", "compare"), "gaussian", 32, 1, 0, ["circulant", "dense"], False)
    last = sent[-1]
    assert "No family fits a budget of 1 parameter at 32 × 32" in value(last["compare_note"])
    assert "circulant 32, dense 1,024" in value(last["compare_note"])
    assert value(last["table"])["data"] in ([], [[""] * len(session.TABLE_COLUMNS)])


def test_the_dial_fits_each_rank_once_and_shows_all_fits_so_far():
    first = list(session.dial_stages("psd", 8, 5, 2))
    assert len(first) == 2 and "fitting r = 2" in first[0].figure.layout.annotations[0].text
    (again,) = session.dial_stages("psd", 8, 5, 2)  # kept: no placeholder
    m, err = analysis.nearest("ldr", visualize.target_matrix("psd", 8, 5), 32)
    assert again.figure.layout.title.text == f"Displacement rank r = 2: relative error {err:.4f}"
    assert analysis.displacement_rank(m) <= 2
    top = list(session.dial_stages("psd", 8, 5, 12))[-1]  # 2·12·8 parameters: more than the dense 8 × 8
    assert "showing r = 4" in top.note and top.figure.layout.title.text.startswith("Displacement rank r = 4")
    errors = top.figure.data[-2].y  # every fit so far, by r: more terms, nearer
    assert list(errors) == sorted(errors, reverse=True)
    with pytest.raises(ValueError, match="the dial fits r = 1"):
        list(session.dial_stages("psd", 8, 5, 17))
