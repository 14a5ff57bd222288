"""The Explore tab's results: the most expressive member of a family within a budget, with its
heatmap, spectra, displacement and explanation, answered in stages for large maps.

>>> result = explore("circulant", 64, 64, budget=64, seed=0)
>>> result.config["hparams"], result.config["num_params"]
({'block': 64}, 64)
"""
from __future__ import annotations

import dataclasses

import plotly.graph_objects as go

import visualize
from visualize.style import empty_figure
from ..explain import describe
from ..families import family_class, from_budget
from ..families.base import check_size


#: Largest side the Explore and Compare tabs accept: every interaction up to it stays interactive.
MAX_EXPLORE_SIZE = 1024
#: Shift operators offered for the displacement ``A M − M B`` (``Z_f``: ones below the diagonal,
#: ``f`` in the top-right corner).
OPERATORS = ("Z1", "Z-1", "Z0")
#: Up to this many entries (128 × 128) a whole exploration takes ~0.05 s on a 2-core CPU; above,
#: the heatmap is shown first and the spectral plots follow as they are computed.
QUICK_CELLS = 128 * 128


def check_explore_size(name: str, value) -> int:
    value = check_size(name, value)
    if value > MAX_EXPLORE_SIZE:
        raise ValueError(f"{name} = {value} is larger than the explorer shows; use at most {MAX_EXPLORE_SIZE}")
    return value


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return seed


def budget_range(family: str, d_out: int, d_in: int) -> tuple[int, int]:
    """``(smallest budget a member of family fits, largest worth offering)`` for a d_out × d_in map.

    The largest is the dense map's ``d_out · d_in`` (or the smallest, when even that exceeds it).

    >>> budget_range("lowrank", 64, 32)
    (96, 2048)
    """
    cls = family_class(family)
    d_out, d_in = check_explore_size("d_out", d_out), check_explore_size("d_in", d_in)
    smallest = cls.count(d_out, d_in, **cls.smallest(d_out, d_in))
    return smallest, max(smallest, d_out * d_in)


def clamp_budget(family: str, d_out: int, d_in: int, budget) -> int:
    """``budget`` moved into :func:`budget_range` (a new family or size keeps the budget if it can)."""
    low, high = budget_range(family, d_out, d_in)
    return low if budget is None else max(low, min(high, int(budget)))


@dataclasses.dataclass
class Exploration:
    """Everything the Explore tab shows for one member of a family."""

    config: dict  # family, shape, hparams, num_params, budget, smallest_budget, dense_params
    heatmap: go.Figure
    spectrum: go.Figure
    eigenvalues: go.Figure | None  # None: the map is not square
    displacement: go.Figure
    explanation: str
    complete: bool = True  # False: some figures are "computing…" placeholders (a later stage follows)


def explore_stages(family: str, d_out: int, d_in: int, budget: int, seed: int = 0,
                   A: str = "Z1", B: str = "Z-1"):
    """Yield the :class:`Exploration` of the most expressive random member of ``family`` within
    ``budget`` (``from_budget``, in float64 so that its structure is exact at float64's
    precision); its spectrum overlays LoRA (lowrank) at the same budget when that fits.

    A map of more than ``QUICK_CELLS`` entries is yielded in three stages, each with the figures
    computed so far and "computing…" placeholders for the rest: first the configuration,
    heatmap and explanation (the page answers at once: ≤ 0.2 s at 1024 × 1024 on a 2-core
    CPU), then the singular values and displacement (structure-aware: FFTs, small cores, random
    sketches of low-rank residuals; a dense SVD only where no structure helps), last the
    eigenvalues (a dense ``eigvals`` for families without an eigen-structure: ~1.7 s at 1024).
    Later stages reuse the earlier figures (the same objects), so a caller can skip resending
    them; the last is ``complete``.
    """
    d_out, d_in = check_explore_size("d_out", d_out), check_explore_size("d_in", d_in)
    seed = check_seed(seed)
    for name, op in (("A", A), ("B", B)):
        if op not in OPERATORS:
            raise ValueError(f"displacement operator {name} must be one of {', '.join(OPERATORS)}, got {op!r}")
    m = from_budget(family, d_out, d_in, budget, init="random", seed=seed).double()
    overlay = {family: m}
    if family != "lowrank" and budget >= budget_range("lowrank", d_out, d_in)[0]:
        overlay["lowrank (LoRA)"] = from_budget("lowrank", d_out, d_in, budget, init="random", seed=seed).double()
    config = {
        "family": family, "shape": [d_out, d_in], "hparams": dict(m.hparams),
        "num_params": m.num_params, "budget": int(budget),
        "smallest_budget": budget_range(family, d_out, d_in)[0], "dense_params": d_out * d_in,
    }
    result = Exploration(config, visualize.heatmap(m), spectrum=None, eigenvalues=None, displacement=None,
                         explanation=describe(family), complete=False)
    square, staged = d_out == d_in, d_out * d_in > QUICK_CELLS
    if staged:
        result = dataclasses.replace(
            result, spectrum=empty_figure("Singular values", "computing…"),
            eigenvalues=empty_figure("Eigenvalues", "computing…") if square else None,
            displacement=empty_figure("Displacement", "computing…"))
        yield result
    result = dataclasses.replace(result, spectrum=visualize.spectrum(overlay),
                                 displacement=visualize.displacement_figure(m, A=A, B=B), complete=not square)
    if staged and square:
        yield result
    if square:
        result = dataclasses.replace(result, eigenvalues=visualize.eigenvalue_plot(m), complete=True)
    yield result


def explore(family: str, d_out: int, d_in: int, budget: int, seed: int = 0,
            A: str = "Z1", B: str = "Z-1") -> Exploration:
    """The complete :class:`Exploration` (the last of :func:`explore_stages`)."""
    *_, complete = explore_stages(family, d_out, d_in, budget, seed, A, B)
    return complete

