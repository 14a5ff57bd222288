"""The Compare tab's results: how well each family's nearest member approximates a target matrix
as the budget grows, a table of the families at one budget, and the displacement-rank dial."""
from __future__ import annotations

import collections
import contextlib
import dataclasses

import plotly.graph_objects as go

import visualize
from visualize.compare import TARGETS
from visualize.style import empty_figure, enlarge
from .. import analysis
from ..families import FAMILIES
from ..families.base import check_size
from .explore import MAX_EXPLORE_SIZE, QUICK_CELLS, _large_maps, budget_range, check_explore_size, check_seed

TARGET_KINDS = TARGETS  # gaussian, psd, minilm_query
TABLE_COLUMNS = ["family", "params", "hyperparameters", "rank", "displacement rank", "relative error"]
#: LDR's nearest member is fitted iteratively (L-BFGS): up to a budget of 32·n (displacement rank
#: 16 for one n × n tile) a fit takes about a second on a 2-core CPU, at rank 64 and above from
#: 20 s to minutes. Compare fits LDR up to this many parameters per row of the target.
LDR_BUDGET_PER_ROW = 32
#: The displacement-rank dial fits LDR maps of rank r = 1 … ``DIAL_MAX_R`` (one tile: 2·r·n
#: parameters, within ``LDR_BUDGET_PER_ROW``) to the top-left corner of at most ``DIAL_SIZE``
#: × ``DIAL_SIZE`` of the target: each fit takes a second or a few on a 2-core CPU.
DIAL_SIZE = 64
DIAL_MAX_R = LDR_BUDGET_PER_ROW // 2


@dataclasses.dataclass
class Comparison:
    """What the Compare tab shows for one target matrix."""

    curves: go.Figure
    rows: list[list]  # TABLE_COLUMNS, one row per family
    note: str  # what is left out or still being computed


def format_hparams(hparams: dict) -> str:
    """``{"block": 16, "r": 2}`` as ``"block=16, r=2"``."""
    return ", ".join(f"{k}={v}" for k, v in hparams.items())


def compare_budgets(n: int) -> list[int]:
    """Budgets of the approximation curves: 16, 64, 256, … (×4) up to the dense ``n²``, which
    ends the list.

    >>> compare_budgets(24)
    [16, 64, 256, 576]
    """
    budgets = [16]
    while budgets[-1] * 4 < n * n:
        budgets.append(budgets[-1] * 4)
    return budgets + [n * n] if n * n > budgets[-1] else budgets


def check_families(families) -> list[str]:
    """``families`` (None: all) as a list in the registry's order; ValueError for an unknown one or none."""
    if families is None:
        return list(FAMILIES)
    if isinstance(families, str) or not all(isinstance(f, str) for f in families):
        raise ValueError(f"families must be a list of family names, got {families!r}")
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise ValueError(f"unknown families {unknown}; known families: {', '.join(FAMILIES)}")
    if not families:
        raise ValueError("pick at least one family to compare")
    return [f for f in FAMILIES if f in families]


def compare_stages(kind: str, n: int, budget: int, seed: int = 0, families=None, *, large_text: bool = False,
                   max_size: int = MAX_EXPLORE_SIZE):
    """Yield the :class:`Comparison` for an ``n × n`` target: the relative error of the nearest
    member of every family in ``families`` (None: all) against budget, and a table of them at
    ``budget`` (marked on the curves).

    First without LDR (all the others take well under a second), then complete: LDR is fitted
    iteratively, and only up to ``LDR_BUDGET_PER_ROW · n`` parameters. Targets above
    ``QUICK_CELLS`` wait for other large work (``explore.LARGE_AT_ONCE``); sides above
    ``max_size`` are refused.
    """
    n, budget, seed = check_explore_size("n", n, max_size), check_size("budget", budget), check_seed(seed)
    families = check_families(families)
    style = enlarge if large_text else (lambda fig: fig)
    W = visualize.target_matrix(kind, n, seed)
    budgets, ldr_limit = compare_budgets(n), LDR_BUDGET_PER_ROW * n
    others = [f for f in families if f != "ldr"]
    with _large_maps if n * n > QUICK_CELLS else contextlib.nullcontext():
        curves = visualize.approximation_curves(W, budgets, families=others, mark_budget=budget)
        rows = _table_rows(W, budget, others)
    if "ldr" not in families:
        yield Comparison(style(curves), rows, _fits_note(families, n, budget, max_size))
        return
    fits = _fits_note(others, n, budget, max_size)
    yield Comparison(style(go.Figure(curves)), rows, " ".join(s for s in (fits, "ldr: fitting…") if s))
    with _large_maps if n * n > QUICK_CELLS else contextlib.nullcontext():
        complete = go.Figure(curves)
        complete.add_traces(visualize.approximation_curves(W, [b for b in budgets if b <= ldr_limit], ["ldr"]).data)
        if budget <= ldr_limit:
            rows = _table_rows(W, budget, families)
    note = (f"ldr is fitted iteratively and shown up to {ldr_limit:,} parameters "
            f"({LDR_BUDGET_PER_ROW}·n): larger fits take minutes on a CPU.")
    yield Comparison(style(complete), rows, " ".join(s for s in (_fits_note(families, n, budget, max_size), note) if s))


