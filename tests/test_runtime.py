import platform

import pytest

from surm_core.runtime import reuse_large_buffers


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt settings are glibc's")
def test_reuse_large_buffers_takes_effect_on_glibc():
    assert reuse_large_buffers() is True
