"""Spectra, ranks, displacement structure and nearest members of any structured family.

Every function takes a family module (``surm_core.make`` / ``from_budget``) or a 2-D tensor or
ndarray of finite numbers, and computes in float64 on the CPU. Where a family's structure gives an
answer without the dense matrix (its optional ``singular_values``, ``eigenvalues`` and
``project`` methods, see ``surm_core.families.base``), that is the way it is computed; the
generic fallbacks here work for every family, including ones added with
``surm_core.register_family``.
"""
from __future__ import annotations

import copy
import math
import re

import numpy as np
import scipy.sparse.linalg
import torch

from .families import StructuredMatrix, from_budget
from .families.base import lbfgs_best

#: Above this largest side, ``singular_values(m, k)`` runs an iterative solver on the fast forward
#: instead of a dense SVD.
ITERATIVE_ABOVE = 2048
#: L-BFGS iterations of :func:`nearest`'s fit for a family without a closed-form ``project``.
FIT_STEPS = 200


# -- inputs ------------------------------------------------------------------------------------
def _shape(M) -> tuple[int, int]:
    return M.shape if isinstance(M, StructuredMatrix) else tuple(_dense(M).shape)


def _dense(M) -> torch.Tensor:
    """M as a float64 CPU matrix (a module's ``to_dense()``); ValueError unless it is 2-D and finite."""
    if isinstance(M, StructuredMatrix):
        _check_parameters(M)
        with torch.no_grad():
            return M.to_dense().to("cpu", torch.float64)
    if isinstance(M, torch.Tensor):
        X = M.detach().to("cpu", torch.float64)
    else:
        try:
            X = torch.from_numpy(np.asarray(M, dtype=np.float64))
        except (TypeError, ValueError):
            raise ValueError(f"expected a matrix of numbers, got {type(M).__name__}") from None
    if X.ndim != 2:
        raise ValueError(f"expected a matrix (2-D), got shape {tuple(X.shape)}")
    if not bool(torch.isfinite(X).all()):
        raise ValueError(f"the matrix holds {_nonfinite(X)}; every entry must be a finite number")
    return X


def _nonfinite(X: torch.Tensor) -> str:
    """'3 NaN and 1 infinite entries' (what a finiteness error names)."""
    nan, inf = int(torch.isnan(X).sum()), int(torch.isinf(X).sum())
    parts = [f"{nan} NaN"] * bool(nan) + [f"{inf} infinite"] * bool(inf)
    return " and ".join(parts) + " entries"


def _check_parameters(M: StructuredMatrix) -> None:
    """ValueError unless the module's parameters are finite (a matrix is checked by _dense)."""
    for name, p in M.named_parameters():
        if not bool(torch.isfinite(p).all()):
            raise ValueError(f"the {M.family} map's parameter {name} holds {_nonfinite(p.detach())}; "
                             f"every entry must be a finite number")


def _eps(M) -> float:
    """Machine epsilon of M's floating dtype (float64 for integer input)."""
    if isinstance(M, StructuredMatrix):
        dtype = next(M.parameters()).dtype
    elif isinstance(M, torch.Tensor):
        dtype = M.dtype
    else:
        dtype = torch.from_numpy(np.zeros(0, dtype=np.asarray(M).dtype)).dtype
    return torch.finfo(dtype if dtype.is_floating_point else torch.float64).eps


def _descending(values: torch.Tensor, count: int) -> torch.Tensor:
    """``values`` sorted descending, padded with zeros (or cut) to ``count``."""
    values = values.sort(descending=True).values[:count]
    return torch.cat([values, values.new_zeros(count - values.numel())])


