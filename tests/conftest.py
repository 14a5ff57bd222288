import os
import tempfile

import pytest
import torch

from surm_core import FAMILIES

# Gradio's cache (/tmp/gradio) is shared by every Gradio process on the machine, addressed by
# content, and a served app deletes its files at shutdown: another process's identical upload
# would go with them. Each test session gets a cache of its own.
os.environ.setdefault("GRADIO_TEMP_DIR", tempfile.mkdtemp(prefix="surm-tests-gradio-"))


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tiny models single-threaded: they gain nothing from threads, and when the
    other core is busy (a served app, a second process) OpenMP's spin-waiting makes them up to
    100× slower. The setting is restored for the next module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fit_layer(fam, hp, d_out, d_in):
    """A configuration may not have more parameters than the dense map (``max_params``): on tiny
    layers the explicit ranks are lowered, then the tiles enlarged (a Kronecker factor made a
    column), until it fits."""
    cls, hp = FAMILIES[fam], dict(hp)

    def too_big():
        return cls.count(d_out, d_in, **cls.resolve(d_out, d_in, **hp)) > cls.max_params(d_out, d_in)

    for name in ("r", "blk_r"):
        while hp.get(name, 1) > 1 and too_big():
            hp[name] -= 1
    while "block" in hp and too_big():
        hp["block"] += 1
    if "a_shape" in hp and too_big():
        hp["a_shape"] = (hp["a_shape"][0], 1)
    return hp
