"""The fine-tuning loop: one short, reproducible run, watched live, stoppable, resumable, on CPU or
CUDA, in one process or many (``torchrun``).

>>> summary = run(FinetuneConfig(method="circulant", budget=4096, out_dir="runs/circ"))  # doctest: +SKIP
>>> summary["stopped_reason"], summary["final_eval_acc"]  # doctest: +SKIP
('completed', 0.95)
>>> summary = resume("runs/circ")  # a killed or stopped run continues where it was  # doctest: +SKIP

A run directory holds ``config.json`` (the config, written first), ``metrics.jsonl`` (one record
per step plus the evaluations, resumes and a final ``"done"`` record, flushed as they happen),
``checkpoint/`` while the run can still go on (see :mod:`.checkpoint`), ``summary.json``, and
the trained weights: the adapter as :func:`surm_core.save_adapter` writes it in ``adapter/``, or
for the ``"full"`` and ``"head-only"`` baselines the trainable tensors in
``trainable.safetensors``. What the data, the loss and the metric are is the task's business
(:mod:`.task`); this module does not look inside a batch.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from itertools import islice
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from transformers import get_linear_schedule_with_warmup

from ..adapters import save_adapter
from . import checkpoint as ckpt
from .config import BASELINES, FinetuneConfig, load_config
from .prepare import prepare
from .task import task_for

#: Step events reach ``on_event`` at most this often; evaluations and the end always do.
MAX_EVENTS_PER_S = 10
#: An evaluation batch holds up to this many times a training batch's tokens: without autograd
#: there are no activations to keep, and larger matrix products run faster per row.
EVAL_BATCH_FACTOR = 4
#: The run has diverged when the loss stays above this many times its first step's loss ...
DIVERGENCE_FACTOR = 10
#: ... for this many steps in a row.
DIVERGENCE_STEPS = 5


def run(config: FinetuneConfig, on_event=None, should_stop=None) -> dict:
    """Fine-tune as ``config`` says and return the summary (also written to ``summary.json``).

    ``on_event(event)`` receives dicts with ``event`` (``"step"``, ``"eval"``, ``"resume"`` or
    ``"done"``), ``step``, ``total_steps``, ``loss`` and ``train_acc`` (of that step's batch),
    ``eval_acc`` (``None`` unless evaluated at that step), ``trainable_params``,
    ``examples_per_s`` (training throughput so far), ``elapsed_s``, ``device``; the ``"done"``
    event adds ``reason`` and carries the final evaluation. Step events arrive at most
    ``MAX_EVENTS_PER_S`` times a second (``metrics.jsonl`` has them all).

    ``should_stop()`` is asked before every step; once true the run ends without taking another
    step, evaluates what it reached (on the same rows as every evaluation), saves its weights and
    a checkpoint, and returns with ``stopped_reason == "stopped"``; :func:`resume` continues it.
    A run also ends, before the step's update, on a non-finite loss ("non-finite loss at step N"),
    on a loss that stays above ``DIVERGENCE_FACTOR`` times its first step's for
    ``DIVERGENCE_STEPS`` steps ("diverged at step N: lower the learning rate (lr=…)"), and when
    CUDA runs out of memory; those runs keep no weights and no checkpoint, and their
    ``final_eval_acc`` is ``None``. Under ``torchrun`` every process trains on its share of each
    batch (DistributedDataParallel: gloo on CPU, NCCL on CUDA) and only rank 0 calls
    ``on_event`` and writes files.

    The summary records the time spent loading (``load_s``: model, data, tokenizing), in
    training steps (``train_s``), evaluating (``eval_s``), writing checkpoints
    (``checkpoint_s``) and in all (``wall_time_s``), summed over the sessions of a resumed run.
    """
    run_dir = Path(config.out_dir) if config.out_dir is not None else None
    if run_dir is not None and (run_dir / ckpt.METRICS_FILE).exists():
        raise ValueError(f"{run_dir} already holds a run; choose another output directory")
    return execute(config, run_dir, False, on_event, should_stop)


def resume(run_dir, on_event=None, should_stop=None) -> dict:
    """Continue the killed or stopped run in ``run_dir`` from its last checkpoint (or from its
    start, if it was killed before its first) and return its summary, as :func:`run` does.

    With the same device and number of processes the result is the one an uninterrupted run
    would have reached: on CPU, bit for bit the same weights (``weights_sha256``). The records
    after the checkpoint are dropped from ``metrics.jsonl`` (they are recomputed) and a
    ``"resume"`` record marks where the run went on. ``ValueError`` if the run cannot resume
    (:func:`surm_core.finetune.run_status` says why).
    """
    run_dir = Path(run_dir)
    status = ckpt.run_status(run_dir)
    if not status["resumable"]:
        raise ValueError(f"cannot resume {run_dir}: {status['detail']}")
    config = load_config(run_dir / ckpt.CONFIG_FILE, out_dir=str(run_dir))
    return execute(config, run_dir, True, on_event, should_stop)


def execute(config, run_dir, resuming, on_event, should_stop) -> dict:
    started = time.perf_counter()
    device = pick_device(config.device)
    own_group = start_distributed(device)
    lock = None
    try:
        if run_dir is not None and is_rank0():
            run_dir.mkdir(parents=True, exist_ok=True)
            lock = ckpt.lock(run_dir)
            if resuming:  # the run goes on: it is no longer stopped
                (run_dir / ckpt.SUMMARY_FILE).unlink(missing_ok=True)
            else:
                ckpt.write_json(run_dir / ckpt.CONFIG_FILE, config.to_dict())
        return train(config, device, run_dir, resuming, started, on_event, should_stop)
    finally:
        if lock is not None:
            os.close(lock)
        if own_group:
            dist.destroy_process_group()


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))


def start_distributed(device: torch.device) -> bool:
    """Join the process group ``torchrun`` describes in the environment; True if this call made it."""
    if int(os.environ.get("WORLD_SIZE", 1)) == 1 or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None)
    return True


def rank_and_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def is_rank0() -> bool:
    return rank_and_world()[0] == 0


@dataclasses.dataclass
class Progress:
    """Where a run is: what a checkpoint stores besides tensors, so a resumed run goes on counting."""

    step: int = 0
    eval_accs: dict = dataclasses.field(default_factory=dict)  # step -> accuracy, scheduled evaluations
    load_s: float = 0.0
    train_s: float = 0.0
    eval_s: float = 0.0
    checkpoint_s: float = 0.0
    elapsed_s: float = 0.0  # since the first step's start
    wall_s: float = 0.0  # of the sessions before this one
    first_loss: float | None = None  # the divergence guard's reference
    steps_over: int = 0  # consecutive steps above DIVERGENCE_FACTOR × first_loss
    resumed_at: list = dataclasses.field(default_factory=list)

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "eval_accs": {str(k): v for k, v in self.eval_accs.items()}}

    @classmethod
    def from_json(cls, d: dict) -> "Progress":
        return cls(**{**d, "eval_accs": {int(k): v for k, v in d["eval_accs"].items()}})

    def check_loss(self, step: int, loss: float, lr: float) -> str | None:
        """Why the run must end before applying ``step``'s update, or ``None``."""
        if not math.isfinite(loss):
            return f"non-finite loss at step {step}"
        if self.first_loss is None:
            self.first_loss = loss
        self.steps_over = self.steps_over + 1 if loss > DIVERGENCE_FACTOR * self.first_loss else 0
        if self.steps_over >= DIVERGENCE_STEPS:
            return (f"diverged at step {step}: lower the learning rate (lr={lr:g}); the loss was {loss:.4g}, "
                    f"above {DIVERGENCE_FACTOR}× the first step's {self.first_loss:.4g} for {DIVERGENCE_STEPS} steps")
        return None


def train(config, device, run_dir, resuming, started, on_event, should_stop) -> dict:
    rank, world = rank_and_world()
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} must be a multiple of the {world} processes")
    built = build(config, device)
    task, model, optimizer, schedule = built.task, built.model, built.optimizer, built.schedule
    train_rows, eval_rows, total_steps, autocast = built.train_rows, built.eval_rows, built.total_steps, built.autocast
    trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    head_params = sum(p.numel() for n in built.head for p in model.get_submodule(n).parameters())

    progress = Progress()
    saved = ckpt.read_checkpoint(run_dir) if resuming else None
    if saved is not None:
        progress = Progress.from_json(saved["state"])
        rng = ckpt.restore(saved, model, optimizer, schedule)
        set_rng_state(rng, rank, device)
    progress.load_s += time.perf_counter() - started
    if resuming:
        progress.resumed_at.append(progress.step)

    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    eval_tokens = eval_batch_tokens(config, world)
    base = {"total_steps": total_steps, "trainable_params": trainable_params, "device": describe(device)}

    def evaluate_timed() -> float:
        t0 = time.perf_counter()
        acc = evaluate(model, task, eval_rows, eval_tokens, device, autocast)
        progress.eval_s += time.perf_counter() - t0
        return acc

    def save_checkpoint() -> None:
        t0 = time.perf_counter()
        rng = all_ranks(rng_state(device))  # every process's generators: their dropout masks differ
        state = {**progress.to_json(), "wall_s": progress.wall_s + time.perf_counter() - started}
        if rank == 0 and run_dir is not None:
            tensors = {f"{name}.{r}": t for r, states in enumerate(rng) for name, t in states.items()}
            ckpt.save_checkpoint(run_dir, progress.step, model, optimizer, schedule, tensors, state)
        progress.checkpoint_s += time.perf_counter() - t0

    writer = run_dir if rank == 0 else None
    with EventLog(writer, on_event if rank == 0 else None, keep_until=progress.step if resuming else None) as log:
        loop_start = time.perf_counter() - progress.elapsed_s

        def emit(event: dict) -> None:
            progress.elapsed_s = time.perf_counter() - loop_start
            log.emit({**event, **base, "elapsed_s": progress.elapsed_s})

        def throughput():
            return progress.step * config.batch_size / progress.train_s if progress.train_s else None

        if resuming:
            emit({"event": "resume", "step": progress.step, "loss": None, "train_acc": None, "eval_acc": None,
                  "examples_per_s": throughput()})
        reason, checkpoint_step = "completed", progress.step if saved is not None else None
        batches = islice(batch_indices(len(train_rows), config.batch_size, config.seed, rank, world), progress.step, None)
        try:
            while progress.step < total_steps:
                if should_stop is not None and any_rank(should_stop(), device):
                    reason = "stopped"
                    break
                t0 = time.perf_counter()
                net.train()
                batch = task.collate([train_rows[i] for i in next(batches)]).to(device)
                loss, stats = task.loss(net, batch, autocast)
                # Loss and accuracy of the whole (global) batch; every process sees the same
                # numbers, so all of them stop together.
                loss_sum, correct, count = global_sum(stats).tolist()
                problem = progress.check_loss(progress.step + 1, loss_sum / count, config.lr)
                if problem is not None:
                    reason = problem
                    break
                loss.backward()
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                progress.step += 1
                progress.train_s += time.perf_counter() - t0
                event = {"event": "step", "step": progress.step, "loss": loss_sum / count, "train_acc": correct / count,
                         "eval_acc": None, "examples_per_s": throughput()}
                if progress.step % config.eval_every == 0 or progress.step == total_steps:
                    progress.eval_accs[progress.step] = evaluate_timed()
                    event.update(event="eval", eval_acc=progress.eval_accs[progress.step])
                emit(event)
                if event["event"] == "eval" and progress.step < total_steps:
                    save_checkpoint()
                    checkpoint_step = progress.step
        except torch.OutOfMemoryError:
            reason = f"CUDA out of memory at step {progress.step + 1}: lower the batch size or the max length"
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()

        final_acc = None
        if reason == "completed":
            final_acc = progress.eval_accs[total_steps]
        elif reason == "stopped" and progress.step > 0:
            final_acc = progress.eval_accs.get(progress.step)
            if final_acc is None:
                final_acc = evaluate_timed()
            if checkpoint_step != progress.step:
                save_checkpoint()
        accs = [*progress.eval_accs.values(), *([final_acc] if final_acc is not None else [])]
        summary = {
            "final_eval_acc": final_acc,
            "best_eval_acc": max(accs) if accs else None,
            "trainable_params": trainable_params,
            "adapter_params": trainable_params - head_params,
            "steps_done": progress.step,
            "examples_per_s": throughput(),
            "device": describe(device),
            "world_size": world,
            **task.summary(),
            "train_rows": len(train_rows),
            "eval_rows": len(eval_rows),
            "weights_sha256": all_ranks(weights_digest(model)),
            "config": config.to_dict(),
            "stopped_reason": reason,
            "run_dir": str(run_dir) if run_dir is not None else None,
            "resumed_at": progress.resumed_at,
        }
        # Weights that diverged or produced a non-finite loss are not worth keeping.
        if rank == 0 and run_dir is not None and reason in ("completed", "stopped"):
            save_weights(model, config.method, run_dir)
        emit({"event": "done", "reason": reason, "step": progress.step, "loss": None, "train_acc": None,
              "eval_acc": final_acc, "examples_per_s": throughput()})
        summary.update({
            "load_s": progress.load_s, "train_s": progress.train_s, "eval_s": progress.eval_s,
            "checkpoint_s": progress.checkpoint_s, "wall_time_s": progress.wall_s + time.perf_counter() - started,
        })
        if rank == 0 and run_dir is not None:
            ckpt.write_json(run_dir / ckpt.SUMMARY_FILE, summary)
            if reason != "stopped":  # nothing left to resume
                ckpt.remove_checkpoint(run_dir)
    return summary


