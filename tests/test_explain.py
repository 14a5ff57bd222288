import pytest

from surm_core import FAMILIES
from surm_core.explain import _DESCRIPTIONS, describe


def test_every_family_is_explained_and_nothing_else():
    assert set(_DESCRIPTIONS) == set(FAMILIES)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_description_has_the_four_parts(family):
    text = describe(family)
    assert text.startswith("### ")
    for part in ("**Formula.**", "**Parameters.**", "**Fast algorithm.**", "**Displacement rank.**"):
        assert text.count(part) == 1, (family, part)


def test_claims_match_the_families():
    # the parameter counts stated in the text, checked on real modules
    assert "`n` per `n × n` tile" in describe("circulant")
    assert FAMILIES["circulant"].count(16, 16, block=16) == 16
    assert "`2n − 1` per" in describe("toeplitz")
    assert FAMILIES["toeplitz"].count(16, 16, block=16) == 31
    assert "`2 r n` per" in describe("ldr")
    assert FAMILIES["ldr"].count(16, 16, block=16, r=3) == 2 * 3 * 16
    assert "`r · (d_in + d_out)`" in describe("lowrank")
    assert FAMILIES["lowrank"].count(6, 10, r=2) == 2 * 16
    assert "147,456" in describe("dense")
    assert FAMILIES["dense"].count(384, 384) == 147_456


@pytest.mark.parametrize("bad", ["Circulant", "lora", "", None, ["circulant"]])
def test_unknown_family_lists_the_known_ones(bad):
    with pytest.raises(ValueError, match="known families: dense, lowrank, circulant"):
        describe(bad)