# -- spectra and ranks ---------------------------------------------------------------------------
def singular_values(M, k: int | None = None) -> torch.Tensor:
    """Singular values σ_1 ≥ σ_2 ≥ … of M (all ``min(d_out, d_in)`` of them, or the top ``k``).

    Structure first: a module's own ``singular_values()`` (for example the moduli of a
    convolution kernel's FFT, all products of two factors' singular values, or those of a small
    core of a product of thin factors).
    Otherwise a dense SVD — of a ``LOW_RANK_SKETCH × d_in`` matrix when a random sketch shows M's
    numerical rank is below that (then the values under round-off are returned as 0) — except
    above ``ITERATIVE_ABOVE`` on a side with ``k`` given (``k < min(d_out, d_in)``): then scipy's
    ``svds`` drives the module's fast ``forward`` and its adjoint (a matrix is applied as is),
    never forming the dense matrix. Without ``k`` a large unstructured M is decomposed densely,
    which may be slow.

    Returns a float64 tensor, descending.

    >>> singular_values(torch.tensor([[3.0, 0.0], [0.0, -4.0]]))
    tensor([4., 3.], dtype=torch.float64)
    """
    d_out, d_in = _shape(M)
    count = min(d_out, d_in)
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= count:
            raise ValueError(f"k must be an integer in [1, {count}] for a {d_out} × {d_in} map, got {k!r}")
        count = int(k)
    s = None
    if isinstance(M, StructuredMatrix):
        _check_parameters(M)
        s = M.singular_values()
    if s is None and k is not None and max(d_out, d_in) > ITERATIVE_ABOVE and k < min(d_out, d_in):
        s = _top_singular_values(M, k)
    elif s is None:
        X = _dense(M)
        s = _low_rank_singular_values(X)
        if s is None:
            s = torch.linalg.svdvals(X)
    return _descending(s, count)


#: A family's own spectra decompose blocks that grow with its parameters; with more than this
#: fraction of the dense map's count (1 × 1 tiles of a tiled family, a rank of n/2) they cost
#: about what the dense decomposition costs, and the ``cheap_*`` functions do not take them.
CHEAP_STRUCTURE_FRACTION = 1 / 16


def _structure_is_cheap(M) -> bool:
    return isinstance(M, StructuredMatrix) and M.num_params <= CHEAP_STRUCTURE_FRACTION * M.d_out * M.d_in


def cheap_singular_values(M) -> torch.Tensor | None:
    """All singular values of M, as :func:`singular_values` gives them, when that needs no dense
    SVD (the map's own ``singular_values()`` while it has at most ``CHEAP_STRUCTURE_FRACTION`` of
    the dense count of parameters, or a low-rank sketch that holds M); else None.

    >>> s = cheap_singular_values(torch.ones(200, 200))  # rank 1: a sketch holds it
    >>> round(float(s[0]), 6), float(s[1:].abs().max()) < 1e-12
    (200.0, True)
    >>> cheap_singular_values(torch.eye(200)) is None
    True
    """
    count = min(_shape(M))
    if _structure_is_cheap(M):
        _check_parameters(M)
        s = M.singular_values()
        if s is not None:
            return _descending(s, count)
    s = _low_rank_singular_values(_dense(M))
    return None if s is None else _descending(s, count)


#: Columns of the random sketch that :func:`singular_values` tries first on a dense matrix.
LOW_RANK_SKETCH = 64


def _low_rank_singular_values(X: torch.Tensor) -> torch.Tensor | None:
    """The singular values of X from the range of a random sketch ``X Ω`` when that range holds
    X up to round-off (X's numerical rank is below ``LOW_RANK_SKETCH``), else None.

    Then ``‖X − Q (Qᵀ X)‖_F ≤ ½·max(rows, cols)·eps·σ_1`` (checked): the spectrum is that of the
    small ``Qᵀ X``, and what it leaves out (returned as 0) lies below half of numpy's default rank
    threshold. Costs two thin products, against the ``O(n³)`` dense SVD it replaces
    (displacement residuals of the FFT families have rank ≤ 2r).
    """
    rows, cols = X.shape
    if min(rows, cols) <= 2 * LOW_RANK_SKETCH:
        return None
    omega = torch.randn(cols, LOW_RANK_SKETCH, dtype=X.dtype, generator=torch.Generator().manual_seed(0))
    Q = torch.linalg.qr(X @ omega).Q
    core = Q.T @ X
    s = torch.linalg.svdvals(core)
    if s[0] == 0 or s[-1] > s[0] * 1e-3:  # sketch is (nearly) full: X has a larger rank
        return None
    if (X - Q @ core).norm() > 0.5 * max(rows, cols) * torch.finfo(X.dtype).eps * s[0]:
        return None
    return s