@dataclasses.dataclass
class Built:
    """A run's pieces, ready to train: what :func:`build` returns."""

    task: object
    model: torch.nn.Module
    head: list
    train_rows: list
    eval_rows: list
    total_steps: int
    optimizer: torch.optim.Optimizer
    schedule: object
    autocast: torch.autocast


def build(config: FinetuneConfig, device: torch.device) -> Built:
    """Load the data and the model, make the method's tensors trainable, tokenize, and make the
    optimizer and its schedule; the seed is set first, so the same config builds the same run."""
    task = task_for(config)
    if config.batch_size > len(task.train_split):
        raise ValueError(f"batch_size {config.batch_size} is larger than the training split ({len(task.train_split)} rows)")
    torch.manual_seed(config.seed)
    model, _ = task.load_model()
    head = task.head(model)
    prepare(model, config, head)
    model.to(device)
    train_rows = task.rows("train")
    eval_rows = task.rows("test", config.eval_size)
    batches_per_epoch = len(train_rows) // config.batch_size
    total_steps = math.ceil(config.epochs * batches_per_epoch) if config.epochs is not None else config.steps
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    schedule = get_linear_schedule_with_warmup(optimizer, round(config.warmup_ratio * total_steps), total_steps)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(config.precision, device))
    return Built(task, model, head, train_rows, eval_rows, total_steps, optimizer, schedule, autocast)


