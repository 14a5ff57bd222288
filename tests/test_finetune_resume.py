"""Stopping, checkpoints and resuming on a tiny BERT *with dropout* (so the random generators'
states matter): a stopped, interrupted or SIGKILLed run resumes to bit-for-bit the weights of an
uninterrupted run, its metrics read as one run, and run_status says what each directory holds."""
import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from surm_core import load_adapter, load_model
from surm_core.finetune import resume, run, run_status, weights_digest
from surm_core.finetune import checkpoint as ckpt
from surm_core.finetune.__main__ import main
from test_finetune import config_for, make_tiny_model, read_metrics, without_timing, write_topics_csv

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

SETTINGS = dict(steps=12, eval_every=5, seed=3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"model": make_tiny_model(root / "model", dropout=0.1), "dataset": write_topics_csv(root / "topics.csv")}


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    """The uninterrupted run: its summary and metrics."""
    out = tmp_path_factory.mktemp("reference") / "run"
    summary = run(config_for(tiny, **SETTINGS, out_dir=str(out)))
    return summary, read_metrics(out)


def stop_after(steps):
    """A should_stop that stops the run after ``steps`` steps (it is asked before each step)."""
    asked = []

    def should_stop():
        asked.append(True)
        return len(asked) > steps
    return should_stop


def steps_of(records):
    return [(r["event"], r["step"]) for r in records]


def comparable(records):
    """Records without timing and without resume markers: what an uninterrupted run has too."""
    return [r for r in without_timing(records) if r["event"] != "resume"]


def test_a_stopped_run_evaluates_what_it_reached_and_resumes_to_the_same_weights(tiny, reference, tmp_path):
    out = tmp_path / "run"
    stopped = run(config_for(tiny, **SETTINGS, out_dir=str(out)), should_stop=stop_after(7))
    assert stopped["stopped_reason"] == "stopped" and stopped["steps_done"] == 7
    # step 7 is no scheduled evaluation: the stop evaluated it, on the same rows as every evaluation
    records = read_metrics(out)
    assert steps_of(records) == [("step", 1), ("step", 2), ("step", 3), ("step", 4), ("eval", 5), ("step", 6),
                                 ("step", 7), ("done", 7)]
    assert stopped["final_eval_acc"] is not None and records[-1]["eval_acc"] == stopped["final_eval_acc"]
    assert stopped["best_eval_acc"] == max(stopped["final_eval_acc"], records[4]["eval_acc"])
    assert stopped["eval_rows"] == reference[0]["eval_rows"]
    fresh, _ = load_model(tiny["model"], num_labels=4)
    load_adapter(fresh, out / "adapter")
    assert weights_digest(fresh) == stopped["weights_sha256"][0]  # its weights are kept
    assert run_status(out) == {"state": "stopped", "resumable": True, "steps_done": 7, "resume_step": 7,
                               "detail": "stopped at step 7; resumable"}

    events = []
    resumed = resume(out, on_event=events.append)
    assert resumed["stopped_reason"] == "completed" and resumed["steps_done"] == 12
    assert resumed["weights_sha256"] == reference[0]["weights_sha256"]
    assert resumed["final_eval_acc"] == reference[0]["final_eval_acc"] and resumed["resumed_at"] == [7]
    assert events[0]["event"] == "resume" and events[0]["step"] == 7
    records = read_metrics(out)
    assert comparable(records) == comparable(reference[1])  # one run's records, each step once
    assert [r["step"] for r in records if r["event"] == "resume"] == [7]
    assert run_status(out)["state"] == "complete" and not (out / "checkpoint").exists()
    fresh, _ = load_model(tiny["model"], num_labels=4)
    load_adapter(fresh, out / "adapter")
    assert weights_digest(fresh) == reference[0]["weights_sha256"][0]


def test_stopping_at_an_evaluation_reuses_it(tiny, reference, tmp_path):
    out = tmp_path / "run"
    stopped = run(config_for(tiny, **SETTINGS, out_dir=str(out)), should_stop=stop_after(5))
    assert stopped["final_eval_acc"] == reference[1][4]["eval_acc"]
    assert resume(out)["weights_sha256"] == reference[0]["weights_sha256"]


def test_an_interrupt_before_the_first_checkpoint_resumes_from_the_start(tiny, reference, tmp_path):
    out = tmp_path / "run"
    stop = stop_after(3)

    def interrupt():  # a second Ctrl-C: the run is left without summary or checkpoint
        if stop():
            raise KeyboardInterrupt
        return False

    with pytest.raises(KeyboardInterrupt):
        run(config_for(tiny, **SETTINGS, out_dir=str(out)), should_stop=interrupt)
    assert run_status(out) == {"state": "interrupted", "resumable": True, "steps_done": 3, "resume_step": 0,
                               "detail": "interrupted after step 3; resumable from step 0"}
    resumed = resume(out)
    assert resumed["weights_sha256"] == reference[0]["weights_sha256"]
    assert comparable(read_metrics(out)) == comparable(reference[1])


