"""Circulant: C(c)[i, j] = c[(i − j) mod n]."""
from __future__ import annotations

import torch

from .base import View, float64
from .fftconv import fft_conv
from .tiled import BUDGET_TEXT, TiledFFTMatrix


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
    color = "#d62728"
    description = f"""### Circulant
**Formula.** `C(c)[i, j] = c[(i − j) mod n]`: the first column is `c`, and every next column is
the previous one rotated down by one. A circulant is a cyclic convolution with `c`.

**Parameters.** `n` per `n × n` tile.

**Fast algorithm.** `C(c) x = irfft(rfft(c) · rfft(x))`: three FFTs, `O(n log n)` instead of
`n²`. The Fourier basis diagonalises every circulant, so its eigenvalues are exactly `fft(c)`
and its singular values `|fft(c)|`: usually full rank with only `n` parameters.

**Displacement rank.** `C` commutes with the cyclic shift `Z₁` (`Z₁ C − C Z₁ = 0`), and
`Z₁ C − C Z₋₁` has rank at most 1: the most structured family here.

{BUDGET_TEXT}"""

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

    # -- structure ------------------------------------------------------------------------------
    def _whole_tiles(self) -> bool:
        """No tile is cropped (``d_out = p·block``, ``d_in = q·block``)."""
        return self.d_out == self.p * self.block and self.d_in == self.q * self.block

    def _frequency_blocks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The tiles' spectra ``fft(c)`` regrouped per frequency: with F the DFT,
        (I ⊗ F) M (I ⊗ F)^H is a p × q grid of diagonals, one p × q matrix per frequency. The
        spectrum of real c is conjugate-symmetric, so only frequencies 0..block/2 are formed:
        returned as (real blocks: frequency 0 and, for an even block, block/2), (complex blocks:
        the others, each standing for itself and its conjugate). Real blocks decompose ~4×
        faster than complex ones, which matters most for small tiles (block 1 is one real
        matrix, as large as the map)."""
        spectra = torch.fft.rfft(float64(self.c), dim=-1).permute(2, 0, 1)  # (block // 2 + 1, p, q)
        real = [0] + ([self.block // 2] if self.block % 2 == 0 else [])
        return spectra[real].real, spectra[1 : (self.block + 1) // 2]

    def singular_values(self):
        if not self._whole_tiles():
            return None
        real, paired = self._frequency_blocks()
        s = torch.linalg.svdvals(paired).flatten()
        return torch.cat([torch.linalg.svdvals(real).flatten(), s, s])

    def eigenvalues(self):
        if not self._whole_tiles():
            return None
        real, paired = self._frequency_blocks()
        lam = torch.linalg.eigvals(paired).flatten()
        return torch.cat([torch.linalg.eigvals(real).flatten(), lam, lam.conj()])

    def project(self, W):
        # per tile, the mean of W's visible entries along each wrapped diagonal
        return {"c": self.diagonal_means(W, circulant_index(self.block), self.block)}

    def eigenvalue_caption(self):
        if self.block == self.d_out == self.d_in:
            return "exactly fft(c), the DFT of its first column"
        return None

    def parameter_views(self):
        tiles = self.by_tile()
        return [View(f"c: the first column{tiles}", self.per_tile(self.c)),
                View(f"|fft(c)|: the singular values{tiles}", self.per_tile(torch.fft.fft(self.c.detach()).abs()),
                     derived=True)]
