"""surm_core.analysis against independent references: numpy/scipy spectra and ranks, explicit
numpy operator products, least squares over each linear family's parameters, and the optimality
conditions of the closed-form projections. Square, rectangular and odd sizes."""
import copy
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from surm_core import FAMILIES, analysis, from_budget, make

from conftest import fit_layer
from surm_core.analysis import (
    displacement,
    displacement_rank,
    eigenvalues,
    nearest,
    numerical_rank,
    shift,
    singular_values,
)

SHAPES = [(7, 7), (64, 64), (48, 80), (63, 65), (96, 40)]
# hyperparameters beyond the defaults, so every spectral path is taken: tiled circulants (dense
# SVD), factor shapes other than the balanced one, a lowrank scale ≠ 1 and the largest rank
# allowed (fit_layer lowers explicit hyperparameters to what a layer allows)
VARIANTS = {
    "dense": [{}],
    "lowrank": [{}, {"r": 3, "alpha": -6.0}, {"r": 70}],
    "circulant": [{}, {"block": "third"}, {"block": "whole"}],
    "toeplitz": [{}, {"block": "third"}],
    "symmetric_toeplitz": [{}],
    "kronecker": [{}, {"a_shape": "first_divisors"}],
    "ldr": [{"r": 2}, {"block": "third", "r": 3}],
    "monarch": [{}, {"nblocks": 3, "blk_r": 2}],
}


