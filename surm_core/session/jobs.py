"""Fine-tunes started from the app, each in its own process: the command line's engine
(``python -m surm_core.finetune``), which writes ``metrics.jsonl`` as it trains while the page
reads it. The page's explorers, in the server's process, cannot hold its steps up, and a crash or
an out-of-memory in training ends that process only. Stop is the command line's Ctrl-C (SIGINT):
the run ends after its current step and keeps what it reached.

>>> job = FinetuneJob(run_dir, config).start()          # doctest: +SKIP
>>> while not job.wait(1.0): print(job.status())        # doctest: +SKIP
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..finetune import FinetuneConfig, load_config, run_status
from .device import DEVICE, DeviceLine
from .finetune import (Limits, check_dataset, check_run_name, default_run_name, device_name, keep_dataset,
                       model_error)
from .processes import Jobs, ProcessJob, process_env
from .runs import new_run_dir, write_record

log = logging.getLogger(__name__)

#: The training process writes everything it prints here, in its run directory (never served).
LOG_FILE = "process.log"
#: Seconds a training process takes to start (Python, torch, transformers) before it loads the
#: model: about 5 s on an idle 2-core CPU; added to the engine's estimate, which starts later.
STARTUP_S = 5.0


def new_run(workspace, config: FinetuneConfig, name: str | None, limits: Limits) -> "FinetuneJob":
    """A job for ``config`` in a new run directory of ``workspace``, named ``name`` (or its default
    name), its dataset checked against ``limits`` and kept with the run; not started yet."""
    record = check_dataset(config, limits)
    run_dir = new_run_dir(workspace, check_run_name(name) if (name or "").strip() else default_run_name(config))
    try:
        keep_dataset(config, run_dir)
        write_record(run_dir, record)
        config.out_dir = "."  # the process runs in the run directory
        (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return FinetuneJob(run_dir, config)


def estimate(config: FinetuneConfig, line: DeviceLine = DEVICE) -> dict:
    """The predicted wall time of ``config`` on this device: the engine's ``estimate_time``, which
    takes a few measured steps, in a process of its own (as a run would; seconds for MiniLM on a
    CPU). Refused while the device is busy, since steps timed then say nothing about the run."""
    ticket = object()
    line.join(ticket)
    try:
        if line.position(ticket) != 0:
            raise ValueError("the device is busy with a fine-tune; estimate the time when it is free (the estimate "
                             "times a few steps on it)")
        with tempfile.TemporaryDirectory(prefix="surm-estimate-") as folder:
            fields = {**config.to_dict(), "out_dir": None}
            (Path(folder) / "config.json").write_text(json.dumps(fields), encoding="utf-8")
            done = subprocess.run([sys.executable, "-m", "surm_core.finetune", "--config", "config.json", "--estimate"],
                                  cwd=folder, env=process_env(), capture_output=True, text=True)
    finally:
        line.leave(ticket)
    if done.returncode != 0:
        errors = [x[len("error: "):] for x in done.stderr.splitlines() if x.startswith("error: ")]
        if errors:
            raise ValueError(model_error(errors[-1], config.model))
        log.error("time estimate failed (exit code %s):\n%s", done.returncode, done.stderr[-3000:])
        raise ValueError(f"the time estimate failed (exit code {done.returncode}; details in the server log)")
    return json.loads(done.stdout.strip().splitlines()[-1])


def estimate_line(e: dict) -> str:
    """An :func:`estimate` for people: the total, then where it goes."""
    return (f"Predicted wall time about {clock(e['total_s'] + STARTUP_S)}: starting {STARTUP_S:.0f} s, loading "
            f"{e['load_s']:.0f} s, {e['steps']:,} steps × {e['step_s']:.2f} s, {e['evals']} evaluation"
            f"{'s' if e['evals'] != 1 else ''} × {e['eval_each_s']:.1f} s (measured on {device_name()}).")


def resumed_run(run_dir) -> "FinetuneJob":
    """A job that continues the stopped or killed run in ``run_dir`` from its last checkpoint (the
    engine's ``--resume``); not started yet. ``ValueError`` (saying why) if it cannot resume."""
    run_dir = Path(run_dir)
    status = run_status(run_dir)
    if not status["resumable"]:
        raise ValueError(f"run {run_dir.name!r} cannot resume: {status['detail']}")
    return FinetuneJob(run_dir, load_config(run_dir / "config.json"), resume=True)


class FinetuneJob(ProcessJob):
    """One run's training process: it waits for the device in ``line``, then trains in ``run_dir``.

    Poll ``status()``, ``events()`` and ``progress()``; at the end ``summary`` (the engine's
    ``summary.json``) or ``error`` (a message for people) is set.
    """

    what = "training"
    log_file = LOG_FILE

    def __init__(self, run_dir, config: FinetuneConfig, resume: bool = False, line: DeviceLine = DEVICE):
        super().__init__(run_dir, line)
        self.config = config
        self.resume = resume
        self.summary: dict | None = None
        self._events: list[dict] = []
        self._read = (None, 0)  # the metrics file (its inode) and how many of its bytes are parsed
        # a resumed run's metrics file (inode) until the engine rewrites it
        self._old_file = (self.run_dir / "metrics.jsonl").stat().st_ino if resume else None

    @property
    def run_dir(self) -> Path:
        return self.cwd

    def command(self) -> list[str]:
        # the process runs in the run directory, where config.json names it "." (its out_dir)
        args = ["--resume", "."] if self.resume else ["--config", "config.json"]
        return [sys.executable, "-m", "surm_core.finetune", *args]

    def _finish(self) -> None:
        """Read the summary, or turn the process's end into a message; a run that never trained
        leaves no directory behind."""
        try:
            self.summary = json.loads((self.run_dir / "summary.json").read_text(encoding="utf-8"))
            return
        except (OSError, ValueError):
            pass
        if self.error is None:
            self.error = self._failure()
        if not self.resume and not (self.run_dir / "metrics.jsonl").exists():
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _failure(self) -> str:
        code = self.process.returncode
        lines = self.log_lines()
        reported = [line[len("error: "):] for line in lines if line.startswith("error: ")]
        if reported:
            return model_error(reported[-1], self.config.model)
        if self.stopping and code in (0, -signal.SIGINT):
            return "stopped before it started training"
        if code < 0:
            status = run_status(self.run_dir)
            kept = "Resume continues it from its last checkpoint" if status["resumable"] else status["detail"]
            return f"the training process was killed ({signal.Signals(-code).name}): {status['detail']}. {kept}."
        log.error("fine-tune %s failed (exit code %s); the end of %s:\n%s", self.run_dir, code, LOG_FILE,
                  "\n".join(lines[-20:]))
        return f"the training process failed (exit code {code}): {lines[-1] if lines else 'no output'}"

    def events(self) -> list[dict]:
        """The engine's events so far (every line of ``metrics.jsonl`` written completely)."""
        try:
            with open(self.run_dir / "metrics.jsonl", "rb") as f:
                inode, read = self._read
                if os.fstat(f.fileno()).st_ino != inode:  # a resume rewrote the file: read it anew
                    inode, read, self._events = os.fstat(f.fileno()).st_ino, 0, []
                f.seek(read)
                chunk = f.read()
        except OSError:
            return self._events
        complete = chunk[:chunk.rfind(b"\n") + 1]
        self._read = (inode, read + len(complete))
        self._events += [json.loads(line) for line in complete.splitlines() if line.strip()]
        return self._events

    def progress(self) -> float:
        """Fraction of the steps done, in [0, 1]."""
        events = self.events()
        return min(1.0, events[-1]["step"] / events[-1]["total_steps"]) if events else 0.0

    def status(self) -> str:
        """One line for people: where the job is."""
        if self.error is not None:
            return f"Failed: {self.error}"
        position = self.line.position(self)
        if self.process is None and position:
            ahead = "1 fine-tune" if position == 1 else f"{position} fine-tunes"
            return f"Queued: {ahead} ahead of this one (one at a time on {device_name()})."
        events = self.events()
        elapsed = time.monotonic() - self.started if self.started is not None else 0.0
        # a resumed run's old records stay on show until its engine rewrites the file
        if not events or (self.summary is None and self._read[0] == self._old_file):
            return f"Loading the model and the data… ({clock(elapsed)})"
        e = events[-1]
        text = f"Step {e['step']}/{e['total_steps']} on {e['device']}"
        causal = self.config.task == "causal-lm"
        if e.get("loss") is not None:
            text += f" · loss {e['loss']:.3f}" + ("" if causal else f" · batch accuracy {e['train_acc']:.2f}")
        if causal:
            evals = [x for x in events if x.get("eval_loss") is not None]
            if evals:
                text += f" · eval loss {evals[-1]['eval_loss']:.3f}, perplexity {evals[-1]['perplexity']:.3g}"
        else:
            evals = [x["eval_acc"] for x in events if x.get("eval_acc") is not None]
            if evals:
                text += f" · eval accuracy {evals[-1]:.3f}"
        if self.summary is not None:
            return f"Done ({self.summary['stopped_reason']}): {text} · {clock(self.summary['wall_time_s'])} in all"
        text += f" · {clock(elapsed)} elapsed"
        if self.stopping:
            return text + " · stopping after the current step…"
        if e["step"] and e.get("elapsed_s"):
            text += f", about {clock(e['elapsed_s'] / e['step'] * (e['total_steps'] - e['step']))} left"
        return text


def clock(seconds: float) -> str:
    """``75.3`` -> ``"1:15"``; ``3725`` -> ``"1:02:05"``."""
    minutes, s = divmod(int(round(seconds)), 60)
    h, m = divmod(minutes, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Finetunes(Jobs):
    """The fine-tunes this server started, at most one per owner (a browser session) at a time."""

    what = "fine-tune"
