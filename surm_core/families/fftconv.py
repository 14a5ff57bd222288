"""Tiled FFT convolutions with a hand-written backward.

Every FFT family reduces to ``y = crop(irfft(reduce(rfft(x, L) · rfft(k, L)), L))``: a cyclic
convolution of length L of inputs with kernels, summed over some tile dimensions. Its gradients
are cyclic correlations with the same spectra,

    ∂/∂x = irfft(reduce_x(G · conj(K)))        ∂/∂k = irfft(reduce_k(G · conj(X)))

with G = rfft of the output gradient placed back at its crop. Autograd would get there through the
adjoints of rfft/irfft (a full complex FFT each, plus padding copies); doing it by hand costs one
rfft and two irfft per backward and reuses the forward's spectra.
"""
from __future__ import annotations

import torch


def _sum_dims(t: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    dims = tuple(d for d in dims if t.shape[d] != 1)  # summing a size-1 dim is a copy for nothing
    return t.sum(dim=dims, keepdim=True) if dims else t


class _FFTConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, k, L, start, length, sum_dims):
        X = torch.fft.rfft(x, n=L)
        K = torch.fft.rfft(k, n=L)
        y = torch.fft.irfft(_sum_dims(X * K, sum_dims), n=L)[..., start : start + length]
        ctx.save_for_backward(X, K)
        ctx.meta = (L, start, x.shape[-1], k.shape[-1])
        return y

    @staticmethod
    def backward(ctx, gy):
        X, K = ctx.saved_tensors
        L, start, n_x, n_k = ctx.meta
        G = torch.fft.rfft(torch.nn.functional.pad(gy, (start, L - start - gy.shape[-1])), n=L)
        gx = gk = None
        if ctx.needs_input_grad[0]:
            gx = torch.fft.irfft((G * K.conj()).sum_to_size(X.shape), n=L)[..., :n_x]
        if ctx.needs_input_grad[1]:
            gk = torch.fft.irfft((G * X.conj()).sum_to_size(K.shape), n=L)[..., :n_k]
        return gx, gk, None, None, None, None


def fft_conv(x, k, L: int, start: int = 0, length: int | None = None, sum_dims: tuple[int, ...] = ()):
    """``irfft(Σ_{sum_dims} rfft(x, L)·rfft(k, L), L)[..., start:start+length]`` (keepdim sums).

    ``x`` and ``k`` broadcast against each other (real, last dim ≤ L); ``sum_dims`` are negative
    dims of the broadcast product, kept as size 1. With ``L = n`` and no crop this is the cyclic
    convolution ``k ⊛ x``, i.e. the circulant product ``C(k) x``.
    """
    length = L - start if length is None else length
    return _FFTConv.apply(x, k.to(x.dtype), L, start, length, tuple(sum_dims))