def build(family, shape, hp=None, seed=0):
    hp = dict(hp or {})
    if hp.get("block") == "third":
        hp["block"] = max(1, max(shape) // 3)
    if hp.get("block") == "whole":  # tiles that fit exactly, more than one: the per-frequency path
        common = math.gcd(*shape)
        hp["block"] = max(d for d in range(1, common + 1) if common % d == 0 and d < max(shape))
    if hp.get("a_shape") == "first_divisors":
        hp["a_shape"] = tuple(min(k for k in range(2, d + 1) if d % k == 0) if d > 1 else 1 for d in shape)
    return make(family, *shape, init="random", seed=seed, **fit_layer(family, hp, *shape)).double()


def dense_np(m):
    return m.to_dense().detach().numpy()


def forbid_dense(monkeypatch, m):
    """Make m.to_dense raise, to prove a structure-aware path never builds the matrix."""
    def boom():
        raise AssertionError("to_dense called")
    monkeypatch.setattr(m, "to_dense", boom)


def assert_svals_close(s, ref, rtol=1e-10):
    assert s.dtype == torch.float64
    assert bool((s[:-1] >= s[1:]).all()), "not descending"
    np.testing.assert_allclose(s.numpy(), ref, rtol=0, atol=rtol * max(ref[0], 1e-300))


# -- singular values -------------------------------------------------------------------------------
@pytest.mark.parametrize("family,hp", [(f, hp) for f, hps in VARIANTS.items() for hp in hps])
@pytest.mark.parametrize("shape", SHAPES)
def test_singular_values_match_numpy(family, hp, shape):
    m = build(family, shape, hp)
    ref = np.linalg.svd(dense_np(m), compute_uv=False)
    s = singular_values(m)
    assert s.shape == (min(shape),)
    assert_svals_close(s, ref)
    assert_svals_close(singular_values(m, k=3 if min(shape) >= 3 else 1), ref[: 3 if min(shape) >= 3 else 1])


@pytest.mark.parametrize("family,hp,shape", [
    ("circulant", {}, (64, 64)),
    ("circulant", {}, (7, 7)),
    ("circulant", {"block": 16}, (48, 80)),
    ("circulant", {"block": 1}, (5, 3)),
    ("kronecker", {}, (48, 80)),
    ("kronecker", {"a_shape": (3, 5)}, (63, 65)),
    ("lowrank", {"r": 3, "alpha": -6.0}, (96, 40)),
    ("lowrank", {"r": 9}, (7, 7)),
])
def test_singular_values_structure_paths_never_build_the_matrix(monkeypatch, family, hp, shape):
    m = build(family, shape, hp)
    ref = np.linalg.svd(dense_np(m), compute_uv=False)
    forbid_dense(monkeypatch, m)
    assert_svals_close(singular_values(m), ref)


def test_singular_values_of_tensors_and_arrays():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((9, 5))
    ref = np.linalg.svd(X, compute_uv=False)
    assert_svals_close(singular_values(X), ref)
    assert_svals_close(singular_values(torch.from_numpy(X)), ref)
    assert_svals_close(singular_values(torch.from_numpy(X).float()), ref, rtol=1e-6)
    assert_svals_close(singular_values(X, k=2), ref[:2])


def test_circulant_65536_all_singular_values_by_fft(monkeypatch):
    m = make("circulant", 65536, 65536, init="random", seed=0)
    forbid_dense(monkeypatch, m)
    s = singular_values(m)
    ref = np.sort(np.abs(np.fft.fft(m.c[0, 0].detach().double().numpy())))[::-1]
    assert s.shape == (65536,)
    np.testing.assert_allclose(s[:5].numpy(), ref[:5], rtol=1e-12)
    np.testing.assert_allclose(s[-5:].numpy(), ref[-5:], rtol=1e-9)
    np.testing.assert_allclose(s.numpy(), ref, rtol=0, atol=1e-12 * ref[0])
    # the rank rides on the same FFT: numpy's rule at float32 precision (the module's dtype)
    assert numerical_rank(m) == int((ref > ref[0] * 65536 * np.finfo(np.float32).eps).sum())


@pytest.mark.parametrize("family,hp,shape", [
    ("circulant", {"block": 30}, (70, 90)),
    ("toeplitz", {"block": 20}, (75, 57)),
    ("ldr", {"block": 25, "r": 2}, (60, 60)),
    ("monarch", {"nblocks": 4, "blk_r": 5}, (80, 60)),
    ("dense", {}, (50, 70)),
])
def test_iterative_top_k_from_forward(monkeypatch, family, hp, shape):
    # the iterative path normally starts above 2048 on a side; lowered here to keep this fast
    monkeypatch.setattr(analysis, "ITERATIVE_ABOVE", 40)
    m = build(family, shape, hp)
    ref = np.linalg.svd(dense_np(m), compute_uv=False)
    forbid_dense(monkeypatch, m)
    assert_svals_close(singular_values(m, k=6), ref[:6], rtol=1e-8)


def test_iterative_top_k_at_real_size_for_matrices():
    X = np.random.default_rng(1).standard_normal((2100, 40))  # past ITERATIVE_ABOVE, cheap to apply
    assert_svals_close(singular_values(X, k=4), np.linalg.svd(X, compute_uv=False)[:4], rtol=1e-8)


# -- eigenvalues and ranks ---------------------------------------------------------------------------
def assert_same_spectrum(lam, ref, tol):
    ours = lam.numpy()
    assert lam.dtype == torch.complex128 and ours.shape == ref.shape
    assert np.all(np.diff(np.abs(ours)) <= 1e-12 * np.abs(ours).max()), "not by decreasing modulus"
    # each eigenvalue close to one of the other set's, both ways
    assert np.abs(ours[:, None] - ref[None, :]).min(1).max() <= tol
    assert np.abs(ours[:, None] - ref[None, :]).min(0).max() <= tol


@pytest.mark.parametrize("family,hp", [(f, hp) for f, hps in VARIANTS.items() for hp in hps])
@pytest.mark.parametrize("n", [7, 64, 63])
def test_eigenvalues_match_numpy(family, hp, n):
    m = build(family, (n, n), hp)
    ref = np.linalg.eigvals(dense_np(m))
    assert_same_spectrum(eigenvalues(m), ref, 1e-8 * np.abs(ref).max())


@pytest.mark.parametrize("n,a_shape", [(12, (2, 3)), (12, (3, 2)), (48, (6, 8)), (60, (5, 3))])
def test_kronecker_eigenvalues_with_non_square_factors_from_the_swapped_product(monkeypatch, n, a_shape):
    m = build("kronecker", (n, n), {"a_shape": a_shape})
    ref = np.linalg.eigvals(dense_np(m))
    forbid_dense(monkeypatch, m)
    assert_same_spectrum(eigenvalues(m), ref, 1e-12 * np.abs(ref).max())


def test_circulant_eigenvalues_are_the_fft(monkeypatch):
    m = build("circulant", (33, 33))
    ref = np.fft.fft(m.c[0, 0].detach().numpy())
    forbid_dense(monkeypatch, m)
    assert_same_spectrum(eigenvalues(m), ref, 1e-12 * np.abs(ref).max())


def test_numerical_rank_matches_numpy():
    n = 64
    cases = [
        build("lowrank", (48, 80), {"r": 3}),
        build("monarch", (60, 90), {"nblocks": 2, "blk_r": 1}),
        build("kronecker", (48, 80), {"a_shape": (4, 8)}),
        build("ldr", (40, 40), {"r": 2}),
        np.zeros((5, 3)),
        np.random.default_rng(0).standard_normal((6, 9)),
        make("lowrank", 48, 80, r=3, init="random", seed=0),  # float32: float32's tolerance
    ]
    for c, expected in ((np.ones(n), 1), (np.r_[1.0, -1.0, np.zeros(n - 2)], n - 1)):  # |fft(c)| zeros
        m = make("circulant", n, n).double()
        with torch.no_grad():
            m.c[0, 0] = torch.from_numpy(c)
        cases.append(m)
        assert numerical_rank(m) == expected
    kron = build("kronecker", (48, 80), {"a_shape": (4, 8)})
    with torch.no_grad():
        kron.A[1:] = kron.A[:1]  # A of rank 1: rank A ⊗ B = 1 · rank B = 10
    cases.append(kron)
    for M in cases:
        X = dense_np(M) if hasattr(M, "to_dense") else M
        assert numerical_rank(M) == np.linalg.matrix_rank(X), M
        assert numerical_rank(M, rtol=0.3) == np.linalg.matrix_rank(X, rtol=0.3), M
    assert numerical_rank(cases[0]) == 3 and numerical_rank(kron) == 10 and numerical_rank(cases[4]) == 0


@pytest.mark.parametrize("shape,rank", [((300, 300), 1), ((400, 257), 5), ((257, 700), 63)])
def test_low_rank_matrices_take_the_sketch_and_match_numpy(monkeypatch, shape, rank):
    rng = np.random.default_rng(rank)
    X = rng.standard_normal((shape[0], rank)) @ rng.standard_normal((rank, shape[1]))
    ref = np.linalg.svd(X, compute_uv=False)
    calls = []
    real_svdvals = torch.linalg.svdvals
    monkeypatch.setattr(torch.linalg, "svdvals", lambda A: calls.append(A.shape) or real_svdvals(A))
    s = singular_values(X)
    assert calls == [(min(shape[0], analysis.LOW_RANK_SKETCH), shape[1])]  # only the sketch's core
    assert_svals_close(s, ref)
    assert bool((s[analysis.LOW_RANK_SKETCH:] == 0).all())  # outside the sketch: exactly 0
    assert float(s[rank]) < max(shape) * np.finfo(float).eps * ref[0]  # round-off
    assert numerical_rank(X) == np.linalg.matrix_rank(X) == rank


@pytest.mark.parametrize("rank", [64, 200])
def test_sketch_declines_larger_ranks(rank):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, rank)) @ rng.standard_normal((rank, 300))
    s = singular_values(X)
    assert_svals_close(s, np.linalg.svd(X, compute_uv=False))
    assert numerical_rank(X) == np.linalg.matrix_rank(X) == rank


