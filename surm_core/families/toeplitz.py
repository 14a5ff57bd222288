"""Toeplitz: T[i, j] = t[i − j]; symmetric Toeplitz: t[k] = t[−k]."""
from __future__ import annotations

import torch

from .base import View, float64
from .fftconv import fft_conv
from .tiled import BUDGET_TEXT, TiledFFTMatrix, fft_len


def toeplitz_index(n: int) -> torch.Tensor:
    """Position of diagonal i − j in a vector ordered t[−(n−1)], …, t[0], …, t[n−1]."""
    i = torch.arange(n)
    return i[:, None] - i[None, :] + n - 1


def toeplitz_apply(diagonals: torch.Tensor, xt: torch.Tensor, n: int) -> torch.Tensor:
    """Σ_j T(t_ij) x_j for tiles given by their 2n−1 diagonals (ordered as ``toeplitz_index``).

    T x is the middle of the linear convolution t * x: ``y[i] = (t * x)[i + n − 1]``. A circular
    convolution of any length L ≥ 2n − 1 leaves those entries intact, so L is the next fast size.
    """
    y = fft_conv(xt.unsqueeze(-3), diagonals, L=fft_len(2 * n - 1), start=n - 1, length=n, sum_dims=(-2,))
    return y.squeeze(-2)


class ToeplitzMatrix(TiledFFTMatrix):
    """Tiles ``T[i, j] = t[i − j]``: first column ``t[0..n−1]``, first row ``t[0], t[−1], …``
    (``scipy.linalg.toeplitz(c, r)``); ``2n − 1`` parameters per tile, ``n = block``.

    Stored as ``diagonals[k + n − 1] = t[k]``. Applied by a circulant embedding of fast length
    ≥ 2n − 1 (one rfft of the input, one irfft). Displacement rank ≤ 2 under (Z1, Z-1).

    >>> m = ToeplitzMatrix(3, 3, init="random", seed=0)
    >>> T = m.to_dense()
    >>> bool(T[1, 0] == T[2, 1]) and bool(T[0, 1] == T[1, 2])
    True
    """

    family = "toeplitz"
    zero_params = ("diagonals",)
    color = "#ff7f0e"
    description = f"""### Toeplitz
**Formula.** `T[i, j] = t[i − j]`: constant along every diagonal; the first column and the first
row (sharing `t[0]`) fix the whole matrix.

**Parameters.** `2n − 1` per `n × n` tile.

**Fast algorithm.** Embed `T` in a circulant of size at least `2n − 1` and use the FFT:
`O(n log n)`.

**Displacement rank.** At most 2 under `(Z₁, Z₋₁)`: shifting `T` down and `T` right leaves only
its first row and last column.

{BUDGET_TEXT}"""

    def param_shapes(self):
        return {"diagonals": (2 * self.block - 1,)}

    @classmethod
    def tile_count(cls, block, **hparams):
        return 2 * block - 1

    def apply_tiles(self, xt):
        return toeplitz_apply(self.diagonals, xt, self.block)

    def to_dense(self):
        return self.dense_from_tiles(self.diagonals[:, :, toeplitz_index(self.block)])

    def project(self, W):
        # per tile, the mean of W's visible entries along each diagonal
        n = self.block
        return {"diagonals": self.diagonal_means(W, toeplitz_index(n), 2 * n - 1)}

    def parameter_views(self):
        n, tiles = self.block, self.by_tile()
        column = View(f"first column t[0], t[1], …{tiles}", self.per_tile(self.diagonals[..., n - 1:]))
        if n == 1:  # 1 × 1 tiles: the column is all there is
            return [column]
        return [column, View(f"first row t[−1], t[−2], …{tiles}",
                             self.per_tile(self.diagonals[..., : n - 1].flip(-1)))]


class SymmetricToeplitzMatrix(TiledFFTMatrix):
    """Tiles ``T[i, j] = t[|i − j|]``: ``n`` parameters per tile (``scipy.linalg.toeplitz(t)``).

    Applied as a Toeplitz tile (the diagonals mirrored). Symmetric, so real eigenvalues.

    >>> m = SymmetricToeplitzMatrix(4, 4, init="random", seed=0)
    >>> bool(torch.equal(m.to_dense(), m.to_dense().T))
    True
    """

    family = "symmetric_toeplitz"
    zero_params = ("t",)
    color = "#bcbd22"
    description = f"""### Symmetric Toeplitz
**Formula.** `T[i, j] = t[|i − j|]`: a Toeplitz matrix equal to its transpose.

**Parameters.** `n` per `n × n` tile.

**Fast algorithm.** As Toeplitz: a circulant embedding and the FFT, `O(n log n)`. Being symmetric,
its eigenvalues are real.

**Displacement rank.** At most 2 under `(Z₁, Z₋₁)`, like every Toeplitz matrix.

{BUDGET_TEXT}"""

    def param_shapes(self):
        return {"t": (self.block,)}

    @classmethod
    def tile_count(cls, block, **hparams):
        return block

    def diagonals(self) -> torch.Tensor:
        return torch.cat([self.t.flip(-1)[..., :-1], self.t], dim=-1)

    def apply_tiles(self, xt):
        return toeplitz_apply(self.diagonals(), xt, self.block)

    def to_dense(self):
        return self.dense_from_tiles(self.diagonals()[:, :, toeplitz_index(self.block)])

    # -- structure ------------------------------------------------------------------------------
    def _symmetric_eigenvalues(self) -> torch.Tensor | None:
        """One uncropped tile is a symmetric matrix: real eigenvalues by ``eigvalsh``."""
        if self.p == self.q == 1 and self.d_out == self.d_in == self.block:
            n = self.block
            return torch.linalg.eigvalsh(float64(self.t)[0, 0][(toeplitz_index(n) - (n - 1)).abs()])
        return None

    def singular_values(self):
        lam = self._symmetric_eigenvalues()
        return None if lam is None else lam.abs()

    def eigenvalues(self):
        lam = self._symmetric_eigenvalues()
        return None if lam is None else lam.to(torch.complex128)

    def project(self, W):
        # per tile, the mean of W's visible entries along each pair of mirrored diagonals
        n = self.block
        return {"t": self.diagonal_means(W, (toeplitz_index(n) - (n - 1)).abs(), n)}

    def parameter_views(self):
        return [View(f"t: first column = first row{self.by_tile()}", self.per_tile(self.t))]
