import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tiny models single-threaded: they gain nothing from threads, and when the
    other core is busy (a served app, a second process) OpenMP's spin-waiting makes them up to
    100× slower. The setting is restored for the next module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
