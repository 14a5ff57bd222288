"""Shared machinery of the FFT families (circulant, Toeplitz, symmetric Toeplitz, LDR).

Rectangular convention: the ``d_out × d_in`` map is a grid of ``p × q`` square tiles of size
``block`` (``p = ceil(d_out/block)``, ``q = ceil(d_in/block)``), each a member of the family with
its own parameters; the input is zero-padded to ``q·block`` and the output truncated to ``d_out``.
The default ``block = max(d_out, d_in)`` is a single tile, cropped. A smaller block means more
tiles and more parameters: that is how a budget is met.
"""
from __future__ import annotations

import math

import scipy.fft
import torch
from torch import nn

from .base import StructuredMatrix, check_hparam_names, check_size, edges, grid

# torch.fft has no bfloat16 kernels (and half only for powers of two on CUDA): compute in float32.
_FFT_UPCAST = (torch.float16, torch.bfloat16)

#: How the tiled families meet a budget, the last part of their ``description``.
BUDGET_TEXT = (
    "**Budget.** A layer is covered by a grid of `block × block` tiles, each with its own "
    "parameters (zero-padded at the edges). One tile of size `max(d_out, d_in)` is the cheapest; "
    "smaller tiles cost more parameters and mix less globally."
)


def fft_len(n: int) -> int:
    """Smallest 2·3·5-smooth length ≥ n (pocketfft/cuFFT are fastest on those)."""
    return scipy.fft.next_fast_len(n, real=True)