def compare(kind: str, n: int, budget: int, seed: int = 0, families=None, **options) -> Comparison:
    """The complete :class:`Comparison` (the last of :func:`compare_stages`)."""
    *_, complete = compare_stages(kind, n, budget, seed, families, **options)
    return complete


def _fits_note(families: list[str], n: int, budget: int, max_size: int = MAX_EXPLORE_SIZE) -> str:
    """Which of ``families`` the table budget is too small for, each with its smallest budget ("" if none).

    >>> _fits_note(["circulant", "dense"], 64, 512)
    'Not in the table (the table budget of 512 at 64 × 64 is below their smallest): dense 4,096.'
    """
    smallest = sorted((budget_range(f, n, n, max_size)[0], f) for f in families)
    short = [(low, f) for low, f in smallest if low > budget]
    needs = ", ".join(f"{f} {low:,}" for low, f in short)
    if not short:
        return ""
    if len(short) < len(families):
        return f"Not in the table (the table budget of {budget:,} at {n} × {n} is below their smallest): {needs}."
    return (f"**No family fits a budget of {budget:,} parameter{'s' * (budget != 1)} at {n} × {n}**, so the "
            f"table is empty. The smallest budget of each: {needs}. The curves start at each family's smallest; "
            f"a table budget of at least {short[0][0]:,} fills the table.")


def _table_rows(W, budget: int, families: list[str]) -> list[list]:
    return [[row["family"], row["params"], format_hparams(row["hparams"]), row["rank"],
             row["displacement_rank"], round(row["rel_error"], 4)]
            for row in visualize.approximation_table(W, budget, families)]


# -- the displacement-rank dial ------------------------------------------------------------------
@dataclasses.dataclass
class Dial:
    """The dial at one displacement rank: its figure, the operators, and a note."""

    figure: go.Figure
    operators: go.Figure
    note: str


#: The dial's fits, kept per target (most recent targets last) so that turning back is instant.
_dial_fits: collections.OrderedDict = collections.OrderedDict()
DIAL_TARGETS_KEPT = 16


def _dial_fits_of(kind: str, n: int, seed: int) -> dict:
    """The fits made so far for this target, by r (kept across calls)."""
    key = (kind, n, seed)
    fits = _dial_fits.setdefault(key, {})
    _dial_fits.move_to_end(key)
    while len(_dial_fits) > DIAL_TARGETS_KEPT:
        _dial_fits.popitem(last=False)
    return fits


def dial_stages(kind: str, n: int, seed: int, r: int, *, large_text: bool = False,
                max_size: int = MAX_EXPLORE_SIZE):
    """Yield the :class:`Dial` of the nearest LDR map ``Σ_{i≤r} C(g_i) S(h_i)`` (displacement rank
    ≤ r under (Z1, Z-1), one tile, ``2·r·n`` parameters: ``analysis.nearest``) to the target's
    top-left corner of at most ``DIAL_SIZE`` a side, for ``r`` in 1 … ``DIAL_MAX_R`` (and at most
    n/2, where it has the dense map's n² parameters): first a
    "fitting…" placeholder when this fit is new, then the figure with every fit made so far
    for this target (they are kept).

    >>> d = list(dial_stages("psd", 8, 0, 1))[-1]
    >>> d.figure.layout.title.text.startswith("Displacement rank r = 1")
    True
    """
    n, seed = check_explore_size("n", n, max_size), check_seed(seed)
    r = check_size("r", r)
    if r > DIAL_MAX_R:
        raise ValueError(f"the dial fits r = 1 … {DIAL_MAX_R} (2·r·n parameters; larger fits take minutes), got r = {r}")
    size = min(n, DIAL_SIZE)
    W = visualize.target_matrix(kind, size, seed)  # ValueError for an unknown target
    style = enlarge if large_text else (lambda fig: fig)
    notes = [f"the target's top-left {size} × {size} corner: the dial fits up to {DIAL_SIZE}" if size < n else ""]
    top = max(1, size // 2)  # 2·r·n parameters stay within the dense map's n²
    if r > top:
        notes.append(f"r = {r} would take more parameters than the dense {size} × {size} map: showing r = {top}")
        r = top
    note = "; ".join(s for s in notes if s)
    operators = style(visualize.operators_figure())
    fits = _dial_fits_of(kind, size, seed)
    if r not in fits:
        yield Dial(style(empty_figure("Displacement rank dial", f"fitting r = {r}…")), operators, note)
        fits[r] = analysis.nearest("ldr", W, 2 * r * size)
    m, err = fits[r]
    text = (f"The nearest map of displacement rank ≤ {r} to the target ({size} × {size}): {m.num_params:,} "
            f"parameters g_i, h_i, relative error {err:.4f}." + (f" Shown: {note}." if note else ""))
    yield Dial(style(visualize.dial_figure(W, dict(sorted(fits.items())), r, name="ldr")), operators, text)
