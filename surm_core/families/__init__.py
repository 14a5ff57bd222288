"""The structured-matrix families, by name, the two ways to build one, and how to add one."""
from __future__ import annotations

import torch

from .base import StructuredMatrix, check_size
from .circulant import CirculantMatrix
from .dense import DenseMatrix
from .kronecker import KroneckerMatrix
from .ldr import LDRMatrix
from .lowrank import LowRankMatrix
from .monarch import MonarchMatrix
from .toeplitz import SymmetricToeplitzMatrix, ToeplitzMatrix

FAMILIES: dict[str, type[StructuredMatrix]] = {
    cls.family: cls
    for cls in (
        DenseMatrix,
        LowRankMatrix,
        CirculantMatrix,
        ToeplitzMatrix,
        SymmetricToeplitzMatrix,
        KroneckerMatrix,
        LDRMatrix,
        MonarchMatrix,
    )
}


#: What a family class must define itself (the rest of the contract has defaults in ``base``).
REQUIRED = ("forward", "to_dense", "count", "candidates", "smallest")


def register_family(cls: type[StructuredMatrix]) -> type[StructuredMatrix]:
    """Add a family defined outside ``surm_core`` (a :class:`StructuredMatrix` subclass following
    ``surm_core.families.base``'s contract) under ``cls.family``; returns ``cls`` (so it works as
    a class decorator). From then on ``make``, ``from_budget``, adapters (``inject``, ``merge``,
    ``save_adapter``/``load_adapter``), ``analysis``, the figures and the Explore session accept
    it by name.

    The class is checked first: a ``ValueError`` says what is missing or wrong (not a subclass,
    no or a taken ``family`` name, a required method not defined, or a small member whose
    ``forward``, ``to_dense`` or ``count`` disagree).

    >>> class Diagonal(StructuredMatrix): ...  # doctest: +SKIP
    >>> register_family(Diagonal)              # doctest: +SKIP
    """
    if not (isinstance(cls, type) and issubclass(cls, StructuredMatrix)):
        raise ValueError(f"register_family expects a subclass of surm_core.StructuredMatrix, got {cls!r}")
    name = cls.family
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{cls.__name__} must set the class attribute family to a non-empty name, got {name!r}")
    if name in FAMILIES:
        raise ValueError(f"a family named {name!r} is already registered ({FAMILIES[name].__name__})")
    own = cls.__mro__[: cls.__mro__.index(StructuredMatrix)]  # the classes between it and the base
    missing = [m for m in REQUIRED if not any(m in k.__dict__ for k in own)]
    if missing:
        raise ValueError(
            f"{cls.__name__} does not define {', '.join(missing)}; a family needs "
            f"{', '.join(REQUIRED)} (see surm_core.families.base)"
        )
    _check_member(cls)
    FAMILIES[name] = cls
    return cls


def _check_member(cls) -> None:
    """Build the smallest 4 × 6 member and check its forward, to_dense and count agree."""
    d_out, d_in = 4, 6
    try:
        hp = cls.smallest(d_out, d_in)
        m = cls(d_out, d_in, init="random", seed=0, **hp).double()
        dense = m.to_dense()
        x = torch.randn(3, d_in, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        y = m(x)
        count = cls.count(d_out, d_in, **hp)
    except Exception as e:
        raise ValueError(f"family {cls.family!r} failed its check (a random {d_out}×{d_in} member "
                         f"from smallest()): {type(e).__name__}: {e}") from e
    problems = []
    if tuple(dense.shape) != (d_out, d_in):
        problems.append(f"to_dense() has shape {tuple(dense.shape)}")
    elif tuple(y.shape) != (3, d_out) or not torch.allclose(y, x @ dense.T, atol=1e-10):
        problems.append("forward(x) differs from x @ to_dense().T")
    if count != m.num_params:
        problems.append(f"count() says {count} parameters, the module has {m.num_params}")
    if problems:
        raise ValueError(f"family {cls.family!r} failed its check on a random {d_out}×{d_in} member: "
                         + "; ".join(problems))


def family_class(family: str) -> type[StructuredMatrix]:
    try:
        return FAMILIES[family]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown family {family!r}; known families: {', '.join(FAMILIES)}"
        ) from None


def make(family: str, d_out: int, d_in: int, init: str = "zero", seed: int | None = None, **hparams):
    """Build the ``d_out × d_in`` structured map ΔW of ``family``.

    ``init="zero"`` gives ΔW = 0 with nonzero gradients (an adapter's start); ``"random"`` a
    reproducible random member (same ``seed``, same matrix). ``hparams`` are the family's
    (``r``, ``alpha`` for lowrank; ``block`` for the FFT families, plus ``r`` for ldr;
    ``a_shape``/``b_shape`` for kronecker; ``nblocks``, ``blk_r``, ``square`` for monarch).

    >>> make("circulant", 4, 4, init="random", seed=0).num_params
    4
    """
    cls = family_class(family)
    d_out, d_in = check_size("d_out", d_out), check_size("d_in", d_in)
    return cls(d_out, d_in, init=init, seed=seed, **hparams)


def from_budget(family: str, d_out: int, d_in: int, budget: int, init: str = "zero", seed: int | None = None):
    """The most expressive member of ``family`` with at most ``budget`` trainable parameters.

    "Most expressive" is the same rule for every family: the most parameters that fit, then the
    highest rank a member can reach, then a family's own tie-break (larger tiles for the FFT
    families, the balanced split for kronecker, 4 blocks for monarch, as MoRe recommends). So
    lowrank picks the largest rank, the FFT families the smallest tile (and ldr the largest
    displacement rank per tile), kronecker the largest factors, monarch the largest ``blk_r`` and
    then the most blocks it allows (``blk_r = in_blk``, full rank, where MoRe's 4 blocks reach
    rank ``4·blk_r`` with the same count; ask for ``nblocks=4`` explicitly to get MoRe's shape).

    Raises ``ValueError`` naming the smallest budget that fits when none does.

    >>> from_budget("lowrank", 64, 64, 1000).hparams["r"]
    7
    """
    cls = family_class(family)
    d_out, d_in = check_size("d_out", d_out), check_size("d_in", d_in)
    budget = check_size("budget", budget)
    best = cls.best_within(d_out, d_in, min(budget, cls.max_params(d_out, d_in)))
    if best is None:
        smallest = cls.count(d_out, d_in, **cls.smallest(d_out, d_in))
        raise ValueError(
            f"a budget of {budget} parameters is too small for a {family} map of shape "
            f"({d_out}, {d_in}); the smallest needs {smallest}"
        )
    return cls(d_out, d_in, init=init, seed=seed, **best)


__all__ = ["FAMILIES", "StructuredMatrix", "make", "from_budget", "family_class", "register_family"]
