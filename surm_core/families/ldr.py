"""Low displacement rank: Σ_{i=1..r} C(g_i) · S(h_i)."""
from __future__ import annotations

import torch

from .circulant import circulant_index
from .fftconv import negacyclic_fft, negacyclic_ifft, row_blocks
from .base import View
from .tiled import TiledFFTMatrix


def skew_circulant(h: torch.Tensor) -> torch.Tensor:
    """S(h)[i, j] = h[i − j] for i ≥ j, −h[n + i − j] above the diagonal (batched over leading dims)."""
    n = h.shape[-1]
    i = torch.arange(n)
    sign = torch.where(i[:, None] >= i[None, :], 1.0, -1.0).to(h.dtype)
    return h[..., circulant_index(n)] * sign


class _LDRProduct(torch.autograd.Function):
    """``y_i = Σ_{j,t} C(g_ijt) S(h_ijt) x_j`` for tiles (i, j) and terms t, with the hand-written
    backward of ``fftconv`` (adjoint = product with the conjugate spectrum) through both
    transforms. Each block of rows goes x → S(h)x → C(g)S(h)x without the middle product
    leaving the cache (two chained fft_conv calls wrote it to memory and read it back).

    Shapes: x (B, q, n), g and h (p, q, r, n) -> y (B, p, n).
    """

    @staticmethod
    def forward(ctx, x, g, h):
        n = x.shape[-1]
        H, G = negacyclic_fft(h), torch.fft.rfft(g)
        X = torch.empty((*x.shape[:-1], H.shape[-1]), dtype=H.dtype, device=x.device)
        S = torch.empty((x.shape[0], *G.shape), dtype=G.dtype, device=x.device)
        y = x.new_empty((x.shape[0], g.shape[0], n))
        for rows in row_blocks(x.shape[0], G[0].numel() * g.shape[0], x.device):
            X[rows] = Xr = negacyclic_fft(x[rows])
            S[rows] = Sr = torch.fft.rfft(negacyclic_ifft(Xr[:, None, :, None, :] * H, n))  # S(h)x, (b, p, q, r, F)
            y[rows] = torch.fft.irfft((Sr * G).sum(dim=(2, 3)), n=n)
        ctx.save_for_backward(X, S, G, H)
        return y

    @staticmethod
    def backward(ctx, gy):
        X, S, G, H = ctx.saved_tensors
        n = gy.shape[-1]
        gx = gy.new_empty((*X.shape[:-1], n)) if ctx.needs_input_grad[0] else None
        gG, gH = torch.zeros_like(G), torch.zeros_like(H)  # stay zero for an empty batch
        for rows in row_blocks(X.shape[0], G[0].numel() * G.shape[0], X.device):
            Gy = torch.fft.rfft(gy[rows])[:, :, None, None, :]  # (b, p, 1, 1, F)
            if ctx.needs_input_grad[1]:
                gG += (Gy * S[rows].conj()).sum(0)
            Gs = negacyclic_fft(torch.fft.irfft(Gy * G.conj(), n=n))  # gradient of S(h)x, transformed
            if ctx.needs_input_grad[2]:
                gH += (Gs * X[rows][:, None, :, None, :].conj()).sum(0)
            if gx is not None:
                gx[rows] = negacyclic_ifft((Gs * H.conj()).sum(dim=(1, 3)), n)
        gg = torch.fft.irfft(gG, n=n) if ctx.needs_input_grad[1] else None
        gh = negacyclic_ifft(gH, n) if ctx.needs_input_grad[2] else None
        return gx, gg, gh


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
        rows = xt.reshape(-1, *xt.shape[-2:])
        y = _LDRProduct.apply(rows, self.g.to(xt.dtype), self.h.to(xt.dtype))
        return y.reshape(*xt.shape[:-2], *y.shape[-2:])

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

    def parameter_views(self):
        tiles = "" if self.p == self.q == 1 else ", tile by tile"
        return [View(f"g_i of C(g_i): row i{tiles}", self.per_tile(self.g)),
                View(f"h_i of S(h_i): row i{tiles}", self.per_tile(self.h))]
