"""Dense: any ``d_out × d_in`` matrix (full fine-tuning of a layer, the reference point)."""
from __future__ import annotations

import torch
from torch import nn

from .base import StructuredMatrix, View, check_hparam_names


class DenseMatrix(StructuredMatrix):
    """ΔW = W, every entry trainable: ``d_out·d_in`` parameters, applied by one matmul.

    >>> m = DenseMatrix(2, 3, init="random", seed=0)
    >>> m.to_dense().shape, m.num_params
    (torch.Size([2, 3]), 6)
    """

    family = "dense"
    zero_params = ("weight",)
    color = "#4d4d4d"
    description = """### Dense (full fine-tuning of a layer)
**Formula.** `ΔW = W`: any `d_out × d_in` matrix, every entry trained.

**Parameters.** `d_out · d_in` (147,456 for one 384 × 384 MiniLM projection).

**Fast algorithm.** None: a matrix–vector product costs `d_out · d_in` multiply-adds.

**Displacement rank.** Generically `n`: no structure at all. This is the reference every other
family is compared with."""

    def __init__(self, d_out: int, d_in: int, init: str = "zero", seed: int | None = None, **hparams):
        super().__init__(d_out, d_in, self.resolve(d_out, d_in, **hparams))
        self.weight = nn.Parameter(torch.empty(self.d_out, self.d_in))
        self._init_params(init, seed)

    @classmethod
    def resolve(cls, d_out, d_in, **hparams) -> dict:
        check_hparam_names(cls.family, hparams, ())
        return {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return x @ self.weight.T

    def to_dense(self) -> torch.Tensor:
        return self.weight.clone()

    def project(self, W):
        return {"weight": W}

    @classmethod
    def count(cls, d_out, d_in, **hparams) -> int:
        return d_out * d_in

    @classmethod
    def candidates(cls, d_out, d_in, budget):
        yield {}

    @classmethod
    def smallest(cls, d_out, d_in) -> dict:
        return {}

    def parameter_views(self):
        return [View("W: every entry is a parameter", self.weight.detach())]
