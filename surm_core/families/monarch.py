"""Monarch (MoRe): ΔW = P_out · blockdiag(R_1..R_k) · P · blockdiag(L_1..L_k)."""
from __future__ import annotations

import math

import torch
from torch import nn

from .base import StructuredMatrix, View, check_hparam_names, check_size, edges, float64


#: Largest intermediate rank k·blk_r applied as two thin GEMMs rather than batched block matmuls.
THIN_RANK = 64


def monarch_dims(d_out: int, d_in: int, nblocks: int) -> tuple[int, int]:
    """(in_blk, out_blk) of MoRe's rectangular blocks."""
    in_blk = -(-d_in // nblocks)
    out_blk = -(-in_blk * d_out // d_in)
    return in_blk, out_blk


class MonarchMatrix(StructuredMatrix):
    """MoRe's Monarch adapter, ``k·blk_r·(in_blk + out_blk)`` parameters, rank ≤ ``k·blk_r``.

    With ``k = nblocks``, ``in_blk = ceil(d_in/k)``, ``out_blk = ceil(in_blk·d_out/d_in)``:
    the input is zero-padded to ``k·in_blk`` and cut into k blocks; block i maps through
    ``L_i: blk_r × in_blk``; the ``k × blk_r`` intermediate is read in the transposed order
    (the stride permutation P: position ``a·blk_r + t`` takes ``t·k + a``); block a maps through
    ``R_a: out_blk × blk_r``; the output, ``k × out_blk``, is read transposed (``o·k + a`` takes
    block a's row o) and truncated to ``d_out``. Two batched matmuls and two reshapes, no dense
    form. ``square=True`` is classic Monarch, ``blk_r = in_blk``. Defaults are MoRe's,
    ``nblocks=4, blk_r=4`` (capped at ``d_in`` and ``in_blk`` for tiny layers, then lowered until
    the map has no more parameters than the dense one). Zero init sets R = 0 and keeps L random.

    >>> m = MonarchMatrix(8, 8, nblocks=2, blk_r=1, init="random", seed=0)
    >>> m.num_params, int(torch.linalg.matrix_rank(m.to_dense()))
    (16, 2)
    """

    family = "monarch"
    zero_params = ("R",)
    color = "#17becf"
    description = """### Monarch (MoRe)
**Formula.** `ΔW = P_out · blockdiag(R₁..R_k) · P · blockdiag(L₁..L_k)`: the input is cut into `k`
blocks, each block is compressed by its own `Lᵢ: blk_r × in_blk`, a fixed permutation `P` mixes
the pieces across blocks, and each `Rᵢ: out_blk × blk_r` expands them again (`R = 0` at the
start).

**Parameters.** `k · blk_r · (in_blk + out_blk)` ≈ `blk_r · (d_in + d_out)`: the cost of LoRA at
rank `blk_r`, but the rank can reach `k · blk_r`.

**Fast algorithm.** Two batched matrix products and a reshape-transpose:
`blk_r · (d_in + d_out)` multiply-adds.

**Displacement rank.** No small bound of its own (at most twice its rank, `2 k · blk_r`); its
structure is the block pattern, visible in the heatmap as `k` groups of input columns.

**Budget.** MoRe's default is `k = 4` blocks of rank `blk_r = 4`. A budget takes the most
parameters that fit, then the highest rank `k · blk_r`, then 4 blocks (MoRe found 4 best)."""

    def __init__(self, d_out: int, d_in: int, init: str = "zero", seed: int | None = None, **hparams):
        super().__init__(d_out, d_in, self.resolve(d_out, d_in, **hparams))
        k, r = self.hparams["nblocks"], self.hparams["blk_r"]
        self.in_blk, self.out_blk = monarch_dims(self.d_out, self.d_in, k)
        self.L = nn.Parameter(torch.empty(k, r, self.in_blk))
        self.R = nn.Parameter(torch.empty(k, self.out_blk, r))
        self._init_params(init, seed)

    @classmethod
    def resolve(cls, d_out, d_in, nblocks=None, blk_r=None, square=False, **rest) -> dict:
        check_hparam_names(cls.family, rest, ("nblocks", "blk_r", "square"))
        k = min(4, d_in) if nblocks is None else check_size("nblocks", nblocks)
        if k > d_in:
            raise ValueError(f"nblocks={k} exceeds d_in={d_in}: every block needs an input")
        if blk_r is not None:
            blk_r = check_size("blk_r", blk_r)
        # Defaults shrink until the map has no more parameters than allowed (max_params): the
        # rank to 1 first, then the block count to the one nearest 4 that fits.
        limit = cls.max_params(d_out, d_in)
        rank = lambda k: monarch_dims(d_out, d_in, k)[0] if square else blk_r or 1
        fits = lambda k, r: cls.count(d_out, d_in, k, r) <= limit
        if nblocks is None and not fits(k, rank(k)):
            k = min((j for j in range(1, d_in + 1) if fits(j, rank(j))), key=lambda j: abs(j - 4), default=k)
        in_blk, _ = monarch_dims(d_out, d_in, k)
        if square and blk_r is not None and blk_r != in_blk:
            raise ValueError(f"square=True fixes blk_r to in_blk={in_blk}; got blk_r={blk_r}")
        if square:
            r = in_blk
        elif blk_r is None:
            r = max([j for j in range(1, min(4, in_blk) + 1) if fits(k, j)], default=1)
        else:
            r = blk_r
        return {"nblocks": k, "blk_r": r, "square": bool(square)}

    def _init_std(self, name: str) -> float:
        fan = self.in_blk if name == "L" else self.hparams["blk_r"]
        return 1.0 / math.sqrt(fan)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        k, r = self.hparams["nblocks"], self.hparams["blk_r"]
        if k * r <= THIN_RANK:
            # Adapter regime: the product has rank ≤ k·r, so two thin GEMMs with the assembled
            # (permuted, block-sparse) factors cost like LoRA at rank k·r. Those GEMMs are
            # memory-bound, so their k-fold extra flops are free, while the batched path below
            # copies the activations twice for its transposes.
            left, right = self.factors()
            return (x @ left.T) @ right.T
        lead = x.shape[:-1]
        x = nn.functional.pad(x, (0, k * self.in_blk - self.d_in)).reshape(-1, k, self.in_blk)
        h = torch.bmm(x.transpose(0, 1), self.L.transpose(1, 2))  # (k, N, r)
        # stride permutation: flat index a·r + t of the intermediate takes t·k + a
        h = h.transpose(0, 1).reshape(-1, r, k).permute(2, 0, 1)  # (k, N, r)
        y = torch.bmm(h, self.R.transpose(1, 2))  # (k, N, out_blk)
        y = y.permute(1, 2, 0).reshape(-1, self.out_blk * k)[:, : self.d_out]
        return y.reshape(*lead, self.d_out)

    def permutation(self) -> torch.Tensor:
        """Index ``perm`` with ``intermediate_after[i] = intermediate_before[perm[i]]``."""
        k, r = self.hparams["nblocks"], self.hparams["blk_r"]
        a, t = torch.meshgrid(torch.arange(k), torch.arange(r), indexing="ij")
        return (t * k + a).reshape(-1)

    def output_permutation(self) -> torch.Tensor:
        """Index ``perm`` with ``output[i] = blocks_stacked[perm[i]]`` (row o·k + a is block a's row o)."""
        k = self.hparams["nblocks"]
        o, a = torch.meshgrid(torch.arange(self.out_blk), torch.arange(k), indexing="ij")
        return (a * self.out_blk + o).reshape(-1)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(left, right) with ΔW = right @ left: P·blockdiag(L) cropped to d_in columns
        (k·blk_r × d_in) and P_out·blockdiag(R) cropped to d_out rows (d_out × k·blk_r)."""
        k = self.hparams["nblocks"]
        eye = torch.eye(k, dtype=self.L.dtype, device=self.L.device)
        left = torch.einsum("kri,kj->krji", self.L, eye).flatten(2).flatten(0, 1)
        right = torch.einsum("kor,kj->kojr", self.R, eye).flatten(2).flatten(0, 1)
        return left[self.permutation(), : self.d_in], right[self.output_permutation()[: self.d_out]]

    def to_dense(self) -> torch.Tensor:
        left, right = self.factors()
        return right @ left

    # -- structure ------------------------------------------------------------------------------
    def _inner(self) -> int:
        return self.hparams["nblocks"] * self.hparams["blk_r"]

    def singular_values(self):
        # ΔW = right @ left through k·blk_r intermediates: below full rank, as lowrank, the SVD
        # of the small core R_right R_leftᵀ from QR of the factors
        if self._inner() >= min(self.shape):
            return None
        left, right = (float64(f) for f in self.factors())
        return torch.linalg.svdvals(torch.linalg.qr(right).R @ torch.linalg.qr(left.T).R.T)

    def eigenvalues(self):
        if self._inner() >= self.d_out:
            return None
        left, right = (float64(f) for f in self.factors())
        return torch.linalg.eigvals(left @ right)  # right @ left and left @ right share them

    def project(self, W):
        # Intermediate j = b·r + t' (after P) is row t = perm[j] % r of L_a, a = perm[j] // r,
        # and column t' of R_b: one rank-1 term per j, coupling input block a with output block
        # b and no parameter shared with any other term. So W's (b, a) block is fitted by its
        # own truncated SVD with as many terms as (b, a) has. Zero padding to whole blocks
        # leaves those SVDs' nonzero terms unchanged and puts zeros where the cropped
        # rows/columns are.
        k, r, out_blk, in_blk = self.hparams["nblocks"], self.hparams["blk_r"], self.out_blk, self.in_blk
        padded = W.new_zeros(k * out_blk, k * in_blk)
        padded[: self.d_out, : self.d_in] = W
        blocks = padded.reshape(out_blk, k, k, in_blk).permute(1, 2, 0, 3)  # [b, a]: rows o·k + b
        j = torch.arange(k * r)
        b, t_out, a, t_in = j // r, j % r, self.permutation() // r, self.permutation() % r
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

    def tile_edges(self):
        # its k input blocks of in_blk columns; the rows are interleaved by the output
        # permutation, so they form no contiguous blocks
        return [], edges(self.in_blk, self.d_in)

    @classmethod
    def count(cls, d_out, d_in, nblocks, blk_r, **hparams) -> int:
        in_blk, out_blk = monarch_dims(d_out, d_in, nblocks)
        return nblocks * blk_r * (in_blk + out_blk)

    @classmethod
    def rank_bound(cls, d_out, d_in, nblocks, blk_r, **hparams) -> int:
        return min(nblocks * blk_r, d_out, d_in)

    @classmethod
    def candidates(cls, d_out, d_in, budget):
        # For each block count, the largest blk_r that fits (blk_r past in_blk adds nothing).
        budget = min(budget, cls.max_params(d_out, d_in))
        for k in range(1, d_in + 1):
            in_blk, out_blk = monarch_dims(d_out, d_in, k)
            r = min(budget // (k * (in_blk + out_blk)), in_blk)
            if r >= 1:
                yield {"nblocks": k, "blk_r": r, "square": False}

    @classmethod
    def preference(cls, d_out, d_in, nblocks, **hparams) -> float:
        return -abs(nblocks - 4)  # MoRe found 4 blocks best

    @classmethod
    def smallest(cls, d_out, d_in) -> dict:
        return min(
            ({"nblocks": k, "blk_r": 1, "square": False} for k in range(1, d_in + 1)),
            key=lambda hp: cls.count(d_out, d_in, **hp),
        )

    def parameter_views(self):
        k, r = self.hparams["nblocks"], self.hparams["blk_r"]
        return [View(f"L_1..L_{k} ({r} × {self.in_blk} each), stacked", self.L.detach().reshape(k * r, self.in_blk)),
                View(f"R_1..R_{k} ({self.out_blk} × {r} each), side by side",
                     self.R.detach().permute(1, 0, 2).reshape(self.out_blk, k * r))]
