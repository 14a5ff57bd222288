"""benchmarks/gpu_check.sh, which only a CUDA machine runs for real, is valid bash and its dry run
(DEVICE=cpu STEPS=2, a tiny model) goes through every part and prints the runs table."""
import os
import subprocess

import pytest

from test_finetune import make_tiny_model, write_topics_csv

SCRIPT = "benchmarks/gpu_check.sh"


def test_gpu_check_is_valid_bash():
    subprocess.run(["bash", "-n", SCRIPT], check=True)


@pytest.mark.skipif(not os.path.exists("/usr/bin/bash") and not os.path.exists("/bin/bash"), reason="needs bash")
def test_gpu_check_dry_run_on_the_cpu(tmp_path):
    env = {**os.environ, "DEVICE": "cpu", "STEPS": "2", "OUT": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1",
           "MODEL": make_tiny_model(tmp_path / "model"), "DATASET": write_topics_csv(tmp_path / "topics.csv")}
    done = subprocess.run(["bash", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    for part in ["== device", "== CUDA tests", "== apply", "== training step", "== 2-step runs", "== result"]:
        assert part in out
    assert "skipped" in out  # the CUDA tests, on a machine without CUDA
    assert "monarch-4x4" in out and "step ms" in out  # the two benchmarks' tables
    lines = out.splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("method") and "final acc" in line):]
    assert [row.split()[0] for row in table[1:4]] == ["lora-r8", "circulant", "monarch"]
    assert all(row.split()[2] == "2" for row in table[1:4])  # 2 steps each
    assert out.rstrip().endswith("all parts passed")
