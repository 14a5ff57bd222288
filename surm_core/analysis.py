"""Spectra, ranks, displacement structure and nearest members of the structured families.

Every function takes a family module (``surm_core.make`` / ``from_budget``) or a 2-D tensor or
ndarray, and computes in float64 on the CPU. Where a family's structure gives an answer without the
dense matrix (a circulant's spectrum is an FFT, a Kronecker product's singular values are products
of its factors'), that is the way it is computed.
"""
from __future__ import annotations

import copy
import math
import re

import numpy as np
import scipy.sparse.linalg
import torch

from .families import StructuredMatrix, from_budget
from .families.circulant import CirculantMatrix, circulant_index
from .families.kronecker import KroneckerMatrix
from .families.lowrank import LowRankMatrix
from .families.toeplitz import SymmetricToeplitzMatrix, toeplitz_index

#: Above this largest side, ``singular_values(m, k)`` runs an iterative solver on the fast forward
#: instead of a dense SVD.
ITERATIVE_ABOVE = 2048
#: L-BFGS iterations of the ``ldr`` fit in :func:`nearest` (deterministic: fixed count, fixed seed).
LDR_FIT_STEPS = 50
#: Rounds the iterations are split into when tiles are cropped (hidden entries refilled per round).
LDR_EM_ROUNDS = 5


# -- inputs ------------------------------------------------------------------------------------
def _shape(M) -> tuple[int, int]:
    return M.shape if isinstance(M, StructuredMatrix) else tuple(_dense(M).shape)


def _dense(M) -> torch.Tensor:
    """M as a float64 CPU matrix (a module's ``to_dense()``); ValueError unless it is 2-D."""
    if isinstance(M, StructuredMatrix):
        return M.to_dense().detach().to("cpu", torch.float64)
    if isinstance(M, torch.Tensor):
        X = M.detach().to("cpu", torch.float64)
    else:
        X = torch.from_numpy(np.asarray(M, dtype=np.float64))
    if X.ndim != 2:
        raise ValueError(f"expected a matrix (2-D), got shape {tuple(X.shape)}")
    return X


def _eps(M) -> float:
    """Machine epsilon of M's floating dtype (float64 for integer input)."""
    if isinstance(M, StructuredMatrix):
        dtype = next(M.parameters()).dtype
    elif isinstance(M, torch.Tensor):
        dtype = M.dtype
    else:
        dtype = torch.from_numpy(np.zeros(0, dtype=np.asarray(M).dtype)).dtype
    return torch.finfo(dtype if dtype.is_floating_point else torch.float64).eps


