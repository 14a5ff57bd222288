"""The Compare tab's results: how well each family's nearest member approximates a target matrix
as the budget grows, and a table of the families at one budget."""
from __future__ import annotations

import dataclasses

import plotly.graph_objects as go

import visualize
from visualize.compare import TARGETS
from ..families import FAMILIES
from ..families.base import check_size
from .explore import check_explore_size, check_seed

TARGET_KINDS = TARGETS  # gaussian, psd, minilm_query
TABLE_COLUMNS = ["family", "params", "hyperparameters", "rank", "displacement rank", "relative error"]
#: LDR's nearest member is fitted iteratively (L-BFGS): up to a budget of 32·n (displacement rank
#: 16 for one n × n tile) a fit takes about a second on a 2-core CPU, at rank 64 and above from
#: 20 s to minutes. Compare fits LDR up to this many parameters per row of the target.
LDR_BUDGET_PER_ROW = 32


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


def compare_stages(kind: str, n: int, budget: int, seed: int = 0):
    """Yield the :class:`Comparison` for an ``n × n`` target: the relative error of every
    family's nearest member against budget, and a table of the families at ``budget``.

    First without LDR (all the others take well under a second), then complete: LDR is fitted
    iteratively, and only up to ``LDR_BUDGET_PER_ROW · n`` parameters.
    """
    n, budget, seed = check_explore_size("n", n), check_size("budget", budget), check_seed(seed)
    W = visualize.target_matrix(kind, n, seed)
    budgets, ldr_limit = compare_budgets(n), LDR_BUDGET_PER_ROW * n
    others = [f for f in FAMILIES if f != "ldr"]
    curves = visualize.approximation_curves(W, budgets, families=others)
    yield Comparison(curves, _table_rows(W, budget, others), "ldr: fitting…")
    complete = go.Figure(curves)
    complete.add_traces(visualize.approximation_curves(W, [b for b in budgets if b <= ldr_limit], ["ldr"]).data)
    note = (f"ldr is fitted iteratively and shown up to {ldr_limit:,} parameters "
            f"({LDR_BUDGET_PER_ROW}·n): larger fits take minutes on a CPU.")
    families = list(FAMILIES) if budget <= ldr_limit else others
    yield Comparison(complete, _table_rows(W, budget, families), note)


def compare(kind: str, n: int, budget: int, seed: int = 0) -> Comparison:
    """The complete :class:`Comparison` (the last of :func:`compare_stages`)."""
    *_, complete = compare_stages(kind, n, budget, seed)
    return complete


def _table_rows(W, budget: int, families: list[str]) -> list[list]:
    return [[row["family"], row["params"], format_hparams(row["hparams"]), row["rank"],
             row["displacement_rank"], round(row["rel_error"], 4)]
            for row in visualize.approximation_table(W, budget, families)]