def test_ranks_from_values_at_hand_need_no_svd(monkeypatch):
    m = build("toeplitz", (40, 40))
    s, r = singular_values(m), displacement(m)
    sr = singular_values(r)
    monkeypatch.setattr(analysis, "singular_values", lambda *a: pytest.fail("recomputed"))
    assert numerical_rank(m, values=s) == np.linalg.matrix_rank(dense_np(m)) == 40
    assert displacement_rank(m, values=sr) == 2


# -- displacement ---------------------------------------------------------------------------------------
def z_np(n, f):
    Z = np.roll(np.eye(n), 1, axis=0)  # Z[i, i-1] = 1 and Z[0, n-1] = 1
    Z[0, n - 1] = f
    return Z


@pytest.mark.parametrize("n,f", [(1, 3.0), (2, -1.0), (6, 0.0), (9, 0.5)])
def test_shift_is_the_unit_f_circulant(n, f):
    Z = shift(n, f)
    assert Z.dtype == torch.float64
    np.testing.assert_array_equal(Z.numpy(), z_np(n, f))


@pytest.mark.parametrize("shape", [(5, 5), (5, 8), (9, 4)])
def test_displacement_equals_explicit_products(shape):
    rng = np.random.default_rng(0)
    M = rng.standard_normal(shape)
    A, B = rng.standard_normal((shape[0],) * 2), rng.standard_normal((shape[1],) * 2)
    for a, b, A_np, B_np in [
        ("Z1", "Z-1", z_np(shape[0], 1), z_np(shape[1], -1)),
        ("Z0", "Z0.5", z_np(shape[0], 0), z_np(shape[1], 0.5)),
        ("Z-2", "Z1", z_np(shape[0], -2), z_np(shape[1], 1)),
        (A, "Z1", A, z_np(shape[1], 1)),
        ("Z1", torch.from_numpy(B), z_np(shape[0], 1), B),
    ]:
        np.testing.assert_allclose(displacement(M, a, b).numpy(), A_np @ M - M @ B_np, atol=1e-12)
    m = build("toeplitz", shape)
    np.testing.assert_allclose(
        displacement(m).numpy(), z_np(shape[0], 1) @ dense_np(m) - dense_np(m) @ z_np(shape[1], -1), atol=1e-12
    )