# A CLI run that hangs after writing step 8's record, i.e. after its first checkpoint (step 5) and
# three more steps, so that it is killed at a known point.
HANGS_AT_STEP_8 = """
import sys, time
from surm_core.finetune import engine
from surm_core.finetune.__main__ import main
emit = engine.EventLog.emit
def emit_then_hang(self, event):
    emit(self, event)
    if event["step"] == 8:
        print("hanging", flush=True)
        time.sleep(600)
engine.EventLog.emit = emit_then_hang
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_cli_run_resumes_to_the_weights_of_an_uninterrupted_run(tiny, reference, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--model", tiny["model"], "--dataset", tiny["dataset"], "--family", "lowrank", "--hparams", "r=2", "alpha=2",
            "--batch-size", "16", "--lr", "1e-2", "--steps", "12", "--eval-every", "5", "--seed", "3", "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    child = subprocess.Popen([sys.executable, "-c", HANGS_AT_STEP_8, *args], stdout=subprocess.PIPE, text=True, env=env)
    try:
        lines = iter(child.stdout.readline, "")  # until the child hangs (or ends, failing the test)
        assert "hanging\n" in (line for line in lines if line == "hanging\n" or line.startswith("step"))
        assert run_status(out)["state"] == "running"
    finally:
        child.kill()  # SIGKILL: no handler runs
        child.wait(60)
    assert child.returncode == -9
    assert (out / "checkpoint" / "checkpoint.json").is_file() and not (out / "summary.json").exists()
    assert run_status(out) == {"state": "interrupted", "resumable": True, "steps_done": 8, "resume_step": 5,
                               "detail": "interrupted after step 8; resumable from step 5"}

    assert main(["--resume", str(out)]) == 0
    assert f"completed: 12 steps" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["weights_sha256"] == reference[0]["weights_sha256"]
    assert summary["resumed_at"] == [5] and summary["config"]["out_dir"] == str(out)
    records = read_metrics(out)
    assert [r["step"] for r in records if r["event"] == "resume"] == [5]
    assert comparable(records) == comparable(reference[1])  # steps 6-8 were done again, and are there once


def test_checkpoints_are_safetensors_and_json(tiny, tmp_path):
    out = tmp_path / "run"
    run(config_for(tiny, **SETTINGS, method="head-only", hparams=None, out_dir=str(out)), should_stop=stop_after(6))
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == ["checkpoint.json", "step-00000006.safetensors"]
    meta = json.loads((out / "checkpoint" / "checkpoint.json").read_text())
    assert meta["step"] == 6 and meta["state"]["step"] == 6 and meta["state"]["eval_accs"].keys() == {"5"}
    tensors = load_file(out / "checkpoint" / "step-00000006.safetensors")
    assert sorted(tensors) == ["model/classifier.bias", "model/classifier.weight", "optimizer/0/exp_avg",
                               "optimizer/0/exp_avg_sq", "optimizer/0/step", "optimizer/1/exp_avg",
                               "optimizer/1/exp_avg_sq", "optimizer/1/step", "rng/cpu.0"]
    assert tensors["optimizer/0/step"].item() == 6


def test_run_status_of_every_kind_of_directory(tiny, tmp_path):
    assert run_status(tmp_path / "none")["state"] == "broken"
    (tmp_path / "empty").mkdir()
    assert run_status(tmp_path / "empty") == {"state": "broken", "resumable": False, "steps_done": None,
                                              "resume_step": None, "detail": "not a run directory (no metrics.jsonl)"}
    complete = tmp_path / "complete"
    run(config_for(tiny, steps=2, out_dir=str(complete)))
    assert run_status(complete) == {"state": "complete", "resumable": False, "steps_done": 2, "resume_step": None,
                                    "detail": "completed"}
    with pytest.raises(ValueError, match=r"cannot resume .*complete: completed"):
        resume(complete)

    failed = tmp_path / "failed"
    summary = run(config_for(tiny, lr=1e30, out_dir=str(failed)))
    assert run_status(failed)["state"] == "failed" and run_status(failed)["detail"] == summary["stopped_reason"]

    # a run directory in use: its lock is held
    held = ckpt.lock(complete)
    try:
        assert run_status(complete)["state"] == "running"
        with pytest.raises(ValueError, match="is in use by a running fine-tune"):
            ckpt.lock(complete, attempts=1)
    finally:
        os.close(held)

    (complete / "summary.json").write_text('{"stopped_reason": "completed"}')  # valid JSON, keys missing
    assert run_status(complete)["detail"] == "summary.json is unreadable or incomplete"

    broken = tmp_path / "broken"
    run(config_for(tiny, **SETTINGS, out_dir=str(broken)), should_stop=stop_after(6))
    (broken / "checkpoint" / "step-00000006.safetensors").unlink()
    assert run_status(broken)["state"] == "broken"
    assert run_status(broken)["detail"] == "its checkpoint names step-00000006.safetensors, which is missing"
    with pytest.raises(ValueError, match="cannot resume"):
        resume(broken)


def test_cli_resume_takes_no_other_options(tmp_path, capsys):
    assert main(["--resume", str(tmp_path), "--steps", "3"]) == 2
    assert "error: --resume continues a run with its own config.json; drop steps" in capsys.readouterr().err
    assert main(["--resume", str(tmp_path / "nothing")]) == 2
    assert "error: cannot resume" in capsys.readouterr().err
