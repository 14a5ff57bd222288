"""Circulant: C(c)[i, j] = c[(i − j) mod n]."""
from __future__ import annotations

import torch

from .fftconv import fft_conv
from .base import View
from .tiled import TiledFFTMatrix


def circulant_index(n: int) -> torch.Tensor:
    i = torch.arange(n)
    return (i[:, None] - i[None, :]) % n


class CirculantMatrix(TiledFFTMatrix):
    """Tiles ``C(c)[i, j] = c[(i − j) mod n]`` (first column ``c``, scipy.linalg.circulant's
    convention); ``n = block`` parameters per tile, applied as ``irfft(rfft(c)·rfft(x), n)``.

    Full rank in general, eigenvalues ``fft(c)``, displacement rank ≤ 1 under (Z1, Z-1).
    Rectangular layers are tiled (see ``surm_core.families.tiled``).

    >>> m = CirculantMatrix(3, 3, init="random", seed=0)
    >>> c = m.c[0, 0].detach()
    >>> bool(torch.allclose(m.to_dense(), torch.stack([c, c.roll(1), c.roll(2)], 1)))
    True
    """

    family = "circulant"
    zero_params = ("c",)

    def param_shapes(self):
        return {"c": (self.block,)}

    @classmethod
    def tile_count(cls, block, **hparams):
        return block

    def apply_tiles(self, xt):
        # C(c) x is the cyclic convolution c ⊛ x; tiles j of the input are summed per output tile
        return fft_conv(xt.unsqueeze(-3), self.c, L=self.block, sum_dims=(-2,)).squeeze(-2)

    def to_dense(self):
        return self.dense_from_tiles(self.c[:, :, circulant_index(self.block)])

    def parameter_views(self):
        tiles = "" if self.p == self.q == 1 else ", a row per tile"
        return [View(f"c: the first column{tiles}", self.per_tile(self.c)),
                View(f"|fft(c)|: the singular values{tiles}", self.per_tile(torch.fft.fft(self.c.detach()).abs()),
                     derived=True)]