@pytest.mark.parametrize("n", [7, 16, 33])
def test_displacement_rank_facts(n):
    rng = np.random.default_rng(n)
    circ = build("circulant", (n, n), seed=n)
    assert displacement_rank(circ) == 1
    assert torch.count_nonzero(displacement(circ, "Z1", "Z1")) == 0  # C commutes with Z1
    assert displacement_rank(scipy.linalg.circulant(rng.standard_normal(n))) == 1
    assert displacement_rank(build("toeplitz", (n, n), seed=n)) == 2
    assert displacement_rank(scipy.linalg.toeplitz(rng.standard_normal(n), rng.standard_normal(n))) == 2
    assert displacement_rank(build("symmetric_toeplitz", (n, n), seed=n)) <= 2
    for r in (1, 2, 3):
        ldr = build("ldr", (n, n), {"r": r}, seed=r)
        assert displacement_rank(ldr) == r
        assert np.linalg.matrix_rank(z_np(n, 1) @ dense_np(ldr) - dense_np(ldr) @ z_np(n, -1)) == r
        assert displacement_rank(build("lowrank", (n, n), {"r": r}, seed=r)) == min(2 * r, n)
    assert displacement_rank(rng.standard_normal((n, n))) == n


# -- nearest ---------------------------------------------------------------------------------------------
def budget_for(family, shape):
    return shape[0] * shape[1] if family == "dense" else 6 * (shape[0] + shape[1])


def rel_err(W, M):
    return np.linalg.norm(W - M) / np.linalg.norm(W)


CLOSED_FORM = [f for f in FAMILIES if f != "ldr"]


