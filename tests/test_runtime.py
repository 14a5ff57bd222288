import ctypes
import ctypes.util
import platform

import pytest

from surm_core.runtime import reuse_large_buffers


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt settings are glibc's")
def test_reuse_large_buffers_takes_effect_on_glibc():
    assert reuse_large_buffers() is True
    # mallopt rejects an mmap threshold above glibc's maximum: the value we set is the largest allowed
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    assert libc.mallopt(-3, 64 * 1024 * 1024) == 0
