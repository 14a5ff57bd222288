"""Every family against its dense form and against independent references (scipy, torch.kron,
naive loops written from methods.md), at square, rectangular, odd and prime sizes."""
import numpy as np
import pytest
import scipy.linalg
import torch

import surm_core
from surm_core import FAMILIES, from_budget, make

from conftest import fit_layer

SHAPES = [(1, 1), (7, 7), (64, 64), (48, 80), (96, 40), (63, 65)]
# Non-default hyperparameters, so tiling, factor shapes and block counts are exercised too.
VARIANTS = {
    "dense": [{}],
    "lowrank": [{}, {"r": 3, "alpha": 6.0}],
    "circulant": [{}, {"block": "third"}],
    "toeplitz": [{}, {"block": "third"}],
    "symmetric_toeplitz": [{}, {"block": "third"}],
    "kronecker": [{}, {"a_shape": "first_divisors"}],
    "ldr": [{"r": 2}, {"block": "third", "r": 3}],
    # k·blk_r ≤ 64 runs as two thin GEMMs, above as batched block matmuls: both paths covered
    "monarch": [{}, {"nblocks": 3, "blk_r": 2}, {"square": True}, {"nblocks": 5, "blk_r": 13}],
}


def concrete(hp, d_out, d_in, fam=None):
    """Fill in size-dependent hyperparameters of VARIANTS (of ``fam``, when given, shrunk to fit)."""
    hp = dict(hp)
    if hp.get("block") == "third":
        hp["block"] = max(1, max(d_out, d_in) // 3)
    if hp.get("a_shape") == "first_divisors":
        hp["a_shape"] = (min(k for k in range(2, d_out + 1) if d_out % k == 0) if d_out > 1 else 1,
                         min(k for k in range(2, d_in + 1) if d_in % k == 0) if d_in > 1 else 1)
    if "nblocks" in hp:
        hp["nblocks"] = min(hp["nblocks"], d_in)
    return fit_layer(fam, hp, d_out, d_in) if fam else hp


CASES = [
    pytest.param(fam, shape, hp, id=f"{fam}-{shape[0]}x{shape[1]}-{i}")
    for fam, hps in VARIANTS.items()
    for i, hp in enumerate(hps)
    for shape in SHAPES
]


def build(fam, shape, hp, init="random", seed=0):
    return make(fam, *shape, init=init, seed=seed, **concrete(hp, *shape, fam)).double()


def test_registry_names():
    assert list(FAMILIES) == [
        "dense", "lowrank", "circulant", "toeplitz", "symmetric_toeplitz", "kronecker", "ldr", "monarch"
    ]


@pytest.mark.parametrize("fam,shape,hp", CASES)
def test_forward_equals_dense(fam, shape, hp):
    m = build(fam, shape, hp)
    assert m.shape == shape and m.family == fam
    x = torch.randn(3, 5, shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = m(x)
    ref = x @ m.to_dense().T
    assert y.shape == (3, 5, shape[0])
    assert torch.linalg.norm(y - ref) <= 1e-10 * torch.linalg.norm(ref)


@pytest.mark.parametrize("fam,shape,hp", CASES)
def test_gradcheck(fam, shape, hp):
    m = build(fam, shape, hp)
    names = [n for n, _ in m.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in m.parameters())
    x = torch.randn(2, shape[1], dtype=torch.float64, requires_grad=True)

    def f(x, *ps):
        return torch.func.functional_call(m, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params), fast_mode=True)


def expected_count(fam, d_out, d_in, hp):
    """Parameter counts written out from methods.md, independently of the classes."""
    cdiv = lambda a, b: -(-a // b)
    n = hp.get("block", max(d_out, d_in))
    tiles = cdiv(d_out, n) * cdiv(d_in, n)
    if fam == "dense":
        return d_out * d_in
    if fam == "lowrank":
        return hp.get("r", 8) * (d_in + d_out)
    if fam in ("circulant", "symmetric_toeplitz"):
        return tiles * n
    if fam == "toeplitz":
        return tiles * (2 * n - 1)
    if fam == "ldr":
        return tiles * 2 * hp["r"] * n
    if fam == "kronecker":
        (a1, a2), (b1, b2) = hp["a_shape"], hp["b_shape"]
        assert a1 * b1 == d_out and a2 * b2 == d_in
        return a1 * a2 + b1 * b2
    if fam == "monarch":
        k, r = hp["nblocks"], hp["blk_r"]
        in_blk = cdiv(d_in, k)
        out_blk = cdiv(in_blk * d_out, d_in)
        return k * r * (in_blk + out_blk)
    raise AssertionError(fam)


@pytest.mark.parametrize("fam,shape,hp", CASES)
def test_num_params(fam, shape, hp):
    m = build(fam, shape, hp)
    trainable = sum(p.numel() for p in m.parameters() if p.requires_grad)
    assert m.num_params == trainable == expected_count(fam, *shape, m.hparams)


@pytest.mark.parametrize("fam,shape,hp", CASES)
def test_zero_init_is_zero_map_with_gradients(fam, shape, hp):
    m = build(fam, shape, hp, init="zero")
    assert torch.count_nonzero(m.to_dense()) == 0
    x = torch.randn(4, shape[1], dtype=torch.float64)
    y = m(x)
    assert torch.count_nonzero(y) == 0
    (y * torch.randn_like(y)).sum().backward()
    assert any(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in m.parameters())


def test_random_init_is_reproducible():
    for fam in FAMILIES:
        a = make(fam, 12, 10, init="random", seed=3).to_dense()
        b = make(fam, 12, 10, init="random", seed=3).to_dense()
        c = make(fam, 12, 10, init="random", seed=4).to_dense()
        assert torch.equal(a, b) and not torch.equal(a, c), fam


# -- structure, checked against independent references ---------------------------------------
def tiles_of(m, dense_tile):
    """Assemble a tiled map from per-tile dense blocks built by the reference `dense_tile(i, j)`."""
    n = m.hparams["block"]
    p, q = -(-m.d_out // n), -(-m.d_in // n)
    full = np.block([[dense_tile(i, j) for j in range(q)] for i in range(p)])
    return full[: m.d_out, : m.d_in]


def skew_circulant_ref(h):
    n = len(h)
    return np.array([[h[i - j] if i >= j else -h[n + i - j] for j in range(n)] for i in range(n)])


@pytest.mark.parametrize("shape", SHAPES + [(13, 5), (5, 13)])
@pytest.mark.parametrize("third", [False, True])
def test_tiled_structure_matches_scipy(shape, third):
    hp = {"block": max(1, max(shape) // 3)} if third else {}
    circ = make("circulant", *shape, init="random", seed=1, **hp).double()
    c = circ.c.detach().numpy()
    ref = tiles_of(circ, lambda i, j: scipy.linalg.circulant(c[i, j]))
    np.testing.assert_allclose(circ.to_dense().detach().numpy(), ref, rtol=0, atol=0)

    toep = make("toeplitz", *shape, init="random", seed=1, **hp).double()
    t, n = toep.diagonals.detach().numpy(), toep.hparams["block"]
    # diagonals[k + n - 1] = t[k]: first column t[0..n-1], first row t[0], t[-1], ...
    ref = tiles_of(toep, lambda i, j: scipy.linalg.toeplitz(t[i, j, n - 1 :], t[i, j, n - 1 :: -1]))
    np.testing.assert_allclose(toep.to_dense().detach().numpy(), ref, rtol=0, atol=0)

    sym = make("symmetric_toeplitz", *shape, init="random", seed=1, **hp).double()
    s = sym.t.detach().numpy()
    ref = tiles_of(sym, lambda i, j: scipy.linalg.toeplitz(s[i, j]))
    np.testing.assert_allclose(sym.to_dense().detach().numpy(), ref, rtol=0, atol=0)

    ldr = make("ldr", *shape, init="random", seed=1, **fit_layer("ldr", {"r": 2, **hp}, *shape)).double()
    g, h = ldr.g.detach().numpy(), ldr.h.detach().numpy()
    ref = tiles_of(ldr, lambda i, j: sum(
        scipy.linalg.circulant(g[i, j, k]) @ skew_circulant_ref(h[i, j, k]) for k in range(ldr.hparams["r"])))
    np.testing.assert_allclose(ldr.to_dense().detach().numpy(), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape,a_shape", [((6, 4), (2, 2)), ((64, 64), (8, 4)), ((48, 80), (3, 16)),
                                           ((63, 65), (7, 13)), ((7, 7), (7, 1)), ((96, 40), None)])
def test_kronecker_matches_torch_kron(shape, a_shape):
    hp = {} if a_shape is None else {"a_shape": a_shape}
    m = make("kronecker", *shape, init="random", seed=2, **hp).double()
    assert torch.equal(m.to_dense(), torch.kron(m.A, m.B))


def test_lowrank_matches_product_and_rank():
    m = make("lowrank", 48, 80, init="random", seed=0, r=5, alpha=10.0).double()
    dense = m.to_dense().detach().numpy()
    np.testing.assert_allclose(dense, 2.0 * m.B.detach().numpy() @ m.A.detach().numpy(), atol=1e-12)
    assert np.linalg.matrix_rank(dense) == 5


def monarch_reference(m):
    """MoRe's Monarch written as loops over methods.md's description, in numpy."""
    k, r = m.hparams["nblocks"], m.hparams["blk_r"]
    L, R = m.L.detach().numpy(), m.R.detach().numpy()
    in_blk, out_blk = L.shape[2], R.shape[1]
    dense = np.zeros((k * out_blk, k * in_blk))
    for col in range(k * in_blk):
        x = np.zeros(k * in_blk)
        x[col] = 1.0
        inter = np.concatenate([L[b] @ x[b * in_blk : (b + 1) * in_blk] for b in range(k)])
        perm = np.array([inter[t * k + a] for a in range(k) for t in range(r)])
        out_blocks = [R[a] @ perm[a * r : (a + 1) * r] for a in range(k)]
        dense[:, col] = [out_blocks[a][o] for o in range(out_blk) for a in range(k)]
    return dense[: m.d_out, : m.d_in]


@pytest.mark.parametrize("shape", SHAPES + [(10, 3), (3, 10)])
@pytest.mark.parametrize("hp", [{}, {"nblocks": 3, "blk_r": 2}, {"square": True}, {"nblocks": 1, "blk_r": 1},
                                {"nblocks": 5, "blk_r": 13}])
def test_monarch_matches_loop_reference(shape, hp):
    m = make("monarch", *shape, init="random", seed=5, **concrete(hp, *shape, "monarch")).double()
    np.testing.assert_allclose(m.to_dense().detach().numpy(), monarch_reference(m), atol=1e-12)
    k, r = m.hparams["nblocks"], m.hparams["blk_r"]
    assert np.linalg.matrix_rank(m.to_dense().detach().numpy()) <= min(k * r, *shape)


def test_monarch_defaults_follow_more():
    m = make("monarch", 768, 768)
    assert m.hparams == {"nblocks": 4, "blk_r": 4, "square": False}
    assert m.num_params == 4 * 4 * (192 + 192)
    assert make("monarch", 64, 64, square=True).hparams["blk_r"] == 16


def test_full_rank_families_reach_full_rank():
    # the point of SURM: few parameters, unrestricted rank
    for fam in ("circulant", "toeplitz", "symmetric_toeplitz", "ldr"):
        d = make(fam, 32, 32, init="random", seed=0).double().to_dense().detach().numpy()
        assert np.linalg.matrix_rank(d) == 32, fam


# -- dtypes -----------------------------------------------------------------------------------
@pytest.mark.parametrize("fam", list(FAMILIES))
def test_float32_and_bfloat16(fam):
    m = make(fam, 48, 80, init="random", seed=0)
    x = torch.randn(4, 80)
    y32 = m(x)
    assert y32.dtype == torch.float32
    ref = x.double() @ m.to_dense().double().T
    assert torch.linalg.norm(y32.double() - ref) <= 1e-5 * torch.linalg.norm(ref)
    mb = make(fam, 48, 80, init="random", seed=0).to(torch.bfloat16)
    yb = mb(x.to(torch.bfloat16))
    assert yb.dtype == torch.bfloat16
    assert torch.linalg.norm(yb.double() - ref) <= 5e-2 * torch.linalg.norm(ref)


# -- budgets ----------------------------------------------------------------------------------
@pytest.mark.parametrize("fam", list(FAMILIES))
@pytest.mark.parametrize("shape", [(64, 64), (48, 80), (63, 65)])
def test_from_budget_fits_and_is_maximal(fam, shape):
    cls = FAMILIES[fam]
    for budget in (200, 1000, 5000):
        try:
            m = from_budget(fam, *shape, budget)
        except ValueError as e:
            smallest = cls.count(*shape, **cls.smallest(*shape))
            assert smallest > budget and str(smallest) in str(e)
            continue
        assert m.num_params <= budget
        # no configuration that fits has more parameters (checked by brute force over a grid)
        best = max(cls.count(*shape, **hp) for hp in cls.candidates(*shape, budget)
                   if cls.count(*shape, **hp) <= budget)
        assert m.num_params == best


def test_from_budget_known_picks():
    assert from_budget("lowrank", 768, 768, 12288).hparams["r"] == 8
    assert from_budget("circulant", 768, 768, 768).hparams["block"] == 768
    assert from_budget("circulant", 768, 768, 1536).hparams["block"] == 384
    assert from_budget("ldr", 768, 768, 3072).hparams == {"block": 768, "r": 2}
    # MoRe's default (4 blocks of rank 4) has this size too, but rank ≤ 16; 192 blocks of 4 reach 768
    assert from_budget("monarch", 768, 768, 6144).hparams == {"nblocks": 192, "blk_r": 4, "square": False}
    assert from_budget("monarch", 768, 768, 6144).num_params == make("monarch", 768, 768).num_params
    assert from_budget("kronecker", 768, 768, 1600).num_params == 1600
    assert from_budget("dense", 8, 8, 64).num_params == 64


def test_budget_too_small_names_smallest():
    with pytest.raises(ValueError, match=r"smallest needs 1536"):
        from_budget("lowrank", 768, 768, 1000)
    with pytest.raises(ValueError, match=r"smallest needs 64"):
        from_budget("dense", 8, 8, 63)
    with pytest.raises(ValueError, match=r"smallest needs 128"):  # one 64-tile, r=1: 2·64
        from_budget("ldr", 64, 64, 10)
    with pytest.raises(ValueError, match="budget must be a positive integer"):
        from_budget("circulant", 8, 8, 0)


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("fam", list(FAMILIES))
@pytest.mark.parametrize("shape", [(0, 4), (4, -1), (2.5, 3)])
def test_bad_sizes(fam, shape):
    with pytest.raises(ValueError, match="must be a positive integer"):
        make(fam, *shape)


def test_unknown_family_lists_known():
    with pytest.raises(ValueError, match="unknown family 'fourier'.*circulant.*monarch"):
        make("fourier", 4, 4)
    with pytest.raises(ValueError, match="known families"):
        from_budget("nope", 4, 4, 10)


@pytest.mark.parametrize("fam,hp,msg", [
    ("kronecker", {"a_shape": (5, 2)}, "must divide"),
    ("kronecker", {"a_shape": (2, 2), "b_shape": (3, 3)}, "does not match"),
    ("kronecker", {"a_shape": (2,)}, "pair of positive integers"),
    ("monarch", {"nblocks": 9}, "exceeds d_in"),
    ("monarch", {"square": True, "blk_r": 3}, "square=True fixes blk_r"),
    ("lowrank", {"r": 0}, "r must be a positive integer"),
    ("lowrank", {"alpha": float("nan")}, "alpha must be"),
    ("circulant", {"block": 20}, "exceeds the layer's largest side"),
    ("ldr", {"r": -1}, "r must be a positive integer"),
    ("toeplitz", {"rank": 2}, r"unknown hyperparameter\(s\) \['rank'\].*'block'"),
    ("dense", {"r": 2}, "takes none"),
])
def test_impossible_hyperparameters(fam, hp, msg):
    with pytest.raises(ValueError, match=msg):
        make(fam, 6, 8, **hp)


def test_bad_init_and_input_shape():
    with pytest.raises(ValueError, match="init must be 'zero' or 'random'"):
        make("circulant", 4, 4, init="ones")
    with pytest.raises(ValueError, match=r"expects inputs with last dimension 4"):
        make("circulant", 4, 4)(torch.randn(2, 5))


def test_public_api():
    assert surm_core.make is make and surm_core.from_budget is from_budget


# -- the negacyclic convolution behind LDR's skew-circulant factors --------------------------------
def negacyclic_np(h, x):
    """h * x modulo tⁿ + 1: the linear convolution with its tail wrapped back negated."""
    n = len(x)
    z = np.convolve(h, x)
    return z[:n] - np.r_[z[n:], 0.0]


@pytest.mark.parametrize("n", [1, 2, 5, 8, 63, 64, 96])
def test_negacyclic_transform_turns_products_mod_t_n_plus_1_into_products(n):
    from surm_core.families.fftconv import negacyclic_fft, negacyclic_ifft

    rng = np.random.default_rng(n)
    x = torch.from_numpy(rng.standard_normal((3, n)))
    h = torch.from_numpy(rng.standard_normal(n))
    y = negacyclic_ifft(negacyclic_fft(x) * negacyclic_fft(h), n)
    ref = np.stack([negacyclic_np(h.numpy(), row) for row in x.numpy()])
    np.testing.assert_allclose(y.numpy(), ref, atol=1e-12 * np.abs(ref).max())
    np.testing.assert_allclose(negacyclic_ifft(negacyclic_fft(x), n).numpy(), x.numpy(), atol=1e-12)


@pytest.mark.parametrize("fam", ["circulant", "toeplitz", "symmetric_toeplitz", "ldr"])
@pytest.mark.parametrize("block_elements", [1, 100])
def test_fft_families_in_row_blocks(fam, block_elements, monkeypatch):
    """On the CPU a batch goes through the transforms in blocks of rows (one row each, or uneven
    blocks of a few): same values and gradients as the dense map."""
    from surm_core.families import fftconv

    m = build(fam, (48, 80), VARIANTS[fam][-1])
    monkeypatch.setattr(fftconv, "_BLOCK_ELEMENTS", block_elements)
    x = torch.randn(3, 5, 80, dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    gy = torch.randn(3, 5, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    y = m(x)
    W = m.to_dense()
    torch.testing.assert_close(y, x @ W.T, rtol=1e-10, atol=1e-10)
    grads = torch.autograd.grad(y, [x, *m.parameters()], gy)
    ref = torch.autograd.grad(x @ W.T, [x, *m.parameters()], gy)
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("fam", ["circulant", "toeplitz", "symmetric_toeplitz", "ldr"])
def test_fft_families_take_an_empty_batch(fam):
    m = build(fam, (48, 80), VARIANTS[fam][-1])
    x = torch.empty(0, 80, dtype=torch.float64, requires_grad=True)
    y = m(x)
    assert y.shape == (0, 48)
    grads = torch.autograd.grad(y.sum(), [x, *m.parameters()])
    assert grads[0].shape == (0, 80)
    assert all(torch.count_nonzero(g) == 0 and g.shape == p.shape for g, p in zip(grads[1:], m.parameters()))