@pytest.mark.parametrize("family", CLOSED_FORM)
@pytest.mark.parametrize("shape", SHAPES)
def test_nearest_recovers_members(family, shape):
    budget = budget_for(family, shape)
    member = from_budget(family, *shape, budget, init="random", seed=1).double()
    W = member.to_dense().detach()
    m, err = nearest(family, W, budget)
    assert m.family == family and m.hparams == member.hparams and m.num_params <= budget
    assert err < 1e-10
    assert rel_err(W.numpy(), dense_np(m)) == pytest.approx(err, abs=1e-15)


@pytest.mark.parametrize("n,budget", [(16, 64), (64, 512), (63, 3 * 2 * 63)])
def test_nearest_ldr_recovers_single_tile_members(n, budget):
    member = from_budget("ldr", n, n, budget, init="random", seed=2).double()
    assert member.hparams["block"] == n
    m, err = nearest("ldr", member.to_dense().detach(), budget)
    assert err < 1e-9


def circulant_projection_np(W, block):
    """Loop reference: per tile, each wrapped diagonal's visible mean (0 where none is visible)."""
    d_out, d_in = W.shape
    out = np.zeros_like(W)
    for i0 in range(0, d_out, block):
        for j0 in range(0, d_in, block):
            sums, counts = np.zeros(block), np.zeros(block)
            cells = [(a, b) for a in range(block) for b in range(block) if i0 + a < d_out and j0 + b < d_in]
            for a, b in cells:
                sums[(a - b) % block] += W[i0 + a, j0 + b]
                counts[(a - b) % block] += 1
            for a, b in cells:
                out[i0 + a, j0 + b] = sums[(a - b) % block] / counts[(a - b) % block]
    return out


def lstsq_error(m, W):
    """Optimal error over m's (linear) family at m's configuration, by least squares on the
    matrix whose columns are to_dense of each unit parameter vector."""
    m = copy.deepcopy(m)
    params = list(m.parameters())
    columns = []
    with torch.no_grad():
        for p in params:
            p.zero_()
        for p in params:
            for i in range(p.numel()):
                p.view(-1)[i] = 1.0
                columns.append(m.to_dense().flatten().numpy().copy())
                p.view(-1)[i] = 0.0
    J = np.stack(columns, 1)
    x = np.linalg.lstsq(J, W.ravel(), rcond=None)[0]
    return np.linalg.norm(J @ x - W.ravel()) / np.linalg.norm(W)


@pytest.mark.parametrize("family", ["circulant", "toeplitz", "symmetric_toeplitz", "dense"])
@pytest.mark.parametrize("shape,budget", [((7, 7), 20), ((10, 6), 30), ((5, 9), 17), ((12, 12), 40)])
def test_nearest_linear_families_are_least_squares(family, shape, budget):
    W = np.random.default_rng(3).standard_normal(shape)
    budget = shape[0] * shape[1] if family == "dense" else budget
    m, err = nearest(family, W, budget)
    assert err == pytest.approx(lstsq_error(m, W), abs=1e-12)
    if family == "circulant":
        np.testing.assert_allclose(dense_np(m), circulant_projection_np(W, m.block), atol=1e-12)


@pytest.mark.parametrize("family", ["lowrank", "kronecker", "monarch"])
@pytest.mark.parametrize("shape", [(48, 80), (63, 65), (96, 40)])
def test_nearest_bilinear_families_are_stationary(family, shape):
    # A projection is a minimum: the gradient of ‖W − M(θ)‖² in the parameters vanishes
    W = torch.from_numpy(np.random.default_rng(4).standard_normal(shape))
    m, _ = nearest(family, W, budget_for(family, shape))
    loss = (W - m.to_dense()).pow(2).sum()
    grads = torch.autograd.grad(loss, list(m.parameters()))
    assert max(float(g.abs().max()) for g in grads) < 1e-9 * float(W.norm()) ** 2


