"""Tiled FFT convolutions with a hand-written backward.

Every FFT family reduces to ``y = crop(irfft(reduce(rfft(x, L) · rfft(k, L)), L))``: a cyclic
convolution of length L of inputs with kernels, summed over some tile dimensions. Its gradients
are cyclic correlations with the same spectra,

    ∂/∂x = irfft(reduce_x(G · conj(K)))        ∂/∂k = irfft(reduce_k(G · conj(X)))

with G = rfft of the output gradient placed back at its crop. Autograd would get there through the
adjoints of rfft/irfft (a full complex FFT each, plus padding copies); doing it by hand costs one
rfft and two irfft per backward and reuses the forward's spectra.

The negacyclic convolution (wrap-around with a sign flip: products modulo tⁿ + 1, the
skew-circulant product S(k) x) has the same structure in another transform,
:func:`negacyclic_fft`: real x of even length n packed as ``z = x[:n/2] + i·x[n/2:]`` and
twisted by ``θ^j`` (θ = e^{iπ/n}) turns tⁿ = −1 into a cyclic wrap of length n/2, so one complex
FFT of length n/2 (the cost of an rfft of length n) diagonalizes it. For real signals the
transform of the negacyclic reversal (the adjoint) is the complex conjugate, as for rfft, so the
same backward formulas hold; LDR (ldr.py) chains both transforms.
"""
from __future__ import annotations

import functools
import math

import torch


def _sum_dims(t: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    dims = tuple(d for d in dims if t.shape[d] != 1)  # summing a size-1 dim is a copy for nothing
    return t.sum(dim=dims, keepdim=True) if dims else t


@functools.lru_cache(maxsize=64)
def _twist(n: int, m: int, sign: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """θ^(sign·j) for j < m, θ = e^{iπ/n} (complex ``dtype``); cached: every block of rows uses it."""
    angle = torch.arange(m, dtype=torch.float64, device=device) * (sign * math.pi / n)
    return torch.polar(torch.ones_like(angle), angle).to(dtype)


def negacyclic_fft(x: torch.Tensor) -> torch.Tensor:
    """Spectrum of real x (last dim n) in which negacyclic convolution is a product: x's
    polynomial evaluated at the roots of tⁿ = −1 (n even: half of them, the rest are conjugates).
    Length n/2 for even n (packed), n for odd n."""
    n = x.shape[-1]
    if n % 2 == 0:
        z = torch.complex(x[..., : n // 2], x[..., n // 2 :])
    else:
        z = torch.complex(x, torch.zeros_like(x))
    return torch.fft.fft(z.mul_(_twist(n, z.shape[-1], 1, z.dtype, z.device)))


def negacyclic_ifft(X: torch.Tensor, n: int) -> torch.Tensor:
    """The real length-n signal whose :func:`negacyclic_fft` is X."""
    z = torch.fft.ifft(X).mul_(_twist(n, X.shape[-1], -1, X.dtype, X.device))
    return torch.cat([z.real, z.imag], dim=-1) if n % 2 == 0 else z.real


# The rows of a batch (its tokens) go through the transforms in blocks whose products hold ~2^18
# complex numbers (2 MiB in complex64): a block's spectrum, its product with the kernel and the
# inverse transform's working copy then stay in cache instead of each making a round trip to
# memory. Measured at 4096 tokens, forward+backward as a ratio to LoRA r=8: Toeplitz (768) 2.80
# in one block, 2.13 in blocks of 2^18, 2.27 of 2^17, 2.58 of 2^16 (smaller blocks pay Python's
# per-call overhead more often); LDR r=2 (384) 3.88 at 2^18, 4.16 at 2^17. On CUDA one block:
# there, many small launches would cost more.
_BLOCK_ELEMENTS = 1 << 18


def row_blocks(rows: int, row_elements: int, device: torch.device) -> list[slice]:
    """Slices of ``rows`` rows, each block's products ~``_BLOCK_ELEMENTS`` complex numbers."""
    step = max(1, rows if device.type == "cuda" else _BLOCK_ELEMENTS // row_elements)
    return [slice(i, i + step) for i in range(0, rows, step)]


class _FFTConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, k, L, start, length, sum_dims):
        K = torch.fft.rfft(k, n=L)
        # rows: x's leading dims that k does not have, flattened
        batch = max(x.dim() - k.dim(), 0)
        xb = x.reshape(-1, *x.shape[batch:])
        prod_shape = torch.broadcast_shapes((1, *xb.shape[1:-1], K.shape[-1]), K.shape)
        X = torch.empty((*xb.shape[:-1], K.shape[-1]), dtype=K.dtype, device=x.device)
        y_shape = [xb.shape[0], *prod_shape[1:-1], length]
        for d in sum_dims:
            y_shape[d] = 1
        y = x.new_empty(y_shape)
        for rows in row_blocks(xb.shape[0], prod_shape.numel(), x.device):
            X[rows] = Xr = torch.fft.rfft(xb[rows], n=L)
            y[rows] = torch.fft.irfft(_sum_dims(Xr * K, sum_dims), n=L)[..., start : start + length]
        ctx.save_for_backward(X, K)
        ctx.meta = (L, start, x.shape, k.shape[-1], prod_shape)
        return y.reshape(*x.shape[:batch], *y.shape[1:])

    @staticmethod
    def backward(ctx, gy):
        X, K = ctx.saved_tensors
        L, start, x_shape, n_k, prod_shape = ctx.meta
        gyb = gy.reshape(X.shape[0], *gy.shape[gy.dim() - len(prod_shape) + 1 :])
        conj_K = K.conj()
        in_place = torch.Size((1, *gyb.shape[1:-1], K.shape[-1])) == prod_shape  # G·conj(K) fits in G
        gx = X.new_empty((*X.shape[:-1], x_shape[-1]), dtype=gy.dtype) if ctx.needs_input_grad[0] else None
        GX = torch.zeros_like(K)  # stays zero for an empty batch
        for rows in row_blocks(X.shape[0], prod_shape.numel(), X.device):
            g = gyb[rows]
            if g.shape[-1] != L:
                g = torch.nn.functional.pad(g, (start, L - start - g.shape[-1]))
            G = torch.fft.rfft(g)
            if ctx.needs_input_grad[1]:  # first: the in-place product below overwrites G
                GX += (G * X[rows].conj()).sum_to_size(K.shape)
            if gx is not None:
                GK = G.mul_(conj_K) if in_place else G * conj_K
                gx[rows] = torch.fft.irfft(GK.sum_to_size(X[rows].shape), n=L)[..., : x_shape[-1]]
        gk = torch.fft.irfft(GX, n=L)[..., :n_k] if ctx.needs_input_grad[1] else None
        return (gx.reshape(x_shape) if gx is not None else None), gk, None, None, None, None


def fft_conv(x, k, L: int, start: int = 0, length: int | None = None, sum_dims: tuple[int, ...] = ()):
    """``irfft(Σ_{sum_dims} rfft(x, L)·rfft(k, L), L)[..., start:start+length]`` (keepdim sums).

    ``x`` and ``k`` broadcast against each other (real, last dim ≤ L); ``sum_dims`` are negative
    dims of the broadcast product, kept as size 1. With ``L = n`` and no crop this is the cyclic
    convolution ``k ⊛ x``, i.e. the circulant product ``C(k) x``.
    """
    length = L - start if length is None else length
    return _FFTConv.apply(x, k.to(x.dtype), L, start, length, tuple(sum_dims))
