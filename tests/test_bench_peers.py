"""benchmarks/bench_peers.py runs (tiny sizes) where the benchmark-only extra peft is installed."""
import sys

import pytest

from benchmarks import bench_peers

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line.startswith(("lowrank", "circulant", "Kronecker"))]


def test_bench_peers_times_each_pair_at_equal_parameter_counts(capsys, monkeypatch):
    pytest.importorskip("peft")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bench_peers.main(["--dims", "32", "--tokens", "16", "--reps", "1", "--step-reps", "0"])
    layers = rows(capsys.readouterr().out)
    # params: LoRA 2·8·32, C3A one 32-block, LoKr at 32 = (4·8): 4² + 8²; the script checks both sides agree
    assert [(r[0], r[-4]) for r in layers] == [("lowrank", "512"), ("circulant,", "32"), ("Kronecker", "80")]
    assert all(float(r[-1]) > 0 for r in layers)
    bench_peers.main(["--pairs", "kronecker", "--reps", "1", "--dims", "32", "--tokens", "16", "--step-reps", "1",
                      "--batch-size", "2", "--max-length", "8"])
    step = rows(capsys.readouterr().out)[-1]
    assert step[0] == "Kronecker" and float(step[-1]) > 0


def test_bench_peers_without_peft_says_how_to_install_it(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft raises ImportError
    with pytest.raises(SystemExit) as exit:
        bench_peers.main(["--step-reps", "0"])
    assert exit.value.code == 2
    assert "pip install -r requirements-bench.txt" in capsys.readouterr().err
