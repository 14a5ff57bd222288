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
backward above carries over unchanged.
"""
from __future__ import annotations

import math

import torch


def _sum_dims(t: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    dims = tuple(d for d in dims if t.shape[d] != 1)  # summing a size-1 dim is a copy for nothing
    return t.sum(dim=dims, keepdim=True) if dims else t


def _twist(n: int, m: int, like: torch.Tensor) -> torch.Tensor:
    """θ^j for j < m, θ = e^{iπ/n} (complex, ``like``'s dtype and device)."""
    angle = torch.arange(m, dtype=torch.float64, device=like.device) * (math.pi / n)
    return torch.polar(torch.ones_like(angle), angle).to(like.dtype)


def negacyclic_fft(x: torch.Tensor) -> torch.Tensor:
    """Spectrum of real x (last dim n) in which negacyclic convolution is a product: x's
    polynomial evaluated at the roots of tⁿ = −1 (n even: half of them, the rest are conjugates).
    Length n/2 for even n (packed), n for odd n."""
    n = x.shape[-1]
    if n % 2 == 0:
        z = torch.complex(x[..., : n // 2], x[..., n // 2 :])
    else:
        z = torch.complex(x, torch.zeros_like(x))
    return torch.fft.fft(z * _twist(n, z.shape[-1], z))


def negacyclic_ifft(X: torch.Tensor, n: int) -> torch.Tensor:
    """The real length-n signal whose :func:`negacyclic_fft` is X."""
    z = torch.fft.ifft(X) * _twist(n, X.shape[-1], X).conj()
    return torch.cat([z.real, z.imag], dim=-1) if n % 2 == 0 else z.real


class _FFTConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, k, L, start, length, sum_dims, negacyclic):
        forward_fft, inverse_fft = _transforms(L, negacyclic)
        X = forward_fft(x)
        K = forward_fft(k)
        y = inverse_fft(_sum_dims(X * K, sum_dims))[..., start : start + length]
        ctx.save_for_backward(X, K)
        ctx.meta = (L, start, x.shape[-1], k.shape[-1], negacyclic)
        return y

    @staticmethod
    def backward(ctx, gy):
        X, K = ctx.saved_tensors
        L, start, n_x, n_k, negacyclic = ctx.meta
        forward_fft, inverse_fft = _transforms(L, negacyclic)
        if gy.shape[-1] != L:
            gy = torch.nn.functional.pad(gy, (start, L - start - gy.shape[-1]))
        G = forward_fft(gy)
        gx = gk = None
        if ctx.needs_input_grad[0]:
            gx = inverse_fft((G * K.conj()).sum_to_size(X.shape))[..., :n_x]
        if ctx.needs_input_grad[1]:
            gk = inverse_fft((G * X.conj()).sum_to_size(K.shape))[..., :n_k]
        return gx, gk, None, None, None, None, None


def _transforms(L: int, negacyclic: bool):
    if negacyclic:
        return negacyclic_fft, lambda X: negacyclic_ifft(X, L)
    return lambda x: torch.fft.rfft(x, n=L), lambda X: torch.fft.irfft(X, n=L)


def fft_conv(x, k, L: int, start: int = 0, length: int | None = None, sum_dims: tuple[int, ...] = (),
             negacyclic: bool = False):
    """``irfft(Σ_{sum_dims} rfft(x, L)·rfft(k, L), L)[..., start:start+length]`` (keepdim sums).

    ``x`` and ``k`` broadcast against each other (real, last dim ≤ L); ``sum_dims`` are negative
    dims of the broadcast product, kept as size 1. With ``L = n`` and no crop this is the cyclic
    convolution ``k ⊛ x``, i.e. the circulant product ``C(k) x``. ``negacyclic``: the negacyclic
    convolution instead (x and k of length L = n), the skew-circulant product ``S(k) x``.
    """
    length = L - start if length is None else length
    if negacyclic and not x.shape[-1] == k.shape[-1] == L:
        raise ValueError(f"a negacyclic convolution of length {L} needs x and k of that length")
    return _FFTConv.apply(x, k.to(x.dtype), L, start, length, tuple(sum_dims), negacyclic)