def _top_singular_values(M, k: int) -> torch.Tensor:
    """Top-k singular values by ARPACK on a LinearOperator (fixed start vector: reproducible)."""
    if isinstance(M, StructuredMatrix):
        m = copy.deepcopy(M).to("cpu", torch.float64).requires_grad_(False)

        def matmat(X):
            with torch.no_grad():
                return m(torch.from_numpy(np.ascontiguousarray(X.T))).T.numpy()

        def rmatmat(Y):
            # m is linear, so the vector-Jacobian product at any input is the adjoint Mᵀ y
            x = torch.zeros(Y.shape[1], m.d_in, dtype=torch.float64, requires_grad=True)
            (adjoint,) = torch.autograd.grad(m(x), x, torch.from_numpy(np.ascontiguousarray(Y.T)))
            return adjoint.T.numpy()

        op = scipy.sparse.linalg.LinearOperator(
            m.shape, dtype=np.float64,
            matvec=lambda x: matmat(x.reshape(-1, 1)).ravel(), matmat=matmat,
            rmatvec=lambda y: rmatmat(y.reshape(-1, 1)).ravel(), rmatmat=rmatmat,
        )
    else:
        op = scipy.sparse.linalg.aslinearoperator(_dense(M).numpy())
    v0 = np.random.default_rng(0).standard_normal(min(op.shape))
    s = scipy.sparse.linalg.svds(op, k=k, v0=v0, return_singular_vectors=False)
    return torch.from_numpy(np.ascontiguousarray(s))


#: What the estimates cost: the top ``ESTIMATE_K`` singular values by a randomized SVD with
#: ``ESTIMATE_POWER_STEPS`` power iterations, and ``ARNOLDI_STEPS`` Ritz values for eigenvalues.
#: Each takes tens of milliseconds at 1024 × 1024 on a 2-core CPU, against 0.3 s (SVD) and
#: 1.5 s (eigenvalues) for the exact dense decompositions.
ESTIMATE_K = 32
ESTIMATE_POWER_STEPS = 4
ARNOLDI_STEPS = 64


def estimate_singular_values(M, k: int = ESTIMATE_K) -> torch.Tensor:
    """An estimate of the top ``k`` singular values of M (at most ``min(d_out, d_in)``), descending,
    in O(d_out·d_in·k): ``torch.svd_lowrank`` (a randomized range finder, ``k + 16`` columns,
    ``ESTIMATE_POWER_STEPS`` power iterations, fixed seed).

    Each estimate is at most its true value (σ_i(Qᵀ M) ≤ σ_i(M)); the error is largest for a
    flat spectrum: on a random Gaussian 512 × 512 matrix every one of the top 32 lies within 3%
    of σ_1 of the true value (tests), and a decaying spectrum is found much closer.

    >>> estimate_singular_values(torch.diag(0.5 ** torch.arange(100.0)), k=3).round(decimals=6)
    tensor([1.0000, 0.5000, 0.2500], dtype=torch.float64)
    """
    X = _dense(M)
    k = min(int(k), *X.shape)
    q = min(k + 16, *X.shape)
    state = torch.random.get_rng_state()
    torch.manual_seed(0)  # svd_lowrank draws from the global generator: keep the page reproducible
    try:
        s = torch.svd_lowrank(X, q=q, niter=ESTIMATE_POWER_STEPS)[1]
    finally:
        torch.random.set_rng_state(state)
    return _descending(s, k)


