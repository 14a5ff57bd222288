"""Time one evaluation of MiniLM with a circulant adapter on the BBC News test split.

    python -m benchmarks.bench_eval                      # the 20-step trial's settings: batch 8, max length 128
    python -m benchmarks.bench_eval --naive              # also the old way: no_grad, batches of 8, unsorted
    python -m benchmarks.bench_eval --device cuda        # bfloat16 autocast, as fine-tuning runs there

The engine's evaluation (``surm_core.finetune.engine.evaluate``: inference mode, rows sorted by
length, batches of ``eval_batch_tokens`` padded tokens) against the plain loop it replaced; both
must give the same accuracy. Cells are the median of ``--reps`` timed evaluations after one
warm-up evaluation.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.bench_apply import device_from_args
from surm_core.finetune import FinetuneConfig
from surm_core.finetune.engine import eval_batch_tokens, evaluate, uses_bf16
from surm_core.finetune.prepare import prepare
from surm_core.finetune.task import task_for
from surm_core.runtime import reuse_large_buffers


def naive_evaluate(model, task, rows, batch_size, device, autocast) -> float:
    """The evaluation before: autograd off but not inference mode, training-size batches, file order."""
    model.eval()
    correct = count = 0
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            c, n = task.score(model, task.collate(rows[start:start + batch_size]).to(device), autocast).tolist()
            correct, count = correct + c, count + n
    return correct / count


def timed(fn, reps: int, device) -> tuple[float, float]:
    """(median seconds, result) over ``reps`` calls after a warm-up call."""
    result = fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=8, help="the training batch (the naive loop evaluates in batches of it)")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--eval-size", default="all", help="test rows, or 'all'")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--naive", action="store_true", help="also time the plain loop the engine's evaluation replaced")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args(argv)
    device, where = device_from_args(ap, args.device)
    reuse_large_buffers()

    config = FinetuneConfig(method="circulant", batch_size=args.batch_size, max_length=args.max_length,
                            eval_size=None if args.eval_size == "all" else int(args.eval_size), device=args.device)
    task = task_for(config)
    torch.manual_seed(0)
    model, _ = task.load_model()
    prepare(model, config, task.head(model))
    model.to(device)
    rows = task.rows("test", config.eval_size)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(config.precision, device))
    tokens = eval_batch_tokens(config)

    results = [(f"engine: inference, sorted, {tokens} tokens/batch", *timed(
        lambda: evaluate(model, task, rows, tokens, device, autocast)["eval_acc"], args.reps, device))]
    if args.naive:
        results.append((f"naive: no_grad, batches of {args.batch_size}", *timed(
            lambda: naive_evaluate(model, task, rows, args.batch_size, device, autocast), args.reps, device)))

    print(f"MiniLM + circulant adapter, evaluation of {len(rows)} BBC News test rows at max length "
          f"{args.max_length}, torch {torch.__version__}, {where}, "
          f"median of {args.reps}")
    print(f"{'evaluation':<42} {'seconds':>8} {'rows/s':>8} {'accuracy':>9}")
    for name, seconds, acc in results:
        print(f"{name:<42} {seconds:>8.2f} {len(rows) / seconds:>8.1f} {acc:>9.4f}")
    if len({acc for _, _, acc in results}) > 1:
        raise SystemExit("the evaluations disagree on the accuracy")


if __name__ == "__main__":
    main()