def _param(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", torch.float64)


def _descending(values: torch.Tensor, count: int) -> torch.Tensor:
    """``values`` sorted descending, padded with zeros (or cut) to ``count``."""
    values = values.sort(descending=True).values[:count]
    return torch.cat([values, values.new_zeros(count - values.numel())])


# -- spectra and ranks ---------------------------------------------------------------------------
def singular_values(M, k: int | None = None) -> torch.Tensor:
    """Singular values σ_1 ≥ σ_2 ≥ … of M (all ``min(d_out, d_in)`` of them, or the top ``k``).

    Structure first: a circulant of whole tiles gives the singular values of its ``block`` small
    ``p × q`` matrices ``fft(c)[:, :, f]`` (one per frequency f; one tile: ``|fft(c)|``), a
    one-tile symmetric Toeplitz ``|eigvalsh|``, Kronecker ``A ⊗ B`` all products
    ``σ_i(A)·σ_j(B)``, lowrank ``s·B A`` the SVD of the small core ``s·R_B R_Aᵀ`` (from QR of B
    and Aᵀ). Otherwise a dense SVD — of a ``LOW_RANK_SKETCH × d_in`` matrix when a random sketch
    shows M's numerical rank is below that (then the values under round-off are returned as 0) —
    except above ``ITERATIVE_ABOVE`` on a side with ``k`` given (``k < min(d_out, d_in)``): then
    scipy's ``svds`` drives the module's fast ``forward`` and its adjoint (a matrix is applied as
    is), never forming the dense matrix. Without ``k`` a large unstructured M is decomposed
    densely, which may be slow.

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
    if _whole_tile_circulant(M):
        # (I ⊗ F) M (I ⊗ F)^H is a p × q grid of diagonals: one p × q matrix per frequency
        s = torch.linalg.svdvals(_frequency_blocks(M)).flatten()
    elif _single_symmetric_toeplitz(M):
        s = torch.linalg.eigvalsh(_dense(M)).abs()
    elif isinstance(M, KroneckerMatrix):
        s = torch.outer(torch.linalg.svdvals(_param(M.A)), torch.linalg.svdvals(_param(M.B))).flatten()
    elif isinstance(M, LowRankMatrix):
        # B A = Q_B (R_B R_Aᵀ) Q_Aᵀ with orthonormal Q's: same nonzero spectrum as the r × r core
        rb = torch.linalg.qr(_param(M.B)).R
        ra = torch.linalg.qr(_param(M.A).T).R
        s = abs(M.scale) * torch.linalg.svdvals(rb @ ra.T)
    elif k is not None and max(d_out, d_in) > ITERATIVE_ABOVE and k < min(d_out, d_in):
        s = _top_singular_values(M, k)
    else:
        X = _dense(M)
        s = _low_rank_singular_values(X)
        if s is None:
            s = torch.linalg.svdvals(X)
    return _descending(s, count)


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


def _whole_tile_circulant(M) -> bool:
    """A circulant whose tiles are not cropped (``d_out = p·block``, ``d_in = q·block``)."""
    return isinstance(M, CirculantMatrix) and M.d_out == M.p * M.block and M.d_in == M.q * M.block


def _frequency_blocks(M) -> torch.Tensor:
    """(block, p, q): the tiles' spectra ``fft(c)`` regrouped per frequency."""
    return torch.fft.fft(_param(M.c), dim=-1).permute(2, 0, 1)


def _kronecker_swapped(M) -> torch.Tensor:
    """For a square ``A ⊗ B`` with non-square factors (a1 × a2, b1 × b2): the smaller of
    ``(A ⊗ I_b2)(I_a1 ⊗ B)`` (a1·b2 square) and ``(I_a2 ⊗ B)(A ⊗ I_b1)`` (a2·b1 square). Both are
    ``A ⊗ B`` = X Y with its factors swapped to Y X (mixed products), so their nonzero eigenvalues are
    ``A ⊗ B``'s. With a1·b1 = a2·b2 = n and b1 ≠ b2, one of them is smaller than n."""
    A, B = _param(M.A), _param(M.B)
    (a1, a2), (b1, b2) = A.shape, B.shape
    if a1 * b2 <= a2 * b1:
        return torch.kron(A, torch.eye(b2, dtype=A.dtype)) @ torch.kron(torch.eye(a1, dtype=A.dtype), B)
    return torch.kron(torch.eye(a2, dtype=A.dtype), B) @ torch.kron(A, torch.eye(b1, dtype=A.dtype))


def _single_symmetric_toeplitz(M) -> bool:
    return isinstance(M, SymmetricToeplitzMatrix) and M.p == M.q == 1 and M.d_out == M.d_in == M.block


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


def eigenvalues(M) -> torch.Tensor:
    """Eigenvalues λ of a square M (M v = λ v), complex128, by decreasing modulus.

    Structure first: a circulant of whole tiles has the eigenvalues of its ``block`` small
    ``p × p`` matrices ``fft(c)[:, :, f]`` (one tile: exactly ``fft(c)``, eigenvectors the Fourier
    modes); a one-tile symmetric Toeplitz is symmetric (``eigvalsh``); ``A ⊗ B`` with square
    factors has all products ``λ_i(A)·μ_j(B)``, with non-square ones those of a smaller product
    with the factors swapped, and zeros; lowrank ``s·B A`` (r < n) the eigenvalues of the
    r × r ``s·A B`` and zeros. Anything else goes through a dense ``eigvals``. ValueError for a
    non-square M.

    >>> eigenvalues(torch.tensor([[2.0, 0.0], [0.0, -3.0]]))
    tensor([-3.+0.j,  2.+0.j], dtype=torch.complex128)
    """
    d_out, d_in = _shape(M)
    if d_out != d_in:
        raise ValueError(f"eigenvalues need a square map, got shape ({d_out}, {d_in})")
    if _whole_tile_circulant(M):
        lam = torch.linalg.eigvals(_frequency_blocks(M)).flatten()
    elif _single_symmetric_toeplitz(M):
        lam = torch.linalg.eigvalsh(_dense(M)).to(torch.complex128)
    elif isinstance(M, KroneckerMatrix) and M.A.shape[0] == M.A.shape[1]:
        lam = torch.outer(torch.linalg.eigvals(_param(M.A)), torch.linalg.eigvals(_param(M.B))).flatten()
    elif isinstance(M, KroneckerMatrix):
        core = torch.linalg.eigvals(_kronecker_swapped(M))
        lam = torch.cat([core, core.new_zeros(d_out - core.numel())])
    elif isinstance(M, LowRankMatrix) and M.hparams["r"] < d_out:
        core = torch.linalg.eigvals(M.scale * _param(M.A) @ _param(M.B))
        lam = torch.cat([core, core.new_zeros(d_out - core.numel())])
    else:
        lam = torch.linalg.eigvals(_dense(M))
    return lam[lam.abs().argsort(descending=True, stable=True)]


def _check_rtol(rtol) -> float:
    rtol = float(rtol)
    if not (math.isfinite(rtol) and rtol >= 0):
        raise ValueError(f"rtol must be a finite number ≥ 0, got {rtol}")
    return rtol


def numerical_rank(M, rtol: float | None = None, values: torch.Tensor | None = None) -> int:
    """Number of singular values σ_i > rtol · σ_1 (rank in floating point).

    The default ``rtol = max(d_out, d_in) · eps`` (eps of M's dtype) is numpy.linalg.matrix_rank's.
    Structure-aware through :func:`singular_values` (a 65,536-circulant's rank needs one FFT);
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
    """The unit-f-circulant shift Z_f (n × n, float64): ones on the subdiagonal, f top right.

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
                f"'Z0.5' (the unit-f-circulant shift), or an {n} × {n} matrix"
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
    unit-f-circulant :func:`shift` Z_f, e.g. ``"Z1"``, ``"Z-1"``, ``"Z0"`` — or matrices.
    M may be rectangular. Under the default (Z1, Z-1) a circulant has displacement rank ≤ 1, a
    Toeplitz matrix ≤ 2, Σ_{i≤r} C(g_i) S(h_i) ≤ r, a rank-r matrix ≤ 2r (methods.md).

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

    >>> displacement_rank(torch.tensor([[1.0, 5.0, 6.0], [2.0, 1.0, 5.0], [3.0, 2.0, 1.0]]))  # Toeplitz
    2
    """
    rtol = max(_shape(M)) * _eps(M) if rtol is None else _check_rtol(rtol)
    return _count_above(singular_values(displacement(M, A, B)) if values is None else values, rtol)


# -- nearest member of a family ----------------------------------------------------------------------
def nearest(family: str, W, budget: int):
    """The member M of ``family`` with at most ``budget`` parameters nearest to W, and its
    relative error ‖W − M‖_F / ‖W‖_F (0 for W = 0).

    The configuration is ``from_budget(family, d_out, d_in, budget)``; its parameters are then set
    to the Frobenius projection of W, in closed form for every family but ``ldr``:
    dense W itself; lowrank the truncated SVD (Eckart–Young); circulant / Toeplitz / symmetric
    Toeplitz, per tile, the mean of W's visible entries along each (wrapped / mirrored) diagonal
    (0 where a diagonal lies wholly in the cropped region); kronecker Van Loan–Pitsianis (top
    singular pair of the rearranged W); monarch a truncated SVD per (output block, input block),
    since each such block of the dense matrix is an independent sum of rank-1 terms.
    ``ldr`` has no closed form: ``LDR_FIT_STEPS`` deterministic L-BFGS iterations start from the
    better of (a) the circulant projection at the same tiles (g_1 = c, h_1 = e_0, S(e_0) = I) and
    (b) the displacement fit (truncated SVD of ∇_{Z1,Z-1} per tile, exact for members), and never
    increase the error: ``ldr`` is never worse than the circulant projection at its block.

    The module has W's dtype (float32 or float64; float64 otherwise). ValueError for an unknown
    family or a budget too small (from ``from_budget``).

    >>> m, err = nearest("lowrank", torch.eye(3), 6)
    >>> m.hparams["r"], round(err, 4)
    (1, 0.8165)
    """
    X = _dense(W)
    same = isinstance(W, torch.Tensor) and W.dtype in (torch.float32, torch.float64)
    m = from_budget(family, *X.shape, budget).to(W.dtype if same else torch.float64)
    params = _PROJECTIONS[family](m, X)
    with torch.no_grad():
        for name, value in params.items():
            getattr(m, name).copy_(value)
    norm = X.norm()
    err = (X - _dense(m)).norm()
    return m, float(err / norm) if norm > 0 else float(err)


def _project_dense(m, W):
    return {"weight": W}


def _project_lowrank(m, W):
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    r = m.hparams["r"]
    root = S[:r].sqrt()
    return {"B": U[:, :r] * root / m.scale, "A": root[:, None] * Vh[:r]}


def _tiles(m, W) -> tuple[torch.Tensor, torch.Tensor]:
    """W cut into m's (p, q, n, n) tiles (zero-padded), and the mask of visible entries."""
    n, p, q = m.block, m.p, m.q
    padded = W.new_zeros(p * n, q * n)
    padded[: m.d_out, : m.d_in] = W
    visible = torch.zeros_like(padded)
    visible[: m.d_out, : m.d_in] = 1
    return tuple(t.reshape(p, n, q, n).transpose(1, 2) for t in (padded, visible))


def _diagonal_means(m, W, index: torch.Tensor, count: int) -> torch.Tensor:
    """Per tile, the mean of W's visible entries at each value of ``index`` (n × n → [0, count))."""
    tiles, visible = _tiles(m, W)
    flat = index.flatten()
    sums = W.new_zeros(m.p, m.q, count).index_add_(2, flat, tiles.flatten(2))
    counts = W.new_zeros(m.p, m.q, count).index_add_(2, flat, visible.flatten(2))
    return sums / counts.clamp(min=1)


def _project_circulant(m, W):
    return {"c": _diagonal_means(m, W, circulant_index(m.block), m.block)}


def _project_toeplitz(m, W):
    return {"diagonals": _diagonal_means(m, W, toeplitz_index(m.block), 2 * m.block - 1)}


def _project_symmetric_toeplitz(m, W):
    n = m.block
    return {"t": _diagonal_means(m, W, (toeplitz_index(n) - (n - 1)).abs(), n)}


def _project_kronecker(m, W):
    # W[i1·b1 + i2, j1·b2 + j2] = A[i1, j1]·B[i2, j2]: rearranged to rows (i1, j1) and columns
    # (i2, j2) it is the rank-1 matrix vec(A) vec(B)ᵀ, so the nearest one is the top singular pair
    (a1, a2), (b1, b2) = m.hparams["a_shape"], m.hparams["b_shape"]
    R = W.reshape(a1, b1, a2, b2).permute(0, 2, 1, 3).reshape(a1 * a2, b1 * b2)
    U, S, Vh = torch.linalg.svd(R, full_matrices=False)
    root = S[0].sqrt()
    return {"A": (U[:, 0] * root).reshape(a1, a2), "B": (Vh[0] * root).reshape(b1, b2)}


def _project_monarch(m, W):
    # Intermediate j = b·r + t' (after P) is row t = perm[j] % r of L_a, a = perm[j] // r, and
    # column t' of R_b: one rank-1 term per j, coupling input block a with output block b and no
    # parameter shared with any other term. So W's (b, a) block is fitted by its own truncated
    # SVD with as many terms as (b, a) has. Zero padding to whole blocks leaves those SVDs' nonzero
    # terms unchanged and puts zeros where the cropped rows/columns are.
    k, r, out_blk, in_blk = m.hparams["nblocks"], m.hparams["blk_r"], m.out_blk, m.in_blk
    padded = W.new_zeros(k * out_blk, k * in_blk)
    padded[: m.d_out, : m.d_in] = W
    blocks = padded.reshape(out_blk, k, k, in_blk).permute(1, 2, 0, 3)  # [b, a]: rows o·k + b
    j = torch.arange(k * r)
    b, t_out, a, t_in = j // r, j % r, m.permutation() // r, m.permutation() % r
    pairs, pair = torch.unique(b * k + a, return_inverse=True)
    counts, term = [0] * len(pairs), []  # term: which of its pair's terms j is
    for p in pair.tolist():
        term.append(counts[p])
        counts[p] += 1
    term = torch.tensor(term)
    U, S, Vh = torch.linalg.svd(blocks[pairs // k, pairs % k], full_matrices=False)
    fits = term < S.shape[-1]  # a pair may have more terms than its block has singular values
    pair, term, b, t_out, a, t_in = (t[fits] for t in (pair, term, b, t_out, a, t_in))
    root = S[pair, term].sqrt()[:, None]
    R = W.new_zeros(k, out_blk, r)
    L = W.new_zeros(k, r, in_blk)
    R[b, :, t_out] = U[pair, :, term] * root
    L[a, t_in] = root * Vh[pair, term]
    return {"L": L, "R": R}


class _LDRFourier:
    """Σ_i C(g_i) S(h_i) tiles of size n in the Fourier basis where both factors are diagonal.

    C(g) = F⁻¹ diag(F g) F and S(h) = D⁻¹ C(D h) D with D = diag(θ^j), θ = e^{iπ/n}, so
    Σ_i C(g_i) S(h_i) = F⁻¹ [(Σ_i ĝ_i ĥ_iᵀ) ⊙ K] F D with ĝ = F g, ĥ = F D h, K = F D⁻¹ F⁻¹.
    ``T ↦ T̂ = F T D⁻¹ F⁻¹`` keeps Frobenius norms (the scalings of F and F⁻¹ cancel), and K is
    itself circulant, K[a, b] = κ[a − b]; so a tile's squared error is computed without any n × n
    array but the fixed conj(T̂) ⊙ K (see :meth:`objective`).
    """

    def __init__(self, n: int):
        self.theta = torch.exp(1j * math.pi * torch.arange(n, dtype=torch.float64) / n)
        eye = torch.eye(n, dtype=torch.complex128)
        self.K = torch.fft.fft(torch.fft.ifft(eye, dim=0) / self.theta[:, None], dim=0)
        self.kappa2_spectrum = torch.fft.fft(self.K[:, 0].abs().pow(2))

    def spectra(self, gh):
        """(ĝ, ĥ) for gh = stack(g, h), each (..., r, n)."""
        return torch.fft.fft(gh[0]), torch.fft.fft(gh[1] * self.theta)

    def transform(self, T):
        """T̂ = F T D⁻¹ F⁻¹ of real tiles T (..., n, n)."""
        return torch.fft.fft(torch.fft.ifft(T / self.theta, dim=-1), dim=-2)

    def dense(self, gh):
        G, H = self.spectra(gh)
        core = torch.einsum("...ra,...rb->...ab", G, H) * self.K
        return (torch.fft.fft(torch.fft.ifft(core, dim=-2), dim=-1) * self.theta).real

    def objective(self, T_hat):
        """gh ↦ Σ_tiles ‖T̂ − (Σ_i ĝ_i ĥ_iᵀ) ⊙ K‖², expanded as ‖T̂‖² − 2 Re Σ_i ĝ_iᵀ (conj(T̂) ⊙ K) ĥ_i
        + Σ_{i,j} Σ_a ĝ_i[a] conj(ĝ_j[a]) (|κ|² ⊛ ĥ_i conj(ĥ_j))[a]: one n × n × r product per call."""
        A = T_hat.conj() * self.K
        total = torch.view_as_real(T_hat).pow(2).sum()

        def error(gh):
            G, H = self.spectra(gh)
            cross = ((G @ A) * H).sum().real
            HH = H[..., :, None, :] * H[..., None, :, :].conj()  # (..., r, r, n)
            smoothed = torch.fft.ifft(torch.fft.fft(HH) * self.kappa2_spectrum)
            quad = (G[..., :, None, :] * G[..., None, :, :].conj() * smoothed).sum().real
            return total - 2 * cross + quad

        return error


def _top_svd(X: torch.Tensor, r: int, oversample: int = 10, power_steps: int = 2):
    """Top-r singular triplets (U, S, Vh) of the matrices X (..., n, n) by a randomized subspace
    iteration with a fixed seed (exact when rank X ≤ r + oversample): O(n²r), not a full SVD."""
    gen = torch.Generator().manual_seed(0)
    sketch = torch.randn(X.shape[-1], min(r + oversample, X.shape[-1]), generator=gen, dtype=X.dtype)
    Q = torch.linalg.qr(X @ sketch).Q
    for _ in range(power_steps):
        Q = torch.linalg.qr(X @ (X.mT @ Q)).Q
    U, S, Vh = torch.linalg.svd(Q.mT @ X, full_matrices=False)
    return (Q @ U)[..., :r], S[..., :r], Vh[..., :r, :]


def _minimize(loss, x0: torch.Tensor, steps: int) -> torch.Tensor:
    """The best point of ``steps`` L-BFGS iterations on ``loss`` from x0 (so never worse than x0)."""
    x = x0.clone(memory_format=torch.contiguous_format).requires_grad_()
    best = [math.inf, x0]
    opt = torch.optim.LBFGS(
        [x], max_iter=steps, line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-15
    )

    def closure():
        opt.zero_grad()
        value = loss(x)
        value.backward()
        if value.item() < best[0]:
            best[:] = value.item(), x.detach().clone()
        return value

    opt.step(closure)
    return best[1]


def _project_ldr(m, W):
    n, r = m.block, m.hparams["r"]
    scale = float(W.norm()) or 1.0  # fit W / ‖W‖ so L-BFGS's tolerances mean the same for any W
    tiles, visible = _tiles(m, W / scale)
    fourier = _LDRFourier(n)

    def error(gh):  # the squared error on the visible entries
        return ((fourier.dense(gh) - tiles) * visible).pow(2).sum()

    # (a) circulant projection: g_1 = c/s, h_1 = s·e_0; the other terms start at g_i = 0 (the
    # same matrix) with small random h_i, so that their gradients are not zero
    c = _diagonal_means(m, W / scale, circulant_index(n), n)
    s = c.norm(dim=-1).sqrt().clamp(min=1e-8)  # (p, q): balances the two factors' sizes
    g_circ = torch.cat([(c / s[..., None])[:, :, None], c.new_zeros(m.p, m.q, r - 1, n)], dim=2)
    gen = torch.Generator().manual_seed(0)
    h_circ = torch.randn(m.p, m.q, r, n, generator=gen, dtype=torch.float64) * (s[..., None, None] / math.sqrt(n))
    h_circ[:, :, 0] = 0
    h_circ[:, :, 0, 0] = s
    # (b) displacement fit: ∇_{Z1,Z-1}(Σ C(g_i) S(h_i)) = 2 Σ g_i rev(h_i)ᵀ, and ∇ is invertible
    U, S, Vh = _top_svd(_apply(1.0, tiles, "A") - _apply(-1.0, tiles, "B"), r)
    root = (S / 2).sqrt()
    g_disp = (U * root[..., None, :]).transpose(-1, -2)
    h_disp = (root[..., None] * Vh).flip(-1)
    gh = min([torch.stack([g_circ, h_circ]), torch.stack([g_disp, h_disp])], key=lambda x: float(error(x)))

    # Fit in the Fourier basis. Cropped tiles: each round fills the hidden entries with the
    # current fit (EM); the filled error bounds the visible one and equals it at the start of the
    # round, so no round can raise the visible error.
    rounds = 1 if bool(visible.all()) else LDR_EM_ROUNDS
    for _ in range(rounds):
        filled = tiles * visible + fourier.dense(gh) * (1 - visible)
        gh = _minimize(fourier.objective(fourier.transform(filled)), gh, LDR_FIT_STEPS // rounds)
    g, h = gh
    return {"g": g * scale, "h": h}


_PROJECTIONS = {
    "dense": _project_dense,
    "lowrank": _project_lowrank,
    "circulant": _project_circulant,
    "toeplitz": _project_toeplitz,
    "symmetric_toeplitz": _project_symmetric_toeplitz,
    "kronecker": _project_kronecker,
    "ldr": _project_ldr,
    "monarch": _project_monarch,
}

__all__ = [
    "singular_values", "eigenvalues", "numerical_rank", "shift", "displacement",
    "displacement_rank", "nearest",
]