def eval_batch_tokens(config: FinetuneConfig, world: int = 1) -> int:
    """Padded tokens per evaluation batch in each process: ``EVAL_BATCH_FACTOR`` training batches'."""
    return EVAL_BATCH_FACTOR * (config.batch_size // world) * config.max_length


def batch_indices(n: int, batch_size: int, seed: int, rank: int, world: int):
    """Endless row indices for this process, step after step.

    Each epoch is a fresh seeded permutation of the ``n`` rows cut into global batches of
    ``batch_size`` (an incomplete last batch is dropped); process ``rank`` takes its contiguous
    ``batch_size / world`` share, so the global batches do not depend on the number of processes.
    The order depends on the seed alone, so a resumed run skips the batches it has taken.
    """
    generator = torch.Generator().manual_seed(seed)
    share = batch_size // world
    while True:
        order = torch.randperm(n, generator=generator).tolist()
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start + rank * share: start + (rank + 1) * share]


def evaluate(model, task, rows: list[dict], batch_tokens: int, device, autocast) -> float:
    """The task's metric on ``rows``, each process scoring every ``world``-th row.

    Without autograd (``torch.inference_mode``), longest rows first in batches of up to
    ``batch_tokens`` padded tokens: sorted by length, a batch's rows are padded to about their
    own length. The result is the unsorted one up to float rounding in the logits.
    """
    rank, world = rank_and_world()
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64)
    with torch.inference_mode():
        for batch_rows in eval_batches(rows[rank::world], task, batch_tokens):
            totals += task.score(model, task.collate(batch_rows).to(device), autocast).cpu()
    return task.metric_value(global_sum(totals.clone().to(device)))


