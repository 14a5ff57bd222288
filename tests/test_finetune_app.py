"""The Fine-tune tab's runs through the served app: a stopped run is evaluated and charted, a
killed training process is a clear message (the server keeps serving) and Resume continues it,
and a finished run can be tried (the ``predict`` endpoint) and loaded with the snippet shown.
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from test_app import finetune_args, served_app, shows, tiny_csv, tiny_model, wait_for

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return tiny_model(root / "model"), tiny_csv(root / "topics.csv")


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def url(runs_dir):
    with served_app(runs_dir) as url:
        yield url


@pytest.fixture
def client(url, tmp_path):
    return Client(url, verbose=False, download_files=str(tmp_path))


def training_pid(run_dir: Path) -> int:
    """The process training in ``run_dir`` (it runs there)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/cwd") == str(run_dir):
                return int(pid)
        except OSError:
            continue
    raise AssertionError(f"no process runs in {run_dir}")


def test_a_stopped_run_is_evaluated_and_is_a_row_and_a_pareto_point(client, tiny):
    running = client.submit(*finetune_args(tiny, steps=5000), eval_every=5000, run_name="stopped",
                            api_name="/finetune")
    wait_for(lambda: shows(running, "Step"), "the run to train")
    client.predict(api_name="/stop")
    summary, status, live, download, table, note, bars, front, picked = running.result(timeout=120)
    assert summary["stopped_reason"] == "stopped" and 0 < summary["steps_done"] < 5000
    assert summary["final_eval_acc"] is not None  # it evaluated what it reached
    assert [row[:3] for row in table["data"]] == [["stopped", "circulant", "stopped, resumable"]]
    points = json.loads(front["plot"])["data"][0]
    assert points["text"] == ["stopped"] and points["marker"]["symbol"] == ["circle-open"]
    assert json.loads(bars["plot"])["data"][0]["y"] == [summary["trainable_params"]]


def test_a_killed_training_process_is_a_clear_message_and_resume_continues_it(client, tiny, runs_dir):
    running = client.submit(*finetune_args(tiny, steps=5000), eval_every=10, run_name="killed",
                            api_name="/finetune")
    wait_for(lambda: shows(running, "eval accuracy"), "the first evaluation (and its checkpoint)")
    (run_dir,) = runs_dir.glob("*/killed")
    os.kill(training_pid(run_dir), signal.SIGKILL)
    with pytest.raises(AppError, match=r"the training process was killed \(SIGKILL\): interrupted after step \d+; "
                                       r"resumable from step \d+\. Resume continues it"):
        running.result(timeout=120)
    # the server keeps serving, and the run is listed as what it is
    assert client.predict("circulant", 8, 8, 8, 0, "Z1", "Z-1", api_name="/explore")[0]["num_params"] == 8
    table = client.predict("", None, api_name="/runs")[0]["data"]
    assert [row[:3] for row in table] == [["killed", "circulant", "interrupted, resumable"]]

    resumed = client.submit("killed", "", api_name="/resume")
    wait_for(lambda: shows(resumed, "Step"), "the resumed run to train")
    client.predict(api_name="/stop")
    summary = resumed.result(timeout=120)[0]
    assert summary["stopped_reason"] == "stopped" and summary["final_eval_acc"] is not None
    assert [e for e in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if e["event"] == "resume"]