def cheap_eigenvalues(M) -> torch.Tensor | None:
    """The eigenvalues of a square M, as :func:`eigenvalues` gives them, when the map's structure
    gives them (its ``eigenvalues()``, no dense ``eigvals``) at most at the cost that
    ``CHEAP_STRUCTURE_FRACTION`` stands for; else None."""
    d_out, d_in = _shape(M)
    if d_out != d_in:
        raise ValueError(f"eigenvalues need a square map, got shape ({d_out}, {d_in})")
    if _structure_is_cheap(M):
        _check_parameters(M)
        if M.eigenvalues() is not None:
            return eigenvalues(M)
    return None


def estimate_eigenvalues(M, steps: int = ARNOLDI_STEPS) -> torch.Tensor:
    """An estimate of the outermost eigenvalues of a square M: the Ritz values of ``steps``
    Arnoldi iterations (the eigenvalues of M projected on the Krylov space of a fixed random
    vector), complex128, by decreasing modulus, in O(n²·steps).

    The outermost are found first: on a random Gaussian 512 × 512 matrix the five largest Ritz
    values lie within 3% of |λ|_max of an eigenvalue (tests), those of structured maps much
    closer; the inner ones are not eigenvalues.

    >>> estimate_eigenvalues(torch.diag(torch.tensor([3.0, -2.0, 1.0]))).real.round(decimals=6)
    tensor([ 3., -2.,  1.], dtype=torch.float64)
    """
    X = _dense(M)
    n = X.shape[0]
    if X.shape[1] != n:
        raise ValueError(f"eigenvalues need a square map, got shape {tuple(X.shape)}")
    steps = min(int(steps), n)
    Q = X.new_zeros(n, steps + 1)
    H = X.new_zeros(steps + 1, steps)
    q = torch.randn(n, dtype=X.dtype, generator=torch.Generator().manual_seed(0))
    Q[:, 0] = q / q.norm()
    scale = X.norm()
    for j in range(steps):
        w = X @ Q[:, j]
        for _ in range(2):  # Gram–Schmidt twice: orthogonal to round-off
            h = Q[:, :j + 1].T @ w
            w = w - Q[:, :j + 1] @ h
            H[:j + 1, j] += h
        H[j + 1, j] = w.norm()
        if H[j + 1, j] <= scale * torch.finfo(X.dtype).eps * n:  # an invariant subspace: exact
            steps = j + 1
            break
        Q[:, j + 1] = w / H[j + 1, j]
    lam = torch.linalg.eigvals(H[:steps, :steps])
    return lam[lam.abs().argsort(descending=True, stable=True)]


def eigenvalues(M) -> torch.Tensor:
    """Eigenvalues λ of a square M (M v = λ v), complex128, by decreasing modulus.

    Structure first: a module's own ``eigenvalues()`` (for example exactly the FFT of a
    convolution kernel, or a small core's and zeros for a product of thin factors). Anything
    else goes through a dense ``eigvals``. ValueError for a non-square M.

    >>> eigenvalues(torch.tensor([[2.0, 0.0], [0.0, -3.0]]))
    tensor([-3.+0.j,  2.+0.j], dtype=torch.complex128)
    """
    d_out, d_in = _shape(M)
    if d_out != d_in:
        raise ValueError(f"eigenvalues need a square map, got shape ({d_out}, {d_in})")
    lam = None
    if isinstance(M, StructuredMatrix):
        _check_parameters(M)
        lam = M.eigenvalues()
    if lam is None:
        lam = torch.linalg.eigvals(_dense(M))
    lam = torch.cat([lam, lam.new_zeros(d_out - lam.numel())])
    return lam[lam.abs().argsort(descending=True, stable=True)]


