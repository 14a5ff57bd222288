"""The Explore tab's results: the most expressive member of a family within a budget, with its
heatmap, parameters, spectra, displacement and explanation, answered in stages for large maps.

>>> result = explore("circulant", 64, 64, budget=64, seed=0)
>>> result.config["hparams"], result.config["num_params"]
({'block': 64}, 64)
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import threading

import plotly.graph_objects as go

import visualize
from visualize.style import empty_figure, enlarge
from ..explain import describe
from ..families import family_class, from_budget
from ..families.base import check_size


#: Largest side the Explore and Compare tabs accept by default (``python app.py --max-map``):
#: every interaction up to it stays interactive, within ``explore_cost``'s memory and time.
MAX_EXPLORE_SIZE = 1024
#: Shift operators offered for the displacement ``A M − M B`` (``Z_f``: ones below the diagonal,
#: ``f`` in the top-right corner).
OPERATORS = ("Z1", "Z-1", "Z0")
#: Up to this many entries (128 × 128) a whole exploration takes ~0.05 s on a 2-core CPU; above,
#: the first figures are shown at once and the spectral plots follow as they are computed.
QUICK_CELLS = 128 * 128
#: Positions of the budget slider, spread evenly over log(budget) from a family's smallest
#: budget to the dense map's (budgets span up to six decades; a linear slider crowds them).
SLIDER_STEPS = 1000
#: Maps above ``QUICK_CELLS`` are computed this many at a time, across every visitor of the page,
#: in a queue of their own: small maps never wait behind them, and memory stays bounded.
LARGE_AT_ONCE = 1
_large_maps = threading.BoundedSemaphore(LARGE_AT_ONCE)

#: Peak extra memory of an exploration, in float64 copies of the dense map (the map, its
#: displacement, SVD and eigenvalue workspaces: 56–127 MiB measured at 1024 × 1024 for dense,
#: Toeplitz, Monarch and LDR, as the peak resident size of one exploration in a fresh process),
#: and seconds per d_out·d_in·min(d_out, d_in) of its O(n³) parts on a 2-core CPU
#: (``benchmarks/bench_explore.py`` prints both beside the times it measures).
DENSE_COPIES = 16
SECONDS_PER_CUBE = 2.5e-9


@dataclasses.dataclass(frozen=True)
class ExploreCost:
    """What exploring a map costs at most: peak extra memory and seconds of computing."""

    bytes: int
    seconds: float

    def __str__(self) -> str:
        return f"about {self.bytes / 2**30:.1f} GiB and {self.seconds:.0f} s"


def explore_cost(d_out: int, d_in: int) -> ExploreCost:
    """An upper estimate of what exploring a ``d_out × d_in`` map costs on a 2-core CPU.

    >>> print(explore_cost(1024, 1024))
    about 0.1 GiB and 3 s
    """
    return ExploreCost(DENSE_COPIES * 8 * d_out * d_in, SECONDS_PER_CUBE * d_out * d_in * min(d_out, d_in))


def check_explore_size(name: str, value, max_size: int = MAX_EXPLORE_SIZE) -> int:
    value = check_size(name, value)
    if value > max_size:
        raise ValueError(f"{name} = {value} is larger than the explorer shows: this server explores maps of "
                         f"at most {max_size} a side (its --max-map); a {value} × {value} map would take "
                         f"{explore_cost(value, value)}")
    return value


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return seed


def check_operator(name: str, op) -> str:
    if op not in OPERATORS:
        raise ValueError(f"displacement operator {name} must be one of {', '.join(OPERATORS)}, got {op!r}")
    return op


def budget_range(family: str, d_out: int, d_in: int, max_size: int = MAX_EXPLORE_SIZE) -> tuple[int, int]:
    """``(smallest budget a member of family fits, largest worth offering)`` for a d_out × d_in map.

    The largest is the dense map's ``d_out · d_in`` (or the smallest, when even that exceeds it).

    >>> budget_range("lowrank", 64, 32)
    (96, 2048)
    """
    cls = family_class(family)
    d_out, d_in = check_explore_size("d_out", d_out, max_size), check_explore_size("d_in", d_in, max_size)
    smallest = cls.count(d_out, d_in, **cls.smallest(d_out, d_in))
    return smallest, max(smallest, d_out * d_in)


def clamp_budget(family: str, d_out: int, d_in: int, budget, max_size: int = MAX_EXPLORE_SIZE) -> int:
    """``budget`` moved into :func:`budget_range` (None: the family's smallest)."""
    low, high = budget_range(family, d_out, d_in, max_size)
    return low if budget is None else max(low, min(high, int(budget)))


def budget_note(family: str, d_out: int, d_in: int, budget, max_size: int = MAX_EXPLORE_SIZE) -> str:
    """What :func:`clamp_budget` changed, in words ("" when nothing).

    >>> budget_note("circulant", 64, 64, 10)
    "budget 10 is below circulant's smallest (64): showing 64"
    """
    low, high = budget_range(family, d_out, d_in, max_size)
    if budget is None:  # a new family, or a link without a budget: its smallest, nothing to say
        return ""
    if budget < low:
        return f"budget {budget:,} is below {family}'s smallest ({low:,}): showing {low:,}"
    if budget > high:
        return f"budget {budget:,} is above the dense map's {high:,} parameters: showing {high:,}"
    return ""


def slider_position(budget: int, low: int, high: int) -> int:
    """Where ``budget`` sits on the budget slider (0 … ``SLIDER_STEPS``, log-spaced from low to high).

    >>> slider_position(64, 64, 4096), slider_position(512, 64, 4096), slider_position(4096, 64, 4096)
    (0, 500, 1000)
    """
    if high <= low:
        return 0
    budget = max(low, min(high, budget))
    return round(SLIDER_STEPS * math.log(budget / low) / math.log(high / low))


def slider_budget(position, low: int, high: int) -> int:
    """The budget at a slider position (the inverse of :func:`slider_position`, rounded).

    >>> slider_budget(500, 64, 4096)
    512
    """
    position = max(0, min(SLIDER_STEPS, float(position)))
    return max(low, min(high, round(low * (high / low) ** (position / SLIDER_STEPS))))


@dataclasses.dataclass
class Exploration:
    """Everything the Explore tab shows for one member of a family."""

    config: dict  # family, shape, hparams, num_params, budget, smallest_budget, dense_params
    heatmap: go.Figure
    parameters: go.Figure  # the family's own parameters, beside ΔW
    spectrum: go.Figure
    eigenvalues: go.Figure  # no data (and the reason) for a rectangular map
    displacement: go.Figure
    explanation: str  # the family (``describe``)
    note: str  # what is shown: the configuration, its tiling, a budget that was moved into range
    complete: bool = True  # False: some figures are placeholders or estimates (a later stage follows)
    estimates: tuple = ()  # the figures that show estimates ("spectrum", "displacement", "eigenvalues")


def explore_stages(family: str, d_out: int, d_in: int, budget: int, seed: int = 0,
                   A: str = "Z1", B: str = "Z-1", *, clamp: bool = False, large_text: bool = False,
                   max_size: int = MAX_EXPLORE_SIZE):
    """Yield the :class:`Exploration` of the most expressive random member of ``family`` within
    ``budget`` (``from_budget``, in float64 so that its structure is exact at float64's
    precision); its spectrum overlays LoRA (lowrank) at the same budget when that fits.

    ``clamp``: a budget outside :func:`budget_range` is moved into it and the note says so (the
    page); otherwise it is a ``ValueError`` (the API). ``large_text``: figures with larger fonts
    (a projector). Sides above ``max_size`` are refused, with :func:`explore_cost`'s cost.

    A map of more than ``QUICK_CELLS`` entries is yielded in stages: first the configuration,
    heatmap, parameters and explanation, with "computing…" placeholders for the rest (the page
    answers at once); then every figure, exact where structure makes it cheap (FFTs, small cores,
    random sketches of low-rank residuals) and otherwise an *estimate* that says so (the top
    singular values by a randomized SVD, Ritz values for eigenvalues: tens of milliseconds at
    1024 × 1024); then the exact singular values and displacement in place of their estimates
    (a dense SVD), last the exact eigenvalues (a dense ``eigvals``). ``estimates`` names the
    figures still estimated. Such maps wait for each other (``LARGE_AT_ONCE``), small ones never
    do. Later stages reuse the earlier figures (the same objects), so a caller can skip
    resending them; the last is ``complete``.
    """
    d_out, d_in = check_explore_size("d_out", d_out, max_size), check_explore_size("d_in", d_in, max_size)
    seed, A, B = check_seed(seed), check_operator("A", A), check_operator("B", B)
    note = ""
    if clamp:
        budget = check_size("budget", budget) if budget is not None else None
        note = budget_note(family, d_out, d_in, budget, max_size)
        budget = clamp_budget(family, d_out, d_in, budget, max_size)
    style = enlarge if large_text else (lambda fig: fig)
    square, staged = d_out == d_in, d_out * d_in > QUICK_CELLS
    queue = _large_maps if staged else contextlib.nullcontext()
    with queue:
        m = from_budget(family, d_out, d_in, budget, init="random", seed=seed).double()
        heatmap, parameters = style(visualize.heatmap(m)), style(visualize.parameter_figure(m))
    low = budget_range(family, d_out, d_in, max_size)[0]
    config = {
        "family": family, "shape": [d_out, d_in], "hparams": dict(m.hparams),
        "num_params": m.num_params, "budget": int(budget), "smallest_budget": low, "dense_params": d_out * d_in,
    }
    shown = [f"**Shown:** {family} {d_out} × {d_in}, {m.num_params:,} parameters "
             f"({', '.join(f'{k} = {v}' for k, v in m.hparams.items()) or 'every entry'}).", m.layout_note()]
    if note:
        shown.insert(0, f"**Note:** {note}.")
    result = Exploration(config, heatmap, parameters,
                         spectrum=None, eigenvalues=None, displacement=None, explanation=describe(family),
                         note=" ".join(s for s in shown if s), complete=False)
    if not square:
        result.eigenvalues = style(visualize.no_eigenvalues_figure(d_out, d_in))
    if staged:
        result = dataclasses.replace(
            result, spectrum=style(empty_figure("Singular values", "computing…")),
            eigenvalues=result.eigenvalues or style(empty_figure("Eigenvalues", f"computing… ({_eigen_cost(m)})")),
            displacement=style(empty_figure("Displacement", "computing…")))
        yield result
    with queue:
        overlay = {family: m}
        if family != "lowrank" and budget >= budget_range("lowrank", d_out, d_in, max_size)[0]:
            overlay["lowrank (LoRA)"] = from_budget("lowrank", d_out, d_in, budget, init="random", seed=seed).double()
        # a large map shows estimates where the exact values need a dense O(n³) decomposition
        figures = {"spectrum": style(visualize.spectrum(overlay, estimate=staged)),
                   "displacement": style(visualize.displacement_figure(m, A=A, B=B, estimate=staged))}
        if square:
            figures["eigenvalues"] = style(visualize.eigenvalue_plot(m, estimate=staged))
        estimates = tuple(name for name, fig in figures.items() if visualize.is_estimate(fig))
        result = dataclasses.replace(result, **figures, estimates=estimates, complete=not estimates)
    yield result
    if "spectrum" in estimates or "displacement" in estimates:
        with queue:
            figures = {}
            if "spectrum" in estimates:
                figures["spectrum"] = style(visualize.spectrum(overlay))
            if "displacement" in estimates:
                figures["displacement"] = style(visualize.displacement_figure(m, A=A, B=B))
            left = tuple(name for name in estimates if name not in figures)
            result = dataclasses.replace(result, **figures, estimates=left, complete=not left)
        yield result
    if "eigenvalues" in estimates:
        with queue:
            result = dataclasses.replace(result, eigenvalues=style(visualize.eigenvalue_plot(m)), estimates=(),
                                         complete=True)
        yield result


def _eigen_cost(m) -> str:
    seconds = explore_cost(*m.shape).seconds
    return f"up to ~{seconds:.0f} s on a 2-core CPU" if seconds >= 1 else "under a second"


def explore(family: str, d_out: int, d_in: int, budget: int, seed: int = 0,
            A: str = "Z1", B: str = "Z-1", **options) -> Exploration:
    """The complete :class:`Exploration` (the last of :func:`explore_stages`)."""
    *_, complete = explore_stages(family, d_out, d_in, budget, seed, A, B, **options)
    return complete