@pytest.mark.parametrize("shape", [(48, 80), (40, 40), (63, 65)])
def test_nearest_lowrank_is_eckart_young(shape):
    W = np.random.default_rng(5).standard_normal(shape)
    budget = budget_for("lowrank", shape)
    m, err = nearest("lowrank", W, budget)
    s = np.linalg.svd(W, compute_uv=False)
    r = m.hparams["r"]
    assert r == budget // sum(shape)
    assert err == pytest.approx(math.sqrt((s[r:] ** 2).sum()) / np.linalg.norm(W), abs=1e-12)


def random_psd(n, seed):
    X = np.random.default_rng(seed).standard_normal((n, n))
    return X @ X.T / n


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("shape", [(48, 48), (40, 56)])
def test_nearest_never_worse_than_random_members(family, shape):
    budget = budget_for(family, shape)
    for seed in range(2):
        W = random_psd(shape[0], seed) if shape[0] == shape[1] else np.random.default_rng(seed).standard_normal(shape)
        _, err = nearest(family, W, budget)
        for member_seed in range(3):
            R = dense_np(from_budget(family, *shape, budget, init="random", seed=member_seed).double())
            alpha = (W * R).sum() / (R * R).sum()  # the best multiple of the random member
            assert err <= rel_err(W, alpha * R) + 1e-12


@pytest.mark.parametrize("shape,budget", [((48, 80), 700), ((40, 40), 480), ((63, 65), 900), ((30, 30), 240)])
def test_nearest_ldr_never_worse_than_circulant_projection_at_its_block(shape, budget):
    W = np.random.default_rng(6).standard_normal(shape)
    W[:, 1:] += 2 * W[:, :-1]  # some structure for the fit to find
    m, err = nearest("ldr", W, budget)
    circ = rel_err(W, circulant_projection_np(W, m.block))
    assert err <= circ + 1e-12
    assert err == pytest.approx(rel_err(W, dense_np(m)), abs=1e-12)


def test_nearest_dtype_and_zero_matrix():
    W = torch.randn(12, 20)
    m, err = nearest("toeplitz", W, 60)
    assert next(m.parameters()).dtype == torch.float32 and 0 < err < 1
    m, err = nearest("kronecker", W.numpy(), 60)
    assert next(m.parameters()).dtype == torch.float64
    for family in FAMILIES:
        m, err = nearest(family, np.zeros((6, 6)), 36)
        assert err == 0.0 and not dense_np(m).any()


# -- bad input -------------------------------------------------------------------------------------------
def test_bad_input_is_a_clear_value_error():
    M = np.ones((5, 7))
    with pytest.raises(ValueError, match=r"unknown operator 'Q1' for A; use 'Z1', 'Z-1'"):
        displacement(M, "Q1")
    with pytest.raises(ValueError, match=r"unknown operator 'Zf' for B"):
        displacement_rank(M, "Z1", "Zf")
    with pytest.raises(ValueError, match=r"operator B must be 7 × 7 for this M, got \(5, 5\)"):
        displacement(M, "Z1", np.eye(5))
    with pytest.raises(ValueError, match=r"eigenvalues need a square map, got shape \(5, 7\)"):
        eigenvalues(M)
    with pytest.raises(ValueError, match=r"eigenvalues need a square map"):
        eigenvalues(make("lowrank", 4, 6))
    with pytest.raises(ValueError, match=r"unknown family 'circulent'; known families: dense, lowrank"):
        nearest("circulent", M, 100)
    with pytest.raises(ValueError, match=r"budget of 3 parameters is too small for a lowrank map .* needs 12"):
        nearest("lowrank", M, 3)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 5\] .* got 6"):
        singular_values(M, k=6)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 5\] .* got 0"):
        singular_values(M, k=0)
    with pytest.raises(ValueError, match=r"expected a matrix \(2-D\), got shape \(2, 2, 2\)"):
        numerical_rank(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match=r"rtol must be a finite number ≥ 0, got -1.0"):
        numerical_rank(M, rtol=-1)
    with pytest.raises(ValueError, match=r"n must be a positive integer, got 0"):
        shift(0, 1.0)
