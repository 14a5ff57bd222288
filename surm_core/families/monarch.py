"""Monarch (MoRe): ΔW = P_out · blockdiag(R_1..R_k) · P · blockdiag(L_1..L_k)."""
from __future__ import annotations

import math

import torch
from torch import nn

from .base import StructuredMatrix, View, check_hparam_names, check_size


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
    ``nblocks=4, blk_r=4`` (capped at ``d_in`` and ``in_blk`` for tiny layers). Zero init sets R = 0
    and keeps L random.

    >>> m = MonarchMatrix(8, 8, nblocks=2, blk_r=1, init="random", seed=0)
    >>> m.num_params, int(torch.linalg.matrix_rank(m.to_dense()))
    (16, 2)
    """

    family = "monarch"
    zero_params = ("R",)

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
        in_blk, _ = monarch_dims(d_out, d_in, k)
        if square:
            if blk_r is not None and blk_r != in_blk:
                raise ValueError(
                    f"square=True fixes blk_r to in_blk={in_blk}; got blk_r={blk_r}"
                )
            blk_r = in_blk
        r = min(4, in_blk) if blk_r is None else check_size("blk_r", blk_r)
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
