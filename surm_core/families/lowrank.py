"""Low rank (LoRA): ΔW = (α/r) · B A."""
from __future__ import annotations

import math

import torch
from torch import nn

from .base import StructuredMatrix, View, check_hparam_names, check_size, float64


class LowRankMatrix(StructuredMatrix):
    """ΔW = (alpha / r) · B @ A with A: r × d_in, B: d_out × r; ``r·(d_in + d_out)`` parameters.

    Applied as two thin matmuls, ``((x Aᵀ) Bᵀ)·alpha/r``. ``r`` defaults to 8 (capped on layers
    too small for it), ``alpha`` to ``r`` (scale 1); LoRA's convention of a fixed ``alpha`` across
    ranks is one argument away. Zero init sets B = 0 and keeps A random, as LoRA does, so
    gradients reach B from the first step.

    >>> m = LowRankMatrix(6, 4, r=2, init="random", seed=0)
    >>> int(torch.linalg.matrix_rank(m.to_dense())), m.num_params
    (2, 20)
    """

    family = "lowrank"
    zero_params = ("B",)
    color = "#1f77b4"
    description = """### Low rank (LoRA)
**Formula.** `ΔW = (α / r) · B A` with `A: r × d_in`, `B: d_out × r`; `B = 0` at the start, so the
adapted model starts exactly as the pretrained one.

**Parameters.** `r · (d_in + d_out)`.

**Fast algorithm.** Two thin products, `x → A x → B (A x)`: `r · (d_in + d_out)` multiply-adds
instead of `d_in · d_out`.

**Displacement rank.** At most `2r` (`Z₁ B A − B A Z₋₁` is a sum of two rank-`r` terms). The
rank itself is at most `r`: the singular values drop to zero after `r`.

**Budget.** The largest rank `r` whose `r · (d_in + d_out)` fits."""

    def __init__(self, d_out: int, d_in: int, init: str = "zero", seed: int | None = None, **hparams):
        super().__init__(d_out, d_in, self.resolve(d_out, d_in, **hparams))
        r = self.hparams["r"]
        self.scale = self.hparams["alpha"] / r
        self.A = nn.Parameter(torch.empty(r, self.d_in))
        self.B = nn.Parameter(torch.empty(self.d_out, r))
        self._init_params(init, seed)

    @classmethod
    def resolve(cls, d_out, d_in, r: int | None = None, alpha: float | None = None, **rest) -> dict:
        check_hparam_names(cls.family, rest, ("r", "alpha"))
        # default 8, or the largest rank with no more parameters than the dense map
        r = min(8, max(1, d_out * d_in // (d_out + d_in))) if r is None else check_size("r", r)
        alpha = float(r if alpha is None else alpha)
        if not math.isfinite(alpha) or alpha == 0:
            raise ValueError(f"alpha must be a finite nonzero number, got {alpha}")
        return {"r": r, "alpha": alpha}

    def _init_std(self, name: str) -> float:
        fan = self.d_in if name == "A" else self.hparams["r"]
        return 1.0 / math.sqrt(fan)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return (x @ self.A.T) @ (self.B.T * self.scale)

    def to_dense(self) -> torch.Tensor:
        return self.scale * (self.B @ self.A)

    # -- structure ------------------------------------------------------------------------------
    def singular_values(self):
        # B A = Q_B (R_B R_Aᵀ) Q_Aᵀ with orthonormal Q's: same nonzero spectrum as the r × r core
        rb = torch.linalg.qr(float64(self.B)).R
        ra = torch.linalg.qr(float64(self.A).T).R
        return abs(self.scale) * torch.linalg.svdvals(rb @ ra.T)

    def eigenvalues(self):
        # B A and A B have the same nonzero eigenvalues; A B is r × r
        if self.hparams["r"] >= self.d_out:
            return None
        return torch.linalg.eigvals(self.scale * float64(self.A) @ float64(self.B))

    def project(self, W):
        # Eckart–Young: the truncated SVD, split evenly between the factors
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        r = self.hparams["r"]
        root = S[:r].sqrt()
        return {"B": U[:, :r] * root / self.scale, "A": root[:, None] * Vh[:r]}

    @classmethod
    def count(cls, d_out, d_in, r, **hparams) -> int:
        return r * (d_in + d_out)

    @classmethod
    def rank_bound(cls, d_out, d_in, r, **hparams) -> int:
        return min(r, d_out, d_in)

    @classmethod
    def candidates(cls, d_out, d_in, budget):
        # Ranks past min(d_out, d_in) add parameters but no expressiveness.
        r = min(min(budget, cls.max_params(d_out, d_in)) // (d_in + d_out), min(d_out, d_in))
        if r >= 1:
            yield {"r": r, "alpha": float(r)}

    @classmethod
    def smallest(cls, d_out, d_in) -> dict:
        return {"r": 1, "alpha": 1.0}

    def parameter_views(self):
        r = self.hparams["r"]
        return [View(f"A ({r} × {self.d_in}): what the rows read", self.A.detach()),
                View(f"B ({self.d_out} × {r}), scaled by α/r = {self.scale:g}", self.B.detach())]