class TiledFFTMatrix(StructuredMatrix):
    """Base of the tiled families; subclasses define the tile parameters and their products."""

    #: hyperparameters besides ``block`` (name -> default), e.g. LDR's displacement rank ``r``
    extra_hparams: dict = {}

    def __init__(self, d_out: int, d_in: int, init: str = "zero", seed: int | None = None, **hparams):
        super().__init__(d_out, d_in, self.resolve(d_out, d_in, **hparams))
        self.block = self.hparams["block"]
        self.p, self.q = grid(self.d_out, self.d_in, self.block)
        for name, shape in self.param_shapes().items():
            setattr(self, name, nn.Parameter(torch.empty(self.p, self.q, *shape)))
        self._init_params(init, seed)

    @classmethod
    def resolve(cls, d_out, d_in, block=None, **rest) -> dict:
        check_hparam_names(cls.family, rest, ("block", *cls.extra_hparams))
        extra = {name: check_size(name, rest.get(name, default)) for name, default in cls.extra_hparams.items()}
        side = max(d_out, d_in)
        if block is None:
            # one tile, unless that has more parameters than allowed (a Toeplitz tile of 2n − 1
            # on a 1 × n layer): then the largest block that fits
            block = side
            if cls.count(d_out, d_in, block=side, **extra) > d_out * d_in:
                limit = cls.max_params(d_out, d_in)
                block = next((b for b in range(side, 0, -1) if cls.count(d_out, d_in, block=b, **extra) <= limit), side)
        block = check_size("block", block)
        if block > side:
            raise ValueError(f"block={block} exceeds the layer's largest side {side}")
        return {"block": block, **extra}

    def param_shapes(self) -> dict:  # pragma: no cover - abstract
        """Shapes of each tile's parameters (the grid dims ``p, q`` are prepended)."""
        raise NotImplementedError

    def _init_std(self, name: str) -> float:
        # each output sums ~min(d_in, block) products per tile row, q tiles
        return 1.0 / math.sqrt(self.q * min(self.block, self.d_in))

    # -- tiling helpers -----------------------------------------------------------------------
    def tiles_in(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d_in) -> (..., q, block), zero-padded."""
        if self.q * self.block != self.d_in:  # padding by nothing would still copy
            x = nn.functional.pad(x, (0, self.q * self.block - self.d_in))
        return x.reshape(*x.shape[:-1], self.q, self.block)

    def tiles_out(self, y: torch.Tensor) -> torch.Tensor:
        """(..., p, block) -> (..., d_out), truncated."""
        return y.reshape(*y.shape[:-2], self.p * self.block)[..., : self.d_out]

    def dense_from_tiles(self, tiles: torch.Tensor) -> torch.Tensor:
        """(p, q, block, block) -> the cropped (d_out, d_in) matrix."""
        n = self.block
        full = tiles.permute(0, 2, 1, 3).reshape(self.p * n, self.q * n)
        return full[: self.d_out, : self.d_in]

    def split_tiles(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """W cut into (p, q, block, block) tiles (zero-padded), and the mask of visible entries."""
        n, p, q = self.block, self.p, self.q
        padded = W.new_zeros(p * n, q * n)
        padded[: self.d_out, : self.d_in] = W
        visible = torch.zeros_like(padded)
        visible[: self.d_out, : self.d_in] = 1
        return tuple(t.reshape(p, n, q, n).transpose(1, 2) for t in (padded, visible))

    def diagonal_means(self, W: torch.Tensor, index: torch.Tensor, count: int) -> torch.Tensor:
        """Per tile, the mean of W's visible entries at each value of ``index`` (block × block →
        [0, count)), 0 where no entry is visible: the Frobenius projection onto tiles whose
        entries are equal wherever ``index`` is (circulant, Toeplitz, ...)."""
        tiles, visible = self.split_tiles(W)
        flat = index.flatten()
        sums = W.new_zeros(self.p, self.q, count).index_add_(2, flat, tiles.flatten(2))
        counts = W.new_zeros(self.p, self.q, count).index_add_(2, flat, visible.flatten(2))
        return sums / counts.clamp(min=1)

    def tile_edges(self) -> tuple[list[int], list[int]]:
        return edges(self.block, self.d_out), edges(self.block, self.d_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        dtype = x.dtype
        if dtype in _FFT_UPCAST:
            x = x.float()
        y = self.tiles_out(self.apply_tiles(self.tiles_in(x)))
        return y.to(dtype)

    def apply_tiles(self, xt: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """(..., q, block) -> (..., p, block): Σ_j tile(i, j) x_j for every output tile i."""
        raise NotImplementedError

    # -- what the explorer shows ---------------------------------------------------------------
    def per_tile(self, t: torch.Tensor) -> torch.Tensor:
        """A tile parameter (p, q, ...) as one tile's array, or else a row per row of tiles, each
        tile's parameters side by side (1 × 1 tiles: the matrix itself)."""
        t = t.detach()
        return t[0, 0] if self.p == self.q == 1 else t.reshape(self.p, -1)

    def by_tile(self) -> str:
        """What a parameter view's title adds when there are several tiles."""
        return "" if self.p == self.q == 1 else ", by tile"

    def layout_note(self) -> str:
        n, p, q = self.block, self.p, self.q
        cropped = (p * n, q * n) != (self.d_out, self.d_in)
        if p == q == 1:
            return (f"One {n} × {n} {self.family} tile, cropped to {self.d_out} × {self.d_in}: its last "
                    f"{'rows' if self.d_out < n else 'columns'} are not shown.") if cropped else ""
        return (f"A {p} × {q} grid of {n} × {n} tiles{' (the last ones cropped)' if cropped else ''}, each a "
                f"{self.family} with its own parameters. The structure and its bounds hold tile by tile, "
                "not across tile edges: the whole map's displacement rank is larger than one tile's.")

    # -- budget fitting -----------------------------------------------------------------------
    @classmethod
    def count(cls, d_out, d_in, block, **hparams) -> int:
        p, q = grid(d_out, d_in, block)
        return p * q * cls.tile_count(block, **hparams)

    @classmethod
    def tile_count(cls, block: int, **hparams) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def candidates(cls, d_out, d_in, budget):
        budget = min(budget, cls.max_params(d_out, d_in))
        for block in range(1, max(d_out, d_in) + 1):
            hp = {"block": block, **cls.extra_hparams}
            if cls.count(d_out, d_in, **hp) <= budget:
                yield hp

    @classmethod
    def preference(cls, d_out, d_in, block, **hparams) -> float:
        return block  # among equals, fewer and larger tiles mix more globally

    @classmethod
    def smallest(cls, d_out, d_in) -> dict:
        blocks = range(1, max(d_out, d_in) + 1)
        return min(({"block": b, **cls.extra_hparams} for b in blocks), key=lambda hp: cls.count(d_out, d_in, **hp))
