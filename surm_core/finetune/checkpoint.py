"""Checkpoints of a run, so that a killed or stopped run resumes to the same result, and what a
run directory holds: complete, stopped, failed, interrupted (resumable), running, or broken.

A checkpoint is ``checkpoint/step-NNNNNNNN.safetensors`` — the trainable tensors, the optimizer's
tensors and the random number generators' states — plus ``checkpoint/checkpoint.json`` — the
step, the optimizer's hyperparameters, the schedule's state and the engine's counters — and
never a pickle. The JSON file is written last and atomically (a temporary file, then
``os.replace``) and names its tensor file, so a run killed at any moment leaves the previous
checkpoint or the new one, whole.

>>> run_status("runs/circ")  # doctest: +SKIP
{'state': 'interrupted', 'resumable': True, 'steps_done': 37, 'resume_step': 30,
 'detail': 'interrupted after step 37; resumable from step 30'}
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "checkpoint.json"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
LOCK_ATTEMPTS = 10
#: The states :func:`run_status` reports.
STATES = ("complete", "stopped", "failed", "interrupted", "running", "broken")


def write_atomically(path: Path, write) -> None:
    """Call ``write(temporary_path)``, flush it to disk, then move it to ``path`` in one step."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8"))


def lock(run_dir: Path, attempts: int = LOCK_ATTEMPTS):
    """Hold an exclusive lock on ``run_dir`` (the returned file descriptor; close it to release)
    or raise ``ValueError`` if another process holds it. The kernel drops the lock when the
    process dies, even by ``kill -9``, so a lock held means a run is alive."""
    fd = os.open(run_dir, os.O_RDONLY)
    for _ in range(attempts):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                os.close(fd)
                raise
        # run_status takes the lock for an instant to test it: wait that out
        time.sleep(0.05)
    os.close(fd)
    raise ValueError(f"{run_dir} is in use by a running fine-tune")


