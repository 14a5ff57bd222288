"""Short explanations of each structured family, written for a student (markdown).

Every entry has the same five parts: what the matrix looks like (formula), how many parameters
it trains, how it is applied fast and what that costs, its displacement rank, and how a budget
is met. Shapes are for an ``n × n`` layer; ``d_in``/``d_out`` where the family is rectangular.
"""
from __future__ import annotations

from .families import FAMILIES

_TILES = (
    "**Budget.** A layer is covered by a grid of `block × block` tiles, each with its own "
    "parameters (zero-padded at the edges). One tile of size `max(d_out, d_in)` is the cheapest; "
    "smaller tiles cost more parameters and mix less globally."
)

_DESCRIPTIONS = {
    "dense": """### Dense (full fine-tuning of a layer)
**Formula.** `ΔW = W`: any `d_out × d_in` matrix, every entry trained.

**Parameters.** `d_out · d_in` (147,456 for one 384 × 384 MiniLM projection).

**Fast algorithm.** None: a matrix–vector product costs `d_out · d_in` multiply-adds.

**Displacement rank.** Generically `n`: no structure at all. This is the reference every other
family is compared with.""",
    "lowrank": """### Low rank (LoRA)
**Formula.** `ΔW = (α / r) · B A` with `A: r × d_in`, `B: d_out × r`; `B = 0` at the start, so the
adapted model starts exactly as the pretrained one.

**Parameters.** `r · (d_in + d_out)`.

**Fast algorithm.** Two thin products, `x → A x → B (A x)`: `r · (d_in + d_out)` multiply-adds
instead of `d_in · d_out`.

**Displacement rank.** At most `2r` (`Z₁ B A − B A Z₋₁` is a sum of two rank-`r` terms). The
rank itself is at most `r`: the singular values drop to zero after `r`.

**Budget.** The largest rank `r` whose `r · (d_in + d_out)` fits.""",
    "circulant": f"""### Circulant
**Formula.** `C(c)[i, j] = c[(i − j) mod n]`: the first column is `c`, and every next column is
the previous one rotated down by one. A circulant is a cyclic convolution with `c`.

**Parameters.** `n` per `n × n` tile.

**Fast algorithm.** `C(c) x = irfft(rfft(c) · rfft(x))`: three FFTs, `O(n log n)` instead of
`n²`. The Fourier basis diagonalises every circulant, so its eigenvalues are exactly `fft(c)`
and its singular values `|fft(c)|`: usually full rank with only `n` parameters.

**Displacement rank.** `C` commutes with the cyclic shift `Z₁` (`Z₁ C − C Z₁ = 0`), and
`Z₁ C − C Z₋₁` has rank at most 1: the most structured family here.

{_TILES}""",
    "toeplitz": f"""### Toeplitz
**Formula.** `T[i, j] = t[i − j]`: constant along every diagonal; the first column and the first
row (sharing `t[0]`) fix the whole matrix.

**Parameters.** `2n − 1` per `n × n` tile.

**Fast algorithm.** Embed `T` in a circulant of size at least `2n − 1` and use the FFT:
`O(n log n)`.

**Displacement rank.** At most 2 under `(Z₁, Z₋₁)`: shifting `T` down and `T` right leaves only
its first row and last column.

{_TILES}""",
    "symmetric_toeplitz": f"""### Symmetric Toeplitz
**Formula.** `T[i, j] = t[|i − j|]`: a Toeplitz matrix equal to its transpose.

**Parameters.** `n` per `n × n` tile.

**Fast algorithm.** As Toeplitz: a circulant embedding and the FFT, `O(n log n)`. Being symmetric,
its eigenvalues are real.

**Displacement rank.** At most 2 under `(Z₁, Z₋₁)`, like every Toeplitz matrix.

{_TILES}""",
    "kronecker": """### Kronecker product
**Formula.** `ΔW = A ⊗ B` with `A: a₁ × a₂`, `B: b₁ × b₂`, `a₁b₁ = d_out`, `a₂b₂ = d_in`: the
matrix is an `a₁ × a₂` grid of blocks, block `(i, j)` being `A[i, j] · B`.

**Parameters.** `a₁a₂ + b₁b₂`, about `2n` for a balanced split of a square layer.

**Fast algorithm.** Reshape `x` into an `a₂ × b₂` matrix `X`; then `ΔW x` is `A X Bᵀ` read back
as a vector: about `n^1.5` multiply-adds for a balanced split, no dense matrix.

**Displacement rank.** Not small in general (typically `n`): its structure is block-wise, not
shift-wise. Instead, its singular values are all products `σᵢ(A) · σⱼ(B)`, and its rank is
`rank A · rank B`.

**Budget.** The largest factors (then the most balanced split) whose sizes fit.""",
    "ldr": f"""### Low displacement rank (LDR)
**Formula.** `ΔW = Σᵢ₌₁..ᵣ C(gᵢ) · S(hᵢ)`, with `C` circulant and `S(h)` skew-circulant (a
circulant whose entries above the diagonal are negated).

**Parameters.** `2 r n` per `n × n` tile.

**Fast algorithm.** Each term is two FFT convolutions (a cyclic one for `C`, a negacyclic one for
`S`): `O(r n log n)`.

**Displacement rank.** At most `r` under `(Z₁, Z₋₁)`, and every matrix of displacement rank `r`
has this form. So `r` is a dial: `r = 1` is circulant-like, `r = n` is any matrix.

{_TILES} Within a tile size, the largest `r` that fits.""",
    "monarch": """### Monarch (MoRe)
**Formula.** `ΔW = P_out · blockdiag(R₁..R_k) · P · blockdiag(L₁..L_k)`: the input is cut into `k`
blocks, each block is compressed by its own `Lᵢ: blk_r × in_blk`, a fixed permutation `P` mixes
the pieces across blocks, and each `Rᵢ: out_blk × blk_r` expands them again (`R = 0` at the
start).

**Parameters.** `k · blk_r · (in_blk + out_blk)` ≈ `blk_r · (d_in + d_out)`: the cost of LoRA at
rank `blk_r`, but the rank can reach `k · blk_r`.

**Fast algorithm.** Two batched matrix products and a reshape-transpose:
`blk_r · (d_in + d_out)` multiply-adds.

**Displacement rank.** No small bound of its own (at most twice its rank, `2 k · blk_r`); its
structure is the block pattern, visible in the heatmap as `k` groups of input columns.

**Budget.** MoRe's default is `k = 4` blocks of rank `blk_r = 4`. A budget takes the most
parameters that fit, then the highest rank `k · blk_r`, then 4 blocks (MoRe found 4 best).""",
}


def describe(family: str) -> str:
    """Markdown explaining ``family``: formula, parameter count, fast algorithm, displacement rank.

    >>> describe("circulant").splitlines()[0]
    '### Circulant'
    """
    if not isinstance(family, str) or family not in _DESCRIPTIONS:
        raise ValueError(f"unknown family {family!r}; known families: {', '.join(FAMILIES)}")
    return _DESCRIPTIONS[family]
