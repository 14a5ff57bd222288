"""The CLI under torchrun with 2 CPU processes (DDP over gloo) on a tiny BERT: both replicas end with
identical weights, equal to the saved adapter, and the run matches a single-process run."""
import json
import os
import socket
import subprocess
import sys

import pytest

from surm_core import load_adapter, load_model
from surm_core.finetune import run, weights_digest
from test_finetune import config_for, make_tiny_model, read_metrics, write_topics_csv

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

ARGS = ["--family", "lowrank", "--hparams", "r=2", "alpha=2", "--steps", "12", "--batch-size", "16",
        "--lr", "1e-2", "--eval-every", "6"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"model": make_tiny_model(root / "model"), "dataset": write_topics_csv(root / "topics.csv")}


def test_two_processes_end_with_identical_weights(tiny, tmp_path):
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}",
        "-m", "surm_core.finetune", "--model", tiny["model"], "--dataset", tiny["dataset"], *ARGS, "--out", str(out),
    ]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("completed: 12 steps") == 1  # only rank 0 prints

    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["stopped_reason"] == "completed"
    rank0, rank1 = summary["weights_sha256"]
    assert rank0 == rank1
    fresh, _ = load_model(tiny["model"], num_labels=4)
    load_adapter(fresh, out / "adapter")
    assert weights_digest(fresh) == rank0

    # Each process took half of every global batch, so (without dropout) the run is the
    # single-process run up to float rounding in the gradient average.
    single = run(config_for(tiny, hparams={"r": 2, "alpha": 2}, steps=12, eval_every=6, out_dir=str(tmp_path / "one")))
    ddp_records, one_records = read_metrics(out), read_metrics(tmp_path / "one")
    assert [r["step"] for r in ddp_records] == [r["step"] for r in one_records]
    assert [r["loss"] for r in ddp_records[:-1]] == pytest.approx([r["loss"] for r in one_records[:-1]], rel=1e-4)
    assert [r["eval_acc"] for r in ddp_records] == [r["eval_acc"] for r in one_records]
    assert summary["final_eval_acc"] == single["final_eval_acc"]
