"""How long a run will take, before it starts: measured on this device, not guessed.

A few real training steps (the run's model, method, batch size, max length and data) and one
evaluation batch give the time per step and per evaluated token; with the loading time they make
the run's wall time: ``load + steps · step + evaluations · eval``. Measurements are cached per
(model, method and its size, targets, batch size, max length, data, device, precision), so
changing only the steps or the evaluation settings costs nothing.

>>> estimate_time(FinetuneConfig(method="circulant", steps=200))["total_s"]  # doctest: +SKIP
412.3
"""
from __future__ import annotations

import json
import math
import time

import torch

from .config import FinetuneConfig
from .engine import batch_indices, build, eval_batch_tokens, eval_batches, evaluate, pick_device
from .prepare import file_stamp

#: Steps taken before timing (the first ones pay for allocations and lazy initialisation) ...
WARMUP_STEPS = 2
#: ... and timed.
TIMED_STEPS = 3
#: Measurements kept (the oldest goes first).
CACHE_SIZE = 8
_measured: dict = {}


def estimate_time(config: FinetuneConfig) -> dict:
    """The predicted wall time of ``run(config)`` on the device it would use, in seconds.

    Returns ``{"total_s", "load_s", "step_s", "steps", "train_s", "eval_s", "evals",
    "eval_each_s", "cached"}``: ``total_s = load_s + train_s + eval_s`` with
    ``train_s = steps · step_s`` and ``eval_s = evals · eval_each_s`` (``evals``: every
    ``eval_every`` steps and at the end). ``cached`` is True when the measurement was reused.
    The first call for a setting loads the model and data and takes ``WARMUP_STEPS +
    TIMED_STEPS`` steps (a few seconds for MiniLM on a CPU); it writes nothing. Raises
    ``ValueError`` as the run would for a bad setting.
    """
    device = pick_device(config.device)
    key = json.dumps([config.model, config.method, config.budget, config.hparams, config.target_modules,
                      config.batch_size, config.max_length, config.dataset, config.text_column, config.label_column,
                      file_stamp(config.dataset), str(device), config.precision], default=str)
    cached = key in _measured
    if not cached:
        if len(_measured) >= CACHE_SIZE:
            del _measured[next(iter(_measured))]
        _measured[key] = measure(config, device)
    m = _measured[key]
    steps = math.ceil(config.epochs * m["batches_per_epoch"]) if config.epochs is not None else config.steps
    evals = steps // config.eval_every + (steps % config.eval_every != 0)
    rows = m["test_rows"][:config.eval_size]
    tokens = sum(len(batch) * m["task"].length(batch[0]) for batch in eval_batches(rows, m["task"], eval_batch_tokens(config)))
    eval_each_s = tokens * m["eval_s_per_token"]
    return {
        "total_s": m["load_s"] + steps * m["step_s"] + evals * eval_each_s,
        "load_s": m["load_s"], "step_s": m["step_s"], "steps": steps, "train_s": steps * m["step_s"],
        "eval_s": evals * eval_each_s, "evals": evals, "eval_each_s": eval_each_s, "cached": cached,
    }


def measure(config: FinetuneConfig, device: torch.device) -> dict:
    """Load as a run does (timed), take a few steps (timed), evaluate one batch (timed)."""
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        built = build(config, device)
        load_s = time.perf_counter() - started
        model, task = built.model, built.task
        batches = batch_indices(len(built.train_rows), config.batch_size, config.seed, 0, 1)
        times = []
        for _ in range(WARMUP_STEPS + TIMED_STEPS):
            t0 = time.perf_counter()
            model.train()
            batch = task.collate([built.train_rows[i] for i in next(batches)]).to(device)
            loss, _ = task.loss(model, batch, built.autocast)
            loss.backward()
            built.optimizer.step()
            built.schedule.step()
            built.optimizer.zero_grad(set_to_none=True)
            synchronize(device)
            times.append(time.perf_counter() - t0)
        first = eval_batches(built.eval_rows, task, eval_batch_tokens(config))[0]
        evaluate(model, task, first, eval_batch_tokens(config), device, built.autocast)  # warm-up
        synchronize(device)
        t0 = time.perf_counter()
        evaluate(model, task, first, eval_batch_tokens(config), device, built.autocast)
        synchronize(device)
        eval_s = time.perf_counter() - t0
    return {
        "load_s": load_s,
        "step_s": sorted(times[WARMUP_STEPS:])[TIMED_STEPS // 2],  # the median
        "eval_s_per_token": eval_s / (len(first) * task.length(first[0])),
        # the whole test split, in order, so that any eval_size can be priced
        "test_rows": built.eval_rows if config.eval_size is None else task.rows("test"),
        "task": task,
        "batches_per_epoch": len(built.train_rows) // config.batch_size,
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)