def eval_batches(rows: list[dict], task, batch_tokens: int) -> list[list[dict]]:
    """``rows`` longest first, cut into batches of at most ``batch_tokens`` padded tokens (or one row)."""
    rows = sorted(rows, key=task.length, reverse=True)
    batches, start = [], 0
    while start < len(rows):
        size = max(1, batch_tokens // task.length(rows[start]))
        batches.append(rows[start:start + size])
        start += size
    return batches


def global_sum(values: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(values)
    return values


def any_rank(flag: bool, device) -> bool:
    return bool(global_sum(torch.tensor([float(flag)], device=device)).item())


def all_ranks(value) -> list:
    """``[value of rank 0, value of rank 1, ...]`` (just ``[value]`` in a single process)."""
    if not dist.is_initialized():
        return [value]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def rng_state(device: torch.device) -> dict:
    """This process's random number generators (dropout draws from them), by name."""
    states = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_state(states: dict, rank: int, device: torch.device) -> None:
    if f"cpu.{rank}" not in states:
        raise ValueError("the checkpoint was written by fewer processes; resume with as many as the run had")
    torch.set_rng_state(states[f"cpu.{rank}"])
    if device.type == "cuda" and f"cuda.{rank}" in states:
        torch.cuda.set_rng_state(states[f"cuda.{rank}"], device)


def weights_digest(model) -> str:
    """SHA-256 of the trainable tensors (names and float32 values, in name order).

    Two models trained in lockstep (DDP replicas) have the same digest; so does a fresh model
    that loaded the saved adapter, which lets anyone check a run directory against a run.
    """
    digest = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            digest.update(name.encode())
            digest.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_weights(model, method: str, run_dir: Path) -> None:
    if method in BASELINES:
        tensors = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        ckpt.write_atomically(run_dir / "trainable.safetensors", lambda tmp: save_file(tensors, str(tmp)))
    else:
        save_adapter(model, run_dir / "adapter")


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether a run in ``precision`` on ``device`` computes in bfloat16 autocast."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{device.index} ({torch.cuda.get_device_name(device)})"
    return "cpu"


class EventLog:
    """Every event to ``metrics.jsonl`` (flushed at once, so a closed app loses nothing), and to
    ``on_event`` at most ``MAX_EVENTS_PER_S`` step events a second plus every other event.

    ``keep_until``: resuming from that step, keep the step, evaluation and resume records up to
    it and drop the rest (the steps after it are done again, the old end is no longer the end).
    """

    def __init__(self, run_dir: Path | None, on_event, keep_until: int | None = None):
        self.on_event = on_event
        self.file = None
        if run_dir is not None:
            path = run_dir / ckpt.METRICS_FILE
            if keep_until is not None:
                kept = [line for line in read_records(path)
                        if line["event"] in ("step", "eval", "resume") and line["step"] <= keep_until]
                ckpt.write_atomically(path, lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in kept)))
            self.file = open(path, "a" if keep_until is not None else "w", encoding="utf-8")
        self.last_sent = -math.inf

    def emit(self, event: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(event) + "\n")
            self.file.flush()
        now = time.monotonic()
        if self.on_event is not None and (event["event"] != "step" or now - self.last_sent >= 1 / MAX_EVENTS_PER_S):
            self.last_sent = now
            self.on_event(event)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.file is not None:
            self.file.close()


def read_records(path: Path) -> list[dict]:
    """The records of a ``metrics.jsonl``, without a last line cut short by a kill."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records
