"""A family defined here, outside surm_core, registered and used through every entry point:
make, from_budget, inject/merge/save/load, analysis (dense fallbacks), figures, the Explore session."""
import numpy as np
import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

import surm_core
from surm_core import FAMILIES, AdapterConfig, StructuredMatrix, analysis, from_budget, make, register_family
from surm_core.session import explore

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


class BandedMatrix(StructuredMatrix):
    """ΔW[i, j] = band[i, j − i + w] where |i − j| ≤ w (2w + 1 diagonals), else 0.

    A test family: stored as d_out rows of 2w + 1 entries, applied by sliding windows.
    """

    family = "banded"
    zero_params = ("band",)

    def __init__(self, d_out, d_in, init="zero", seed=None, width=0):
        super().__init__(d_out, d_in, {"width": width})
        self.band = nn.Parameter(torch.empty(d_out, 2 * width + 1))
        self._init_params(init, seed)

    def forward(self, x):
        self.check_input(x)
        w = self.hparams["width"]
        x = nn.functional.pad(x, (w, max(0, self.d_out + w - self.d_in)))
        return (x.unfold(-1, 2 * w + 1, 1)[..., : self.d_out, :] * self.band).sum(-1)

    def to_dense(self):
        w = self.hparams["width"]
        rows = torch.arange(self.d_out)[:, None].expand(-1, 2 * w + 1)
        cols = rows + torch.arange(2 * w + 1) - w
        inside = (cols >= 0) & (cols < self.d_in)
        dense = self.band.new_zeros(self.d_out, self.d_in)
        return dense.index_put((rows[inside], cols[inside]), self.band[inside])

    @classmethod
    def count(cls, d_out, d_in, width):
        return d_out * (2 * width + 1)

    @classmethod
    def candidates(cls, d_out, d_in, budget):
        return ({"width": w} for w in range(max(d_out, d_in)) if cls.count(d_out, d_in, w) <= budget)

    @classmethod
    def smallest(cls, d_out, d_in):
        return {"width": 0}


@pytest.fixture
def banded():
    register_family(BandedMatrix)
    yield BandedMatrix
    del FAMILIES["banded"]


def band_projection(W, w):
    i, j = np.indices(W.shape)
    return np.where(np.abs(i - j) <= w, W, 0.0)


def test_make_and_from_budget(banded):
    m = make("banded", 12, 10, width=2, init="random", seed=0).double()
    x = torch.randn(3, 10, dtype=torch.float64)
    np.testing.assert_allclose(m(x).detach().numpy(), (x @ m.to_dense().T).detach().numpy(), atol=1e-12)
    assert m.num_params == 12 * 5
    dense = m.to_dense().detach().numpy()
    np.testing.assert_array_equal(dense, band_projection(dense, 2))
    assert from_budget("banded", 12, 10, budget=40).hparams == {"width": 1}  # 36 fits, 60 does not
    with pytest.raises(ValueError, match="smallest needs 12"):
        from_budget("banded", 12, 10, budget=11)
    assert "banded" in surm_core.FAMILIES and surm_core.register_family is register_family


def test_inject_merge_save_and_load(banded, tmp_path):
    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                        vocab_size=50, max_position_embeddings=16, num_labels=2)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    ids = torch.randint(1, 50, (2, 8), generator=torch.Generator().manual_seed(1))
    base = model(input_ids=ids).logits
    surm_core.inject(model, AdapterConfig("banded", ["query", "value"], budget=100))
    layers = [m for m in model.modules() if isinstance(m, BandedMatrix)]
    assert len(layers) == 2 and all(m.hparams == {"width": 1} for m in layers)  # 32·3 = 96 ≤ 100
    assert torch.equal(model(input_ids=ids).logits, base)  # zero init: the base model
    with torch.no_grad():
        for m in layers:
            m.band.normal_(0, 0.1, generator=torch.Generator().manual_seed(2))
        adapted = model(input_ids=ids).logits
    assert not torch.allclose(adapted, base)
    surm_core.save_adapter(model, tmp_path / "adapter")
    torch.manual_seed(0)
    fresh = BertForSequenceClassification(config).eval()
    surm_core.load_adapter(fresh, tmp_path / "adapter")
    surm_core.merge(fresh)
    with torch.no_grad():
        torch.testing.assert_close(fresh(input_ids=ids).logits, adapted, atol=1e-5, rtol=1e-5)


