"""Low displacement rank: Σ_{i=1..r} C(g_i) · S(h_i)."""
from __future__ import annotations

import torch

from .circulant import circulant_index
from .fftconv import fft_conv
from .tiled import TiledFFTMatrix


def skew_circulant(h: torch.Tensor) -> torch.Tensor:
    """S(h)[i, j] = h[i − j] for i ≥ j, −h[n + i − j] above the diagonal (batched over leading dims)."""
    n = h.shape[-1]
    i = torch.arange(n)
    sign = torch.where(i[:, None] >= i[None, :], 1.0, -1.0).to(h.dtype)
    return h[..., circulant_index(n)] * sign


class LDRMatrix(TiledFFTMatrix):
    """Tiles ``Σ_{i=1..r} C(g_i)·S(h_i)``, C circulant, S skew-circulant; ``2·r·n`` parameters per
    tile (``n = block``), displacement rank ≤ r under (Z1, Z-1), and every n × n matrix of
    displacement rank r has this form: ``r`` dials from circulant-like (r = 1) to any matrix (r = n).

    Applied with FFTs only: S(h)x is a negacyclic convolution (``fftconv.negacyclic_fft``: one
    complex FFT of length n/2 per signal for even n), then C(g) a cyclic one.

    >>> m = LDRMatrix(8, 8, r=2, init="random", seed=0)
    >>> m.num_params
    32
    """

    family = "ldr"
    zero_params = ("g",)
    extra_hparams = {"r": 1}

    def param_shapes(self):
        r, n = self.hparams["r"], self.block
        return {"g": (r, n), "h": (r, n)}

    def _init_std(self, name: str) -> float:
        # entries of Σ C(g)S(h) have variance r·n·σ_g²·σ_h²; aim for 1/(q·min(n, d_in)) like the rest
        r, n = self.hparams["r"], self.block
        return (self.q * min(n, self.d_in) * r * n) ** -0.25

    @classmethod
    def tile_count(cls, block, r, **hparams):
        return 2 * r * block

    def apply_tiles(self, xt):
        n = self.block
        # S(h_i) x_j for every tile and term: negacyclic convolutions (one input transform) ...
        s = fft_conv(xt[..., None, :, None, :], self.h, L=n, negacyclic=True)  # (..., p, q, r, n)
        y = fft_conv(s, self.g, L=n, sum_dims=(-3, -2))  # ... then Σ_{j, i} C(g_i) s_ij, (..., p, 1, 1, n)
        return y.flatten(-3, -2).squeeze(-2)

    def to_dense(self):
        # C(g_i) times the explicit S(h_i), column by column: a circulant product is a cyclic
        # convolution of each column with g (O(n² log n) where the matmul would be O(n³)).
        n = self.block
        S = torch.fft.rfft(skew_circulant(self.h), dim=-2)  # (p, q, r, F, n)
        G = torch.fft.rfft(self.g)[..., None]  # (p, q, r, F, 1)
        return self.dense_from_tiles(torch.fft.irfft((G * S).sum(dim=2), n=n, dim=-2))

    @classmethod
    def candidates(cls, d_out, d_in, budget):
        # For each block size, the largest displacement rank that fits (r ≤ n: beyond, no gain).
        for block in range(1, max(d_out, d_in) + 1):
            r = min(budget // cls.count(d_out, d_in, block, r=1), block)
            if r >= 1:
                yield {"block": block, "r": r}
