"""The Fine-tune tab's runs through the served app: a stopped run is evaluated and charted, a
killed training process is a clear message (the server keeps serving) and Resume continues it,
and a finished run can be tried (the ``predict`` endpoint) and loaded with the snippet shown.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from surm_core import session
from test_app import client, finetune_args, runs_dir, shows, tiny, url, wait_for  # noqa: F401 (fixtures: one served app per module)

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("one_thread")


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
    summary, status, live, download, code, table, note, bars, front, picked = running.result(timeout=120)
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


def test_a_finished_run_can_be_tried_through_predict_and_loaded_with_its_snippet(client, url, tiny, tmp_path):
    summary = client.predict(*finetune_args(tiny), api_name="/finetune")[0]
    name = summary["run"]
    probabilities = client.predict(name, "goal match team score", api_name="/predict")
    assert set(probabilities) == {"business", "sports"}
    assert sum(probabilities.values()) == pytest.approx(1.0)
    with pytest.raises(AppError, match="type a text to classify"):
        client.predict(name, "  ", api_name="/predict")
    with pytest.raises(AppError, match=f"no run named '{name}' in your workspace"):
        Client(url, verbose=False).predict(name, "goal", api_name="/predict")

    # the snippet beside the download loads that zip onto the base model and classifies alike
    zip_path, code, _ = client.predict(name, api_name="/download")
    shutil.copy(zip_path, tmp_path / f"{name}.zip")
    printed = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                             check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    loaded = ast.literal_eval(printed.strip().splitlines()[-1])
    expected = client.predict(name, "Type a sentence to classify here.", api_name="/predict")
    assert loaded == pytest.approx(expected, abs=1e-5)

    # filtered, then deleted: gone from the table and from what can be tried
    assert [row[0] for row in client.predict("circulant completed", None, api_name="/runs")[0]["data"]] == [name]
    assert client.predict("lowrank", None, api_name="/runs")[0]["data"] == []
    assert client.predict(name, "", api_name="/delete")[0]["data"] == []
    with pytest.raises(AppError, match=f"no run named '{name}'"):
        client.predict(name, "goal", api_name="/predict")


def test_the_time_estimate_is_measured_before_start(client, tiny):
    model, data = tiny
    line = client.predict(model, handle_file(data), "", "", "circulant", 16, 200, 8, 1e-2, 0, 8, 16,
                          "attention-qv", "", 32, 0.1, 50, "all", api_name="/estimate")
    assert line.startswith("Predicted wall time about ") and "200 steps ×" in line and "4 evaluations" in line


def test_the_time_estimate_waits_for_no_one_it_is_refused_while_the_device_is_busy():
    line = session.DeviceLine()
    line.join("a fine-tune")
    with pytest.raises(ValueError, match="the device is busy with a fine-tune"):
        session.estimate(session.finetune_config("", None, "circulant", 64, 10, 8, 1e-3, 0), line)
    assert line.position("a fine-tune") == 0  # the estimate left the line


def test_the_readme_client_example_runs(url, tiny, capsys):
    (block,) = [b for b in (ROOT / "README.md").read_text().split("```python")[1:] if 'api_name="/finetune"' in b]
    code = block.split("```")[0]
    model, data = tiny
    # the tiny model and data instead of MiniLM on BBC News; everything else as printed
    for old, new in (('Client("http://127.0.0.1:7860/")', f"Client({url!r}, verbose=False)"),
                     ('"", None, "", "", "circulant", 384, 30, 16,',
                      f'{model!r}, handle_file({data!r}), "", "", "circulant", 16, 6, 8,')):
        assert code.count(old) == 1, old
        code = code.replace(old, new)
    exec(code, {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[-2].startswith("circulant-16-q,v-s0 ") and printed[-2].endswith(".zip")
    assert set(ast.literal_eval(printed[-1])) == {"business", "sports"}