def test_analysis_uses_the_dense_fallbacks(banded):
    m = make("banded", 20, 16, width=3, init="random", seed=1).double()
    ref = np.linalg.svd(m.to_dense().detach().numpy(), compute_uv=False)
    np.testing.assert_allclose(analysis.singular_values(m).numpy(), ref, atol=1e-12)
    sq = make("banded", 16, 16, width=1, init="random", seed=1).double()
    lam = analysis.eigenvalues(sq).numpy()
    ref = np.linalg.eigvals(sq.to_dense().detach().numpy())
    assert np.abs(lam[:, None] - ref[None, :]).min(1).max() < 1e-10
    assert analysis.displacement_rank(sq) == np.linalg.matrix_rank(analysis.displacement(sq).numpy())


def test_nearest_fits_by_least_squares(banded):
    W = np.random.default_rng(0).standard_normal((20, 16))
    m, err = analysis.nearest("banded", W, budget=20 * 5)
    assert m.hparams == {"width": 2}
    best = band_projection(W, 2)  # a linear family's least-squares member: W on the band
    np.testing.assert_allclose(m.to_dense().detach().numpy(), best, atol=1e-8)
    assert err == pytest.approx(np.linalg.norm(W - best) / np.linalg.norm(W), abs=1e-10)


def test_explore_session(banded):
    result = explore("banded", 24, 24, budget=24 * 3, seed=0)
    assert result.config["family"] == "banded" and result.config["hparams"] == {"width": 1}
    assert result.config["num_params"] == 72 and result.complete
    assert result.explanation.startswith("### banded\nΔW[i, j] = band[i, j − i + w]")
    np.testing.assert_allclose(result.heatmap.data[0].z, make("banded", 24, 24, width=1, init="random",
                                                              seed=0).double().to_dense().detach().numpy())
    assert result.eigenvalues is not None and result.spectrum.data and result.displacement.data


class NoDense(StructuredMatrix):
    family = "no_dense"

    def forward(self, x):
        return x

    @classmethod
    def count(cls, d_out, d_in):
        return 1


class WrongCount(BandedMatrix):
    family = "wrong_count"

    @classmethod
    def count(cls, d_out, d_in, width):
        return 2 * super().count(d_out, d_in, width)


class Duplicate(BandedMatrix):
    family = "circulant"


class Unnamed(BandedMatrix):
    family = ""


@pytest.mark.parametrize("cls,message", [
    (nn.Linear, r"expects a subclass of surm_core.StructuredMatrix, got <class 'torch.nn.modules.linear.Linear'>"),
    ("banded", r"expects a subclass of surm_core.StructuredMatrix, got 'banded'"),
    (Unnamed, r"Unnamed must set the class attribute family to a non-empty name, got ''"),
    (Duplicate, r"a family named 'circulant' is already registered \(CirculantMatrix\)"),
    (NoDense, r"NoDense does not define to_dense, candidates, smallest; a family needs forward, to_dense"),
    (WrongCount, r"family 'wrong_count' failed its check .*: count\(\) says 8 parameters, the module has 4"),
])
def test_bad_registrations_are_refused(cls, message):
    before = dict(FAMILIES)
    with pytest.raises(ValueError, match=message):
        register_family(cls)
    assert FAMILIES == before


def test_a_name_registers_once(banded):
    with pytest.raises(ValueError, match=r"a family named 'banded' is already registered \(BandedMatrix\)"):
        register_family(BandedMatrix)


def test_generic_code_names_no_family():
    # a family's knowledge lives in its own file: the generic modules never name one
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parent.parent
    files = [root / "surm_core" / "analysis.py", root / "surm_core" / "explain.py", *sorted((root / "visualize").glob("*.py"))]
    pattern = re.compile(r"circulant|toeplitz|kronecker|monarch|lowrank|ldr|Circulant|Toeplitz|Kronecker|Monarch|LowRank|LDR")
    found = [f"{path.relative_to(root)}:{i}: {line.strip()}" for path in files
             for i, line in enumerate(path.read_text().splitlines(), 1)
             if pattern.search(line.replace("svd_lowrank", ""))]  # torch.svd_lowrank is torch's, not a family
    assert len(files) >= 6 and not found, "\n".join(found)
