"""The structured-matrix families, by name, and the two ways to build one."""
from __future__ import annotations

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
    best, best_key = None, None
    for hp in cls.candidates(d_out, d_in, budget):
        n = cls.count(d_out, d_in, **hp)
        if n > budget:
            continue
        key = (n, cls.rank_bound(d_out, d_in, **hp), cls.preference(d_out, d_in, **hp))
        if best_key is None or key > best_key:
            best, best_key = hp, key
    if best is None:
        smallest = cls.count(d_out, d_in, **cls.smallest(d_out, d_in))
        raise ValueError(
            f"a budget of {budget} parameters is too small for a {family} map of shape "
            f"({d_out}, {d_in}); the smallest needs {smallest}"
        )
    return cls(d_out, d_in, init=init, seed=seed, **best)


__all__ = ["FAMILIES", "StructuredMatrix", "make", "from_budget", "family_class"]
