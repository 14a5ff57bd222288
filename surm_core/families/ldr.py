"""Low displacement rank: Σ_{i=1..r} C(g_i) · S(h_i)."""
from __future__ import annotations

import math

import torch

from .base import View, lbfgs_best
from .circulant import circulant_index
from .fftconv import negacyclic_fft, negacyclic_ifft, row_blocks
from .tiled import BUDGET_TEXT, TiledFFTMatrix

#: L-BFGS iterations of :meth:`LDRMatrix.project` (deterministic: fixed count, fixed seed).
FIT_STEPS = 50
#: Rounds the iterations are split into when tiles are cropped (hidden entries refilled per round).
EM_ROUNDS = 5


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
    color = "#9467bd"
    description = f"""### Low displacement rank (LDR)
**Formula.** `ΔW = Σᵢ₌₁..ᵣ C(gᵢ) · S(hᵢ)`, with `C` circulant and `S(h)` skew-circulant (a
circulant whose entries above the diagonal are negated).

**Parameters.** `2 r n` per `n × n` tile.

**Fast algorithm.** Each term is two FFT convolutions (a cyclic one for `C`, a negacyclic one for
`S`): `O(r n log n)`.

**Displacement rank.** At most `r` under `(Z₁, Z₋₁)`, and every matrix of displacement rank `r`
has this form. So `r` is a dial: `r = 1` is circulant-like, `r = n` is any matrix.

{BUDGET_TEXT} Within a tile size, the largest `r` that fits."""

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
        # Entry (a, b) of Σ_i C(g_i) S(h_i) is Σ_m V[(a − b − m) mod n, m]·(+1 if b + m < n else −1)
        # with V = Σ_i g_i h_iᵀ (one matmul): write S(h) e_b as h shifted negacyclically by b.
        # With P[d, m] = V[(d − m) mod n, m] and its running sums over m, entry (a, b) is
        # 2·Σ_{m < n−b} P[d, m] − Σ_m P[d, m], d = (a − b) mod n: a few n × n arrays per tile,
        # O(r·n²) work, computed in float64 (running sums) and returned in the parameters' dtype.
        n = self.block
        index = circulant_index(n).to(self.g.device)
        V = self.g.double().transpose(-1, -2) @ self.h.double()  # (p, q, n, n)
        running = V.gather(-2, index.expand_as(V)).cumsum(-1)
        Q = 2 * running.flip(-1) - running[..., -1:]
        return self.dense_from_tiles(Q.gather(-2, index.expand_as(Q))).to(self.g.dtype)

    def project(self, W):
        """No closed form: ``FIT_STEPS`` deterministic L-BFGS iterations start from the better of
        (a) the circulant projection at the same tiles (g_1 = c, h_1 = e_0, S(e_0) = I) and (b)
        the displacement fit (truncated SVD of ∇_{Z1,Z-1} per tile, exact for members), and never
        increase the error: never worse than the circulant projection at this block."""
        n, r, p, q = self.block, self.hparams["r"], self.p, self.q
        scale = float(W.norm()) or 1.0  # fit W / ‖W‖ so L-BFGS's tolerances mean the same for any W
        tiles, visible = self.split_tiles(W / scale)
        fourier = _Fourier(n)

        def error(gh):  # the squared error on the visible entries
            return ((fourier.dense(gh) - tiles) * visible).pow(2).sum()

        # (a) circulant projection: g_1 = c/s, h_1 = s·e_0; the other terms start at g_i = 0 (the
        # same matrix) with small random h_i, so that their gradients are not zero
        c = self.diagonal_means(W / scale, circulant_index(n), n)
        s = c.norm(dim=-1).sqrt().clamp(min=1e-8)  # (p, q): balances the two factors' sizes
        g_circ = torch.cat([(c / s[..., None])[:, :, None], c.new_zeros(p, q, r - 1, n)], dim=2)
        gen = torch.Generator().manual_seed(0)
        h_circ = torch.randn(p, q, r, n, generator=gen, dtype=torch.float64) * (s[..., None, None] / math.sqrt(n))
        h_circ[:, :, 0] = 0
        h_circ[:, :, 0, 0] = s
        # (b) displacement fit: ∇_{Z1,Z-1}(Σ C(g_i) S(h_i)) = Z1 T − T Z-1 = 2 Σ g_i rev(h_i)ᵀ, and
        # ∇ is invertible (Z1 shifts rows down cyclically, Z-1 columns left with a sign flip)
        residual = tiles.roll(1, dims=-2) - torch.cat([tiles[..., 1:], -tiles[..., :1]], dim=-1)
        U, S, Vh = _top_svd(residual, r)
        root = (S / 2).sqrt()
        g_disp = (U * root[..., None, :]).transpose(-1, -2)
        h_disp = (root[..., None] * Vh).flip(-1)
        gh = min([torch.stack([g_circ, h_circ]), torch.stack([g_disp, h_disp])], key=lambda x: float(error(x)))

        # Fit in the Fourier basis. Cropped tiles: each round fills the hidden entries with the
        # current fit (EM); the filled error bounds the visible one and equals it at the start of
        # the round, so no round can raise the visible error.
        rounds = 1 if bool(visible.all()) else EM_ROUNDS
        for _ in range(rounds):
            filled = tiles * visible + fourier.dense(gh) * (1 - visible)
            objective = fourier.objective(fourier.transform(filled))
            gh = gh.clone().requires_grad_()
            (gh,) = lbfgs_best(lambda: objective(gh), [gh], FIT_STEPS // rounds)
        g, h = gh
        return {"g": g * scale, "h": h}

    @classmethod
    def candidates(cls, d_out, d_in, budget):
        # For each block size, the largest displacement rank that fits (r ≤ n: beyond, no gain).
        budget = min(budget, cls.max_params(d_out, d_in))
        for block in range(1, max(d_out, d_in) + 1):
            r = min(budget // cls.count(d_out, d_in, block, r=1), block)
            if r >= 1:
                yield {"block": block, "r": r}

    def parameter_views(self):
        tiles = self.by_tile()
        return [View(f"g_i of C(g_i): row i{tiles}", self.per_tile(self.g)),
                View(f"h_i of S(h_i): row i{tiles}", self.per_tile(self.h))]


class _Fourier:
    """Σ_i C(g_i) S(h_i) tiles of size n in the Fourier basis where both factors are diagonal.

    C(g) = F⁻¹ diag(F g) F and S(h) = D⁻¹ C(D h) D with D = diag(θ^j), θ = e^{iπ/n}, so
    Σ_i C(g_i) S(h_i) = F⁻¹ [(Σ_i ĝ_i ĥ_iᵀ) ⊙ K] F D with ĝ = F g, ĥ = F D h, K = F D⁻¹ F⁻¹.
    ``T ↦ T̂ = F T D⁻¹ F⁻¹`` keeps Frobenius norms (the scalings of F and F⁻¹ cancel), and K is
    itself circulant, K[a, b] = κ[a − b]; so a tile's squared error is computed without any n × n
    array but the fixed conj(T̂) ⊙ K (see :meth:`objective`).
    """

    def __init__(self, n: int):
        self.theta = torch.exp(1j * math.pi * torch.arange(n, dtype=torch.float64) / n)
        eye = torch.eye(n, dtype=torch.complex128)
        self.K = torch.fft.fft(torch.fft.ifft(eye, dim=0) / self.theta[:, None], dim=0)
        self.kappa2_spectrum = torch.fft.fft(self.K[:, 0].abs().pow(2))

    def spectra(self, gh):
        """(ĝ, ĥ) for gh = stack(g, h), each (..., r, n)."""
        return torch.fft.fft(gh[0]), torch.fft.fft(gh[1] * self.theta)

    def transform(self, T):
        """T̂ = F T D⁻¹ F⁻¹ of real tiles T (..., n, n)."""
        return torch.fft.fft(torch.fft.ifft(T / self.theta, dim=-1), dim=-2)

    def dense(self, gh):
        G, H = self.spectra(gh)
        core = torch.einsum("...ra,...rb->...ab", G, H) * self.K
        return (torch.fft.fft(torch.fft.ifft(core, dim=-2), dim=-1) * self.theta).real

    def objective(self, T_hat):
        """gh ↦ Σ_tiles ‖T̂ − (Σ_i ĝ_i ĥ_iᵀ) ⊙ K‖², expanded as ‖T̂‖² − 2 Re Σ_i ĝ_iᵀ (conj(T̂) ⊙ K) ĥ_i
        + Σ_{i,j} Σ_a ĝ_i[a] conj(ĝ_j[a]) (|κ|² ⊛ ĥ_i conj(ĥ_j))[a]: one n × n × r product per call."""
        A = T_hat.conj() * self.K
        total = torch.view_as_real(T_hat).pow(2).sum()

        def error(gh):
            G, H = self.spectra(gh)
            cross = ((G @ A) * H).sum().real
            HH = H[..., :, None, :] * H[..., None, :, :].conj()  # (..., r, r, n)
            smoothed = torch.fft.ifft(torch.fft.fft(HH) * self.kappa2_spectrum)
            quad = (G[..., :, None, :] * G[..., None, :, :].conj() * smoothed).sum().real
            return total - 2 * cross + quad

        return error


def _top_svd(X: torch.Tensor, r: int, oversample: int = 10, power_steps: int = 2):
    """Top-r singular triplets (U, S, Vh) of the matrices X (..., n, n) by a randomized subspace
    iteration with a fixed seed (exact when rank X ≤ r + oversample): O(n²r), not a full SVD."""
    gen = torch.Generator().manual_seed(0)
    sketch = torch.randn(X.shape[-1], min(r + oversample, X.shape[-1]), generator=gen, dtype=X.dtype)
    Q = torch.linalg.qr(X @ sketch).Q
    for _ in range(power_steps):
        Q = torch.linalg.qr(X @ (X.mT @ Q)).Q
    U, S, Vh = torch.linalg.svd(Q.mT @ X, full_matrices=False)
    return (Q @ U)[..., :r], S[..., :r], Vh[..., :r, :]
