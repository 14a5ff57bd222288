"""The fine-tuning loop: one short, reproducible run, watched live, stoppable, on CPU or CUDA, in one
process or many (``torchrun``).

>>> summary = run(FinetuneConfig(method="circulant", budget=4096, out_dir="runs/circ"))  # doctest: +SKIP
>>> summary["stopped_reason"], summary["final_eval_acc"]  # doctest: +SKIP
('completed', 0.95)

A run directory holds ``metrics.jsonl`` (one record per step plus the evaluations and a final
``"done"`` record, flushed as they happen), ``summary.json``, and the trained weights: the adapter
as :func:`surm_core.save_adapter` writes it in ``adapter/``, or for the ``"full"`` and
``"head-only"`` baselines the trainable tensors in ``trainable.safetensors``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import DataCollatorWithPadding, get_linear_schedule_with_warmup

from ..adapters import AdapterConfig, inject, save_adapter
from ..models import head_names, load_model
from .config import BASELINES, FinetuneConfig
from .data import load_dataset, split, tokenize

#: Step events reach ``on_event`` at most this often; evaluations and the end always do.
MAX_EVENTS_PER_S = 10


def run(config: FinetuneConfig, on_event=None, should_stop=None) -> dict:
    """Fine-tune as ``config`` says and return the summary (also written to ``summary.json``).

    ``on_event(event)`` receives dicts with ``event`` (``"step"``, ``"eval"`` or ``"done"``),
    ``step``, ``total_steps``, ``loss`` and ``train_acc`` (of that step's batch), ``eval_acc``
    (``None`` unless evaluated at that step), ``trainable_params``, ``examples_per_s`` (training
    throughput so far), ``elapsed_s``, ``device``; the ``"done"`` event adds ``reason``. Step
    events arrive at most ``MAX_EVENTS_PER_S`` times a second (``metrics.jsonl`` has them all).
    ``should_stop()`` is asked before every step; once true the run ends without taking another
    step and returns what it reached, with ``stopped_reason == "stopped"``. A non-finite loss
    ends the run before its update is applied ("non-finite loss at step N"), and so does CUDA
    running out of memory. Under ``torchrun`` every process trains on its share of each batch
    (DistributedDataParallel: gloo on CPU, NCCL on CUDA) and only rank 0 calls ``on_event``
    and writes files.
    """
    started = time.perf_counter()
    run_dir = Path(config.out_dir) if config.out_dir is not None else None
    if run_dir is not None and (run_dir / "metrics.jsonl").exists():
        raise ValueError(f"{run_dir} already holds a run; choose another output directory")
    device = pick_device(config.device)
    own_group = start_distributed(device)
    try:
        return train(config, device, run_dir, started, on_event, should_stop)
    finally:
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


def train(config, device, run_dir, started, on_event, should_stop) -> dict:
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} must be a multiple of the {world} processes")
    data = load_dataset(config.dataset, config.text_column, config.label_column)
    train_split, test_split = split(data)
    if config.batch_size > len(train_split):
        raise ValueError(f"batch_size {config.batch_size} is larger than the training split ({len(train_split)} rows)")
    eval_split = test_split.subset(range(min(config.eval_size or len(test_split), len(test_split))))

    torch.manual_seed(config.seed)
    model, tokenizer = load_model(config.model, num_labels=len(data.label_names))
    head = prepare(model, config)
    model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    trainable_params = sum(p.numel() for p in trainable)
    head_params = sum(p.numel() for n in head for p in model.get_submodule(n).parameters())

    train_rows = tokenize(train_split, tokenizer, config.max_length)
    eval_rows = tokenize(eval_split, tokenizer, config.max_length)
    collate = DataCollatorWithPadding(tokenizer)
    batches_per_epoch = len(train_rows) // config.batch_size
    total_steps = math.ceil(config.epochs * batches_per_epoch) if config.epochs is not None else config.steps

    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    schedule = get_linear_schedule_with_warmup(optimizer, round(config.warmup_ratio * total_steps), total_steps)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(config.precision, device))
    base = {"total_steps": total_steps, "trainable_params": trainable_params, "device": describe(device)}

    with EventLog(run_dir if rank == 0 else None, on_event if rank == 0 else None) as log:
        # ``step`` counts the updates applied; a step that ends the run is not one of them.
        step, train_time, eval_accs, reason = 0, 0.0, {}, "completed"
        loop_start = time.perf_counter()
        batches = batch_indices(len(train_rows), config.batch_size, config.seed, rank, world)
        try:
            while step < total_steps:
                if should_stop is not None and any_rank(should_stop(), device):
                    reason = "stopped"
                    break
                t0 = time.perf_counter()
                net.train()
                batch = collate([train_rows[i] for i in next(batches)]).to(device)
                labels = batch.pop("labels")
                with autocast:
                    logits = net(**batch).logits
                loss = F.cross_entropy(logits.float(), labels)
                # Loss and accuracy of the whole (global) batch; every process sees the same
                # numbers, so all of them stop together on a non-finite loss.
                loss_sum, correct, count = global_sum(torch.stack([
                    loss.detach() * len(labels),
                    (logits.argmax(-1) == labels).sum().float(),
                    torch.tensor(float(len(labels)), device=device),
                ])).tolist()
                if not math.isfinite(loss_sum):
                    reason = f"non-finite loss at step {step + 1}"
                    break
                loss.backward()
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                train_time += time.perf_counter() - t0
                event = {
                    "event": "step", "step": step, "loss": loss_sum / count, "train_acc": correct / count,
                    "eval_acc": None, "examples_per_s": step * config.batch_size / train_time,
                }
                if step % config.eval_every == 0 or step == total_steps:
                    eval_accs[step] = evaluate(model, eval_rows, collate, config.batch_size, device, autocast)
                    event.update(event="eval", eval_acc=eval_accs[step])
                log.emit({**event, **base, "elapsed_s": time.perf_counter() - loop_start})
        except torch.OutOfMemoryError:
            reason = f"CUDA out of memory at step {step + 1}: lower the batch size or the max length"
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()

        summary = {
            "final_eval_acc": eval_accs[max(eval_accs)] if eval_accs else None,
            "best_eval_acc": max(eval_accs.values()) if eval_accs else None,
            "trainable_params": trainable_params,
            "adapter_params": trainable_params - head_params,
            "steps_done": step,
            "examples_per_s": step * config.batch_size / train_time if train_time else None,
            "device": describe(device),
            "world_size": world,
            "labels": data.label_names,
            "train_rows": len(train_rows),
            "eval_rows": len(eval_rows),
            "weights_sha256": all_ranks(weights_digest(model)),
            "config": config.to_dict(),
            "stopped_reason": reason,
            "run_dir": str(run_dir) if run_dir is not None else None,
        }
        # Weights that produced a non-finite loss are not worth keeping.
        if rank == 0 and run_dir is not None and reason in ("completed", "stopped"):
            save_weights(model, config.method, run_dir)
        summary["wall_time_s"] = time.perf_counter() - started
        log.emit({
            "event": "done", "reason": reason, "step": step, "loss": None, "train_acc": None,
            "eval_acc": summary["final_eval_acc"], "examples_per_s": summary["examples_per_s"],
            **base, "elapsed_s": time.perf_counter() - loop_start,
        })
    if rank == 0 and run_dir is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def prepare(model, config: FinetuneConfig) -> list[str]:
    """Make the tensors ``config.method`` trains trainable (and only those); return the head's names.

    The head is the model's newly initialised classifier, which every method must train.
    """
    head = head_names(model)
    if not head:
        raise ValueError(f"found no classification head in {type(model).__name__}")
    if config.method == "full":
        model.requires_grad_(True)
    elif config.method == "head-only":
        model.requires_grad_(False)
        for name in head:
            model.get_submodule(name).requires_grad_(True)
    else:
        inject(model, AdapterConfig(
            config.method, target_modules=config.target_modules, budget=config.budget,
            hparams=config.hparams, modules_to_save=head,
        ))
    return head


def batch_indices(n: int, batch_size: int, seed: int, rank: int, world: int):
    """Endless row indices for this process, step after step.

    Each epoch is a fresh seeded permutation of the ``n`` rows cut into global batches of
    ``batch_size`` (an incomplete last batch is dropped); process ``rank`` takes its contiguous
    ``batch_size / world`` share, so the global batches do not depend on the number of processes.
    """
    generator = torch.Generator().manual_seed(seed)
    share = batch_size // world
    while True:
        order = torch.randperm(n, generator=generator).tolist()
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start + rank * share: start + (rank + 1) * share]


@torch.no_grad()
def evaluate(model, rows: list[dict], collate, batch_size: int, device, autocast) -> float:
    """Accuracy on ``rows``, each process scoring every ``world``-th row."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    model.eval()
    mine, correct = rows[rank::world], 0
    for start in range(0, len(mine), batch_size):
        batch = collate(mine[start:start + batch_size]).to(device)
        labels = batch.pop("labels")
        with autocast:
            logits = model(**batch).logits
        correct += (logits.argmax(-1) == labels).sum().item()
    correct, count = global_sum(torch.tensor([correct, len(mine)], dtype=torch.float64, device=device)).tolist()
    return correct / count


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
        save_file(tensors, run_dir / "trainable.safetensors")
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
    ``on_event`` at most ``MAX_EVENTS_PER_S`` step events a second plus every other event."""

    def __init__(self, run_dir: Path | None, on_event):
        self.on_event = on_event
        self.file = None
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            self.file = open(run_dir / "metrics.jsonl", "w", encoding="utf-8")
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
