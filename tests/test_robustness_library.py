"""Bounded work and clear refusals in the library: memory of the largest exploration, bfloat16
everywhere (to_dense, analysis, merge), one dtype rule, no configuration larger than the dense
map, no NaN/inf into the analysis."""
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from surm_core import FAMILIES, analysis, from_budget, make
from surm_core.adapters.layer import DeltaLayer

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py
ROOT = pathlib.Path(__file__).resolve().parent.parent


# -- memory --------------------------------------------------------------------------------
@pytest.mark.skipif(not pathlib.Path("/proc/self/status").exists(), reason="needs Linux's /proc")
def test_largest_ldr_exploration_stays_under_a_gib():
    # the slider's maximum at 1024 × 1024: r = 512 on one tile (was 12.6 GiB in LDR's to_dense)
    code = textwrap.dedent("""
        import torch
        torch.set_num_threads(1)
        from surm_core.session import explore

        def peak():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM"):
                    return int(line.split()[1]) * 1024

        before = peak()
        result = explore("ldr", 1024, 1024, budget=1024 * 1024)
        assert result.config["hparams"] == {"block": 1024, "r": 512} and result.complete
        print(peak() - before)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    extra = int(out.stdout.split()[-1])
    assert extra < 2**30, f"peak memory rose by {extra / 2**20:.0f} MiB"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_to_dense_of_the_largest_member_is_exact(family):
    # the top of the budget range at an odd size: to_dense agrees with forward on the identity
    m = from_budget(family, 97, 83, budget=97 * 83, init="random", seed=0).double()
    with torch.no_grad():
        torch.testing.assert_close(m.to_dense(), m(torch.eye(83, dtype=torch.float64)).T, atol=1e-12, rtol=1e-10)


# -- bfloat16 --------------------------------------------------------------------------------
@pytest.mark.parametrize("family", list(FAMILIES))
def test_bfloat16_to_dense_analysis_and_merge(family):
    torch.manual_seed(0)
    base = nn.Linear(40, 48).to(torch.bfloat16)
    layer = DeltaLayer(base, make(family, 48, 40, init="random", seed=0), scale=0.5, dropout=0.0)
    adapter = layer.adapter
    assert adapter.to_dense().dtype == torch.bfloat16
    x = torch.randn(6, 40).to(torch.bfloat16)
    with torch.no_grad():
        W = base.weight.double() + 0.5 * adapter.to_dense().double()
        ref = x.double() @ W.T + base.bias.double()
        unmerged = layer(x)
        layer.merge()
        merged = layer(x)
    for y in (unmerged, merged):
        assert y.dtype == torch.bfloat16
        assert torch.linalg.norm(y.double() - ref) <= 2e-2 * torch.linalg.norm(ref)
    dense = adapter.to_dense().detach().double().numpy()
    s = analysis.singular_values(adapter).numpy()
    np.testing.assert_allclose(s, np.linalg.svd(dense, compute_uv=False), atol=2e-2 * s[0])
    assert analysis.displacement(adapter).dtype == torch.float64
    square = make(family, 32, 32, init="random", seed=0).to(torch.bfloat16)
    lam = analysis.eigenvalues(square).numpy()
    ref = np.linalg.eigvals(square.to_dense().detach().double().numpy())
    assert np.abs(lam[:, None] - ref[None, :]).min(1).max() <= 3e-2 * np.abs(ref).max()


# -- one dtype rule --------------------------------------------------------------------------
@pytest.mark.parametrize("family", list(FAMILIES))
def test_input_dtype_must_match_the_parameters(family):
    m = make(family, 24, 20, init="random", seed=0)
    with pytest.raises(ValueError, match=rf"{family} map has torch.float32 parameters but got a torch.float64 input"):
        m(torch.randn(3, 20, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"torch.float64 parameters but got a torch.bfloat16 input"):
        m.double()(torch.randn(3, 20).to(torch.bfloat16))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_training_under_cpu_autocast(family):
    # as on CUDA: bf16 activations reach float32 adapters; autocast's matmuls and the FFT
    # families' float32 transforms both accept them
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 48), DeltaLayer(nn.Linear(48, 32), make(family, 32, 48, seed=0), 1.0, 0.0))
    adapter = model[1].adapter
    opt = torch.optim.SGD(adapter.parameters(), lr=0.1)
    x = torch.randn(8, 40)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model[0](x).dtype == torch.bfloat16  # what the adapter is given
        y = model(x)
    y.float().pow(2).mean().backward()
    grads = [p.grad for p in adapter.parameters()]
    assert all(g is not None and g.dtype == torch.float32 and bool(torch.isfinite(g).all()) for g in grads)
    assert any(bool(g.any()) for g in grads)
    opt.step()
    assert adapter.to_dense().any()  # the zero start moved


# -- no configuration larger than the dense map ---------------------------------------------
@pytest.mark.parametrize("family,shape,hparams", [
    ("lowrank", (64, 64), {"r": 10**6}),
    ("lowrank", (64, 64), {"r": 10**15}),  # would need petabytes: refused before allocating
    ("lowrank", (64, 64), {"r": 33}),
    ("ldr", (64, 64), {"r": 10**6}),
    ("ldr", (64, 64), {"block": 2, "r": 2}),
    ("monarch", (64, 64), {"nblocks": 4, "blk_r": 10**9}),
    ("toeplitz", (1, 64), {"block": 64}),
    ("symmetric_toeplitz", (1, 10), {"block": 4}),
    ("kronecker", (7, 7), {"a_shape": (1, 1)}),
])
def test_configurations_beyond_the_dense_count_are_refused(family, shape, hparams):
    cls = FAMILIES[family]
    count = cls.count(*shape, **cls.resolve(*shape, **hparams))
    with pytest.raises(ValueError, match=rf"has {count:,} parameters, more than a dense {shape[0]}×{shape[1]} "
                                         rf"map \({shape[0] * shape[1]:,}\).*at most"):
        make(family, *shape, **hparams)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("shape", [(1, 1), (1, 64), (64, 1), (3, 10), (7, 7), (64, 64)])
def test_defaults_and_budgets_fit_any_layer(family, shape):
    limit = FAMILIES[family].max_params(*shape)
    assert make(family, *shape).num_params <= limit
    assert from_budget(family, *shape, budget=10**12).num_params == max(
        FAMILIES[family].count(*shape, **hp) for hp in FAMILIES[family].candidates(*shape, 10**12))
    assert from_budget(family, *shape, budget=10**12).num_params <= limit


def test_the_family_minimum_is_allowed_where_it_exceeds_the_dense_count():
    assert make("lowrank", 1, 64).hparams["r"] == 1  # 65 parameters for a 64-entry map: LoRA's least
    with pytest.raises(ValueError, match=r"more than a dense 1×64 map \(64\) and than the family's smallest "
                                         r"configuration \(65\); use hyperparameters with at most 65"):
        make("lowrank", 1, 64, r=2)


# -- NaN and inf into the analysis -----------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_matrices_are_refused(bad):
    W = np.random.default_rng(0).standard_normal((6, 6))
    W[2, 3] = bad
    what = "1 NaN entries" if np.isnan(bad) else "1 infinite entries"
    calls = [
        lambda: analysis.nearest("lowrank", W, 24),
        lambda: analysis.nearest("circulant", torch.from_numpy(W), 6),
        lambda: analysis.singular_values(W),
        lambda: analysis.singular_values(W, k=2),
        lambda: analysis.eigenvalues(W),
        lambda: analysis.numerical_rank(W),
        lambda: analysis.displacement(W),
        lambda: analysis.displacement_rank(W),
        lambda: analysis.displacement(np.eye(6), W, "Z1"),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=rf"the matrix holds {what}; every entry must be a finite number"):
            call()


def test_nonfinite_parameters_are_refused():
    m = make("kronecker", 16, 16, init="random", seed=0)
    with torch.no_grad():
        m.B[0, 0] = float("nan")
    for call in (analysis.singular_values, analysis.eigenvalues, analysis.numerical_rank, analysis.displacement):
        with pytest.raises(ValueError, match=r"the kronecker map's parameter B holds 1 NaN entries"):
            call(m)