def save_checkpoint(run_dir: Path, step: int, model, optimizer, schedule, rng: dict, state: dict) -> None:
    """Write the checkpoint of ``step`` (then remove older ones).

    ``rng``: name -> uint8 state tensor of each random number generator to restore;
    ``state``: the engine's JSON-ready counters.
    """
    folder = run_dir / CHECKPOINT_DIR
    folder.mkdir(exist_ok=True)
    tensors = {f"model/{n}": p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    tensors.update({f"rng/{name}": t.cpu() for name, t in rng.items()})
    optimizer_state = optimizer.state_dict()
    scalars = {}
    for index, values in optimizer_state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    name = f"step-{step:08d}.safetensors"
    write_atomically(folder / name, lambda tmp: save_file(tensors, str(tmp)))
    write_json(folder / CHECKPOINT_FILE, {
        "step": step,
        "tensors": name,
        "param_groups": optimizer_state["param_groups"],
        "optimizer_scalars": scalars,
        "schedule": schedule.state_dict(),
        "state": state,
    })
    for old in folder.glob("step-*.safetensors"):
        if old.name != name:
            old.unlink()


def read_checkpoint(run_dir: Path) -> dict | None:
    """The checkpoint's JSON part with its tensors (``"tensors"``: name -> tensor), ``None`` if
    the run has none; ``ValueError`` if it cannot be read."""
    path = run_dir / CHECKPOINT_DIR / CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        meta["tensors"] = load_file(str(path.parent / meta["tensors"]))
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as e:
        raise ValueError(f"the checkpoint in {run_dir} cannot be read ({type(e).__name__}: {e})") from None
    return meta


def restore(checkpoint: dict, model, optimizer, schedule) -> dict:
    """Load a :func:`read_checkpoint` into the model, optimizer and schedule built for the run;
    return its RNG states by name. ``ValueError`` if the checkpoint's tensors are not this model's."""
    tensors = checkpoint["tensors"]
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    saved = {k.removeprefix("model/"): t for k, t in tensors.items() if k.startswith("model/")}
    if sorted(saved) != sorted(trainable) or any(saved[n].shape != p.shape for n, p in trainable.items()):
        raise ValueError("the checkpoint's tensors do not match this run's trainable parameters")
    with torch.no_grad():
        for name, p in trainable.items():
            p.copy_(saved[name])
    state = {int(i): dict(v) for i, v in checkpoint["optimizer_scalars"].items()}
    for key, t in tensors.items():
        if key.startswith("optimizer/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = t
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in checkpoint["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    schedule.load_state_dict(checkpoint["schedule"])
    return {k.removeprefix("rng/"): t for k, t in tensors.items() if k.startswith("rng/")}


def remove_checkpoint(run_dir: Path) -> None:
    folder = run_dir / CHECKPOINT_DIR
    if folder.is_dir():
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()


def run_status(run_dir) -> dict:
    """What ``run_dir`` holds, from its files alone, without loading a model.

    Returns ``{"state", "resumable", "steps_done", "resume_step", "detail"}`` where ``state`` is

    * ``"complete"``: it ran all its steps; ``"failed"``: it ended on an error (``detail`` says
      which, e.g. "diverged at step 12: ..."); neither resumes;
    * ``"stopped"``: stopped by the user, resumable from where it stopped;
    * ``"interrupted"``: killed (no summary), resumable from its last checkpoint, or from the
      start if it had none yet (``resume_step`` says which);
    * ``"running"``: a process is running it now;
    * ``"broken"``: not a usable run directory (``detail`` says why).

    ``steps_done``: the last step recorded in ``metrics.jsonl`` (or the summary), ``None`` if unknown.
    """
    run_dir = Path(run_dir)

    def status(state, detail, resume_step=None, steps_done=None):
        return {"state": state, "resumable": resume_step is not None, "steps_done": steps_done,
                "resume_step": resume_step, "detail": detail}

    if not run_dir.is_dir():
        return status("broken", "no such run directory")
    try:
        os.close(lock(run_dir, attempts=1))
    except ValueError:
        return status("running", "running now", steps_done=last_step(run_dir))
    if not (run_dir / METRICS_FILE).is_file():
        return status("broken", "not a run directory (no metrics.jsonl)")
    try:
        checkpoint = read_checkpoint_step(run_dir)
    except ValueError as e:
        return status("broken", str(e), steps_done=last_step(run_dir))
    summary_path = run_dir / SUMMARY_FILE
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
            reason, steps = summary["stopped_reason"], summary["steps_done"]
        except (OSError, ValueError, KeyError, TypeError):
            return status("broken", "summary.json is unreadable or incomplete")
        if reason == "completed":
            return status("complete", "completed", steps_done=steps)
        if reason == "stopped":
            if checkpoint == steps:
                return status("stopped", f"stopped at step {steps}; resumable", checkpoint, steps)
            return status("stopped", f"stopped at step {steps}; its checkpoint is gone, so it cannot resume", steps_done=steps)
        return status("failed", reason, steps_done=steps)
    if not (run_dir / CONFIG_FILE).is_file():
        return status("broken", "interrupted, and without config.json it cannot resume", steps_done=last_step(run_dir))
    steps = last_step(run_dir)
    start = checkpoint or 0
    return status("interrupted", f"interrupted after step {steps or 0}; resumable from step {start}", start, steps)


def read_checkpoint_step(run_dir: Path) -> int | None:
    """The step of the run's checkpoint (its tensor file present), ``None`` if it has none."""
    path = run_dir / CHECKPOINT_DIR / CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        step, tensors = meta["step"], meta["tensors"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError("its checkpoint.json is unreadable") from None
    if not (path.parent / str(tensors)).is_file():
        raise ValueError(f"its checkpoint names {tensors}, which is missing")
    return step


def last_step(run_dir: Path) -> int | None:
    """The step of the last readable record of ``metrics.jsonl``."""
    step = None
    try:
        lines = (run_dir / METRICS_FILE).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in lines:
        try:
            step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill
    return step