def _check_rtol(rtol) -> float:
    rtol = float(rtol)
    if not (math.isfinite(rtol) and rtol >= 0):
        raise ValueError(f"rtol must be a finite number ≥ 0, got {rtol}")
    return rtol


def numerical_rank(M, rtol: float | None = None, values: torch.Tensor | None = None) -> int:
    """Number of singular values σ_i > rtol · σ_1 (rank in floating point).

    The default ``rtol = max(d_out, d_in) · eps`` (eps of M's dtype) is numpy.linalg.matrix_rank's.
    Structure-aware through :func:`singular_values` (a 65,536-point convolution's rank needs one FFT);
    ``values``: M's singular values when they are already at hand (a figure that plots them).

    >>> numerical_rank(torch.ones(3, 4))
    1
    """
    rtol = max(_shape(M)) * _eps(M) if rtol is None else _check_rtol(rtol)
    return _count_above(singular_values(M) if values is None else values, rtol)


def _count_above(s: torch.Tensor, rtol: float) -> int:
    """How many of the descending values s exceed rtol · s[0]."""
    return int((s > s[0] * rtol).sum()) if s[0] > 0 else 0


# -- displacement structure ------------------------------------------------------------------------
def shift(n: int, f: float) -> torch.Tensor:
    """The f-shift Z_f (n × n, float64): ones on the subdiagonal, f in the top-right corner.

    Z_f e_j = e_{j+1} for j < n − 1 and Z_f e_{n−1} = f e_0; Z_1 is the cyclic shift.

    >>> shift(3, -1.0)
    tensor([[ 0.,  0., -1.],
            [ 1.,  0.,  0.],
            [ 0.,  1.,  0.]], dtype=torch.float64)
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    Z = torch.diag(torch.ones(n - 1, dtype=torch.float64), -1)
    Z[0, n - 1] = float(f)
    return Z


def _operator(op, n: int, side: str) -> float | torch.Tensor:
    """f for an operator name "Z<f>" ("Z1", "Z-1", "Z0.5", …), else op as an n × n float64 matrix."""
    if isinstance(op, str):
        match = re.fullmatch(r"Z([+-]?\d+(?:\.\d+)?)", op)
        if match is None:
            raise ValueError(
                f"unknown operator {op!r} for {side}; use 'Z1', 'Z-1', 'Z<f>' such as 'Z0' or "
                f"'Z0.5' (the f-shift Z_f), or an {n} × {n} matrix"
            )
        return float(match.group(1))
    matrix = _dense(op)
    if matrix.shape != (n, n):
        raise ValueError(f"operator {side} must be {n} × {n} for this M, got {tuple(matrix.shape)}")
    return matrix


def _apply(op: float | torch.Tensor, X: torch.Tensor, side: str) -> torch.Tensor:
    """A X (side "A") or X B (side "B"), batched over leading dims. A shift Z_f moves rows or
    columns instead of multiplying (exact, and O(size) rather than a matmul):
    (Z_f X)[i] = X[i − 1] with row 0 = f·X[n − 1]; (X Z_f)[:, j] = X[:, j + 1], last = f·X[:, 0]."""
    if isinstance(op, float):
        if side == "A":
            return torch.cat([op * X[..., -1:, :], X[..., :-1, :]], dim=-2)
        return torch.cat([X[..., 1:], op * X[..., :1]], dim=-1)
    return op @ X if side == "A" else X @ op


def displacement(M, A="Z1", B="Z-1") -> torch.Tensor:
    """The Sylvester displacement ∇_{A,B}(M) = A M − M B (float64).

    ``A`` (d_out × d_out) and ``B`` (d_in × d_in) are operator names — ``"Z<f>"`` is the
    f-shift :func:`shift` Z_f, e.g. ``"Z1"``, ``"Z-1"``, ``"Z0"`` — or matrices. M may be
    rectangular. Under the default (Z1, Z-1) a matrix constant along its wrapped diagonals has
    displacement rank ≤ 1, one constant along its diagonals ≤ 2, Σ_{i≤r} C(g_i) S(h_i) ≤ r, a
    rank-r matrix ≤ 2r (methods.md; each family's description says its own).

    >>> displacement(torch.eye(2), "Z1", "Z1")
    tensor([[0., 0.],
            [0., 0.]], dtype=torch.float64)
    """
    X = _dense(M)
    return _apply(_operator(A, X.shape[0], "A"), X, "A") - _apply(_operator(B, X.shape[1], "B"), X, "B")


def displacement_rank(M, A="Z1", B="Z-1", rtol: float | None = None, values: torch.Tensor | None = None) -> int:
    """rank ∇_{A,B}(M) = rank(A M − M B), the :func:`numerical_rank` of :func:`displacement`.

    The default ``rtol`` is ``max(d_out, d_in) · eps`` of M's own dtype (so a float32 module is
    judged at float32 precision although the residual is computed in float64). ``values``: the
    residual's singular values when already at hand.

    >>> displacement_rank(torch.tensor([[1.0, 5.0, 6.0], [2.0, 1.0, 5.0], [3.0, 2.0, 1.0]]))  # constant diagonals
    2
    """
    rtol = max(_shape(M)) * _eps(M) if rtol is None else _check_rtol(rtol)
    return _count_above(singular_values(displacement(M, A, B)) if values is None else values, rtol)


# -- nearest member of a family ----------------------------------------------------------------------
def nearest(family: str, W, budget: int):
    """The member M of ``family`` with at most ``budget`` parameters nearest to W, and its
    relative error ‖W − M‖_F / ‖W‖_F (0 for W = 0).

    The configuration is ``from_budget(family, d_out, d_in, budget)``; its parameters are then
    set to the family's ``project(W)``, the Frobenius projection in closed form where the family
    has one (each family's ``project`` says how). A family without one (``project`` returns
    None) is fitted generically: ``FIT_STEPS`` deterministic L-BFGS iterations on
    ‖W − to_dense(θ)‖² over all its parameters θ, from its zero-init member (the adapter start,
    whose gradients are nonzero by the contract), keeping the best point. That is the
    least-squares fit for a family linear in its parameters, a local optimum otherwise.

    The module has W's dtype (float32 or float64; float64 otherwise). ValueError for an unknown
    family, a budget too small (from ``from_budget``), or a W with NaN or infinite entries.

    >>> m, err = nearest("dense", torch.eye(3), 9)
    >>> m.hparams, round(err, 4)
    ({}, 0.0)
    """
    X = _dense(W)
    same = isinstance(W, torch.Tensor) and W.dtype in (torch.float32, torch.float64)
    m = from_budget(family, *X.shape, budget, seed=0).to(W.dtype if same else torch.float64)
    params = m.project(X)
    if params is None:
        params = _fit(m, X)
    with torch.no_grad():
        for name, value in params.items():
            getattr(m, name).copy_(value)
    norm = X.norm()
    err = (X - _dense(m)).norm()
    return m, float(err / norm) if norm > 0 else float(err)


def _fit(m: StructuredMatrix, W: torch.Tensor) -> dict[str, torch.Tensor]:
    """Parameters of m's configuration fitted to W by L-BFGS (see :func:`nearest`), in float64."""
    m = copy.deepcopy(m).to(torch.float64)
    named = {name: p for name, p in m.named_parameters() if p.requires_grad}
    norm2 = float(W.pow(2).sum()) or 1.0  # a relative loss: the tolerances mean the same for any W
    best = lbfgs_best(lambda: (m.to_dense() - W).pow(2).sum() / norm2, list(named.values()), FIT_STEPS)
    return dict(zip(named, best))


__all__ = [
    "singular_values", "eigenvalues", "numerical_rank", "shift", "displacement",
    "displacement_rank", "nearest", "cheap_singular_values", "estimate_singular_values",
    "cheap_eigenvalues", "estimate_eigenvalues",
]
