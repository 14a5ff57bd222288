"""Kronecker product: ΔW = A ⊗ B."""
from __future__ import annotations

import math

import torch
from torch import nn

from .base import StructuredMatrix, View, check_hparam_names, edges, float64


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def _pair(name, value) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair of positive integers, got {value!r}") from None
    if a < 1 or b < 1:
        raise ValueError(f"{name} must be a pair of positive integers, got {value!r}")
    return a, b


class KroneckerMatrix(StructuredMatrix):
    """ΔW = A ⊗ B with A: a1 × a2, B: b1 × b2, a1·b1 = d_out, a2·b2 = d_in; ``a1a2 + b1b2`` params.

    Entry ``ΔW[i1·b1 + i2, j1·b2 + j2] = A[i1, j1]·B[i2, j2]`` (``torch.kron``'s order). Applied
    without the dense form: the input reshaped to ``X: a2 × b2`` maps to ``A X Bᵀ``. Give
    ``a_shape`` or ``b_shape`` (the other follows); by default the most balanced factorisation
    (``a1 ≤ b1`` nearest ``sqrt(d_out)``, likewise for the columns). Sizes that are prime can only
    factor as ``1 × n``; where both are, the balanced ``(1, 1) ⊗ (d_out, d_in)`` would have one
    parameter more than the dense map, and the default is ``from_budget``'s pick instead. Zero
    init sets A = 0 and keeps B random.

    >>> m = KroneckerMatrix(6, 4, a_shape=(2, 2), init="random", seed=0)
    >>> m.hparams["b_shape"], m.num_params
    ((3, 2), 10)
    """

    family = "kronecker"
    zero_params = ("A",)
    color = "#2ca02c"
    description = """### Kronecker product
**Formula.** `ΔW = A ⊗ B` with `A: a₁ × a₂`, `B: b₁ × b₂`, `a₁b₁ = d_out`, `a₂b₂ = d_in`: the
matrix is an `a₁ × a₂` grid of blocks, block `(i, j)` being `A[i, j] · B`.

**Parameters.** `a₁a₂ + b₁b₂`, about `2n` for a balanced split of a square layer.

**Fast algorithm.** Reshape `x` into an `a₂ × b₂` matrix `X`; then `ΔW x` is `A X Bᵀ` read back
as a vector: about `n^1.5` multiply-adds for a balanced split, no dense matrix.

**Displacement rank.** Not small in general (typically `n`): its structure is block-wise, not
shift-wise. Instead, its singular values are all products `σᵢ(A) · σⱼ(B)`, and its rank is
`rank A · rank B`.

**Budget.** The largest factors (then the most balanced split) whose sizes fit."""

    def __init__(self, d_out: int, d_in: int, init: str = "zero", seed: int | None = None, **hparams):
        super().__init__(d_out, d_in, self.resolve(d_out, d_in, **hparams))
        (a1, a2), (b1, b2) = self.hparams["a_shape"], self.hparams["b_shape"]
        self.A = nn.Parameter(torch.empty(a1, a2))
        self.B = nn.Parameter(torch.empty(b1, b2))
        self._init_params(init, seed)

    @classmethod
    def resolve(cls, d_out, d_in, a_shape=None, b_shape=None, **rest) -> dict:
        check_hparam_names(cls.family, rest, ("a_shape", "b_shape"))
        if a_shape is None and b_shape is None:
            a1 = max(k for k in _divisors(d_out) if k * k <= d_out)
            a2 = max(k for k in _divisors(d_in) if k * k <= d_in)
            a_shape = (a1, a2)
            if a1 * a2 + d_out * d_in // (a1 * a2) > cls.max_params(d_out, d_in):
                return cls.best_within(d_out, d_in, cls.max_params(d_out, d_in))
        if a_shape is not None:
            a1, a2 = _pair("a_shape", a_shape)
            if d_out % a1 or d_in % a2:
                raise ValueError(
                    f"a_shape {a_shape} must divide the layer shape ({d_out}, {d_in}): "
                    f"a1 in {_divisors(d_out)}, a2 in {_divisors(d_in)}"
                )
            b = (d_out // a1, d_in // a2)
            if b_shape is not None and _pair("b_shape", b_shape) != b:
                raise ValueError(f"b_shape {b_shape} does not match a_shape {a_shape}: expected {b}")
            return {"a_shape": (a1, a2), "b_shape": b}
        return cls._from_b(d_out, d_in, b_shape)

    @classmethod
    def _from_b(cls, d_out, d_in, b_shape) -> dict:
        b1, b2 = _pair("b_shape", b_shape)
        if d_out % b1 or d_in % b2:
            raise ValueError(
                f"b_shape {b_shape} must divide the layer shape ({d_out}, {d_in}): "
                f"b1 in {_divisors(d_out)}, b2 in {_divisors(d_in)}"
            )
        return {"a_shape": (d_out // b1, d_in // b2), "b_shape": (b1, b2)}

    def _init_std(self, name: str) -> float:
        # Product entries have std 1/sqrt(d_in): split the factor evenly between A and B.
        fan = self.hparams["a_shape"][1] if name == "A" else self.hparams["b_shape"][1]
        return 1.0 / math.sqrt(fan)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        (a1, a2), (b1, b2) = self.hparams["a_shape"], self.hparams["b_shape"]
        X = x.reshape(*x.shape[:-1], a2, b2)
        Y = self.A @ X @ self.B.T
        return Y.reshape(*x.shape[:-1], a1 * b1)

    def to_dense(self) -> torch.Tensor:
        (a1, a2), (b1, b2) = self.hparams["a_shape"], self.hparams["b_shape"]
        return torch.einsum("ij,kl->ikjl", self.A, self.B).reshape(a1 * b1, a2 * b2)

    # -- structure ------------------------------------------------------------------------------
    def singular_values(self):
        return torch.outer(torch.linalg.svdvals(float64(self.A)), torch.linalg.svdvals(float64(self.B))).flatten()

    def eigenvalues(self):
        A, B = float64(self.A), float64(self.B)
        if A.shape[0] == A.shape[1]:
            return torch.outer(torch.linalg.eigvals(A), torch.linalg.eigvals(B)).flatten()
        # A ⊗ B = X Y has the nonzero eigenvalues of Y X (mixed products): with a1·b1 = a2·b2 = n
        # and non-square factors, one of (A ⊗ I_b2)(I_a1 ⊗ B) swapped (a1·b2 square) and
        # (I_a2 ⊗ B)(A ⊗ I_b1) swapped (a2·b1 square) is smaller than n
        (a1, a2), (b1, b2) = A.shape, B.shape
        eye = lambda k: torch.eye(k, dtype=A.dtype)
        if a1 * b2 <= a2 * b1:
            swapped = torch.kron(A, eye(b2)) @ torch.kron(eye(a1), B)
        else:
            swapped = torch.kron(eye(a2), B) @ torch.kron(A, eye(b1))
        return torch.linalg.eigvals(swapped)

    def project(self, W):
        # Van Loan–Pitsianis: W[i1·b1 + i2, j1·b2 + j2] = A[i1, j1]·B[i2, j2] rearranged to rows
        # (i1, j1) and columns (i2, j2) is the rank-1 matrix vec(A) vec(B)ᵀ, so the nearest one
        # is the top singular pair
        (a1, a2), (b1, b2) = self.hparams["a_shape"], self.hparams["b_shape"]
        R = W.reshape(a1, b1, a2, b2).permute(0, 2, 1, 3).reshape(a1 * a2, b1 * b2)
        U, S, Vh = torch.linalg.svd(R, full_matrices=False)
        root = S[0].sqrt()
        return {"A": (U[:, 0] * root).reshape(a1, a2), "B": (Vh[0] * root).reshape(b1, b2)}

    def tile_edges(self):
        b1, b2 = self.hparams["b_shape"]
        return edges(b1, self.d_out), edges(b2, self.d_in)

    @classmethod
    def count(cls, d_out, d_in, a_shape, b_shape) -> int:
        return a_shape[0] * a_shape[1] + b_shape[0] * b_shape[1]

    @classmethod
    def rank_bound(cls, d_out, d_in, a_shape, b_shape) -> int:
        return min(a_shape) * min(b_shape)

    @classmethod
    def candidates(cls, d_out, d_in, budget):
        budget = min(budget, cls.max_params(d_out, d_in))
        return (hp for hp in cls._splits(d_out, d_in) if cls.count(d_out, d_in, **hp) <= budget)

    @classmethod
    def _splits(cls, d_out, d_in):
        for a1 in _divisors(d_out):
            for a2 in _divisors(d_in):
                yield {"a_shape": (a1, a2), "b_shape": (d_out // a1, d_in // a2)}

    @classmethod
    def preference(cls, d_out, d_in, a_shape, b_shape) -> float:
        # Among equals prefer the balanced split (the smaller factor first, like the default).
        return -abs(a_shape[0] * a_shape[1] - b_shape[0] * b_shape[1]) - 0.5 * (
            a_shape[0] * a_shape[1] > b_shape[0] * b_shape[1]
        )

    @classmethod
    def smallest(cls, d_out, d_in) -> dict:
        return min(cls._splits(d_out, d_in), key=lambda hp: cls.count(d_out, d_in, **hp))

    def parameter_views(self):
        (a1, a2), (b1, b2) = self.hparams["a_shape"], self.hparams["b_shape"]
        return [View(f"A ({a1} × {a2}): which block", self.A.detach()),
                View(f"B ({b1} × {b2}): every block's pattern", self.B.detach())]
