"""Time surm_core's adapters against PEFT's, side by side at equal parameter counts.

    pip install -r requirements-bench.txt      # peft: a benchmark-only extra, never a runtime dependency
    python -m benchmarks.bench_peers           # one layer at d=768, N=4096; a MiniLM step, batch 32 × 128
    python -m benchmarks.bench_peers --dims 768 --tokens 4096 --reps 9 --step-reps 5

Three pairs: lowrank r=8 vs PEFT's LoRA r=8; circulant (one d × d tile) vs PEFT's C3A (one
d × d block); Kronecker vs PEFT's LoKr with full factors (``r`` large enough that neither factor
is split into low-rank parts), ours given LoKr's factor shapes. PEFT's side is built first and
ours must have exactly its number of trainable parameters (checked).

Both sides wrap the same frozen ``nn.Linear``, so a layer's time includes the base matmul (the
``base`` row gives it alone): the table is what a user's layer costs. The two sides of a pair are
timed alternately, in swapped order every repetition, so a slow period of the machine hits both;
each ratio is the median over repetitions of ours / PEFT's. The MiniLM step is
``bench_finetune``'s: forward, backward and AdamW on the packaged all-MiniLM-L6-v2 with
adapters on query/value and the classifier head trained (PEFT: ``task_type="SEQ_CLS"``).
"""
from __future__ import annotations

import argparse
import copy
import statistics

import torch
from torch import nn

from benchmarks.bench_apply import device_from_args, time_once
from surm_core import AdapterConfig, inject
from surm_core.runtime import reuse_large_buffers

PAIRS = {  # ours, PEFT's
    "lowrank": ("lowrank r=8", "LoRA r=8"),
    "circulant": ("circulant, 1 tile", "C3A, 1 block"),
    "kronecker": ("Kronecker", "LoKr, full factors"),
}


def peft_config(pair: str, d: int, targets: list[str], task_type: str | None = None):
    import peft

    if pair == "lowrank":
        return peft.LoraConfig(r=8, lora_alpha=8, target_modules=targets, task_type=task_type)
    if pair == "circulant":
        return peft.C3AConfig(block_size=d, target_modules=targets, task_type=task_type)
    # LoKr splits a factor into low-rank parts only when r < half its size: r = d never does.
    return peft.LoKrConfig(r=d, alpha=d, target_modules=targets, task_type=task_type)


def our_config(pair: str, theirs: nn.Module, targets: list[str], task_type: str | None = None) -> AdapterConfig:
    if pair == "lowrank":
        hparams = {"r": 8}
    elif pair == "circulant":
        d = next(m for m in theirs.modules() if hasattr(m, "c3a_kernel")).c3a_kernel["default"].shape[-1]
        hparams = {"block": d}
    else:
        w1 = next(m for m in theirs.modules() if hasattr(m, "lokr_w1")).lokr_w1["default"]
        hparams = {"a_shape": tuple(w1.shape)}
    return AdapterConfig(pair, targets, hparams=hparams, task_type=task_type)


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def adapted_pair(pair: str, base: nn.Module, d: int, targets: list[str], task_type: str | None = None):
    """(ours, PEFT's) on copies of ``base``, checked to train the same number of parameters."""
    from peft import get_peft_model

    theirs = get_peft_model(copy.deepcopy(base), peft_config(pair, d, targets, task_type))
    ours = inject(copy.deepcopy(base), our_config(pair, theirs, targets, task_type))
    if trainable(ours) != trainable(theirs):
        raise RuntimeError(f"{pair}: ours trains {trainable(ours)} parameters, PEFT's {trainable(theirs)}")
    return ours, theirs


def alternate(fns: dict, reps: int, device) -> dict[str, list[float]]:
    """Times of each function over ``reps`` rounds after a warm-up round, in swapped order each round."""
    times = {name: [] for name in fns}
    for rep in range(reps + 1):
        for name in (list(fns) if rep % 2 else list(fns)[::-1]):
            t = time_once(fns[name], device)
            if rep:
                times[name].append(t)
    return times


def row(pair: str, n: int, ours: list[float], theirs: list[float]) -> str:
    ratio = statistics.median(a / b for a, b in zip(ours, theirs))
    ours_name, peft_name = PAIRS[pair]
    return (f"{ours_name:<20} {peft_name:<20} {n:>10,} {statistics.median(ours) * 1e3:>9.2f} "
            f"{statistics.median(theirs) * 1e3:>9.2f} {ratio:>9.3f}")


HEADER = f"{'ours':<20} {'PEFT':<20} {'params':>10} {'ours ms':>9} {'PEFT ms':>9} {'ours/PEFT':>9}"


def bench_layers(d: int, n_tokens: int, reps: int, pairs: list[str], device) -> list[str]:
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(d, d)).to(device)
    x = torch.randn(n_tokens, d, device=device, requires_grad=True)
    grad_out = torch.randn(n_tokens, d, device=device)

    def fwd_bwd(m):
        def run():
            m.zero_grad(set_to_none=True)
            x.grad = None
            m(x).backward(grad_out)
        return run

    lines = []
    for pair in pairs:
        ours, theirs = adapted_pair(pair, base, d, ["0"])
        times = alternate({"ours": fwd_bwd(ours), "peft": fwd_bwd(theirs)}, reps, device)
        lines.append(row(pair, trainable(ours), times["ours"], times["peft"]))
    frozen = copy.deepcopy(base).requires_grad_(False)
    t = statistics.median(alternate({"base": fwd_bwd(frozen)}, reps, device)["base"])
    lines.append(f"{'base (frozen Linear)':<20} {'':<20} {0:>10,} {t * 1e3:>9.2f}")
    return lines


def bench_step(batch_size: int, max_length: int, reps: int, pairs: list[str], device) -> list[str]:
    from surm_core.finetune.data import load_dataset
    from surm_core.models import DEFAULT_MODEL, load_model

    data = load_dataset("bbc_news")
    base, tokenizer = load_model(DEFAULT_MODEL, num_labels=len(data.label_names))
    # padded to max_length so every step sees exactly batch × max_length tokens
    batch = tokenizer(data.texts[:batch_size], truncation=True, max_length=max_length, padding="max_length",
                      return_tensors="pt")
    batch["labels"] = torch.tensor(data.labels[:batch_size])
    batch = {k: v.to(device) for k, v in batch.items()}
    base.to(device)

    def step(model):
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)

        def run():
            opt.zero_grad(set_to_none=True)
            model(**batch).loss.backward()
            opt.step()
        return run

    lines = []
    for pair in pairs:
        ours, theirs = adapted_pair(pair, base, base.config.hidden_size, ["query", "value"], "SEQ_CLS")
        times = alternate({"ours": step(ours), "peft": step(theirs)}, reps, device)
        lines.append(row(pair, trainable(ours), times["ours"], times["peft"]))
        del ours, theirs
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dims", type=int, default=768)
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=9, help="repetitions of the layer timings")
    ap.add_argument("--step-reps", type=int, default=5, help="repetitions of the MiniLM step (0: skip it)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args(argv)
    for name in ("dims", "tokens", "reps", "batch_size", "max_length"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    try:
        import peft
    except ImportError:
        ap.exit(2, "bench_peers needs peft, a benchmark-only extra: pip install -r requirements-bench.txt\n")
    device, where = device_from_args(ap, args.device)
    allocator = "large buffers reused" if reuse_large_buffers() else "glibc defaults"
    print(f"surm_core vs PEFT {peft.__version__}, torch {torch.__version__}, {where}, allocator: {allocator}, "
          "float32, medians; ours/PEFT = median of the per-repetition ratios")
    print(f"\none layer, d={args.dims}, N={args.tokens} tokens, forward+backward, {args.reps} repetitions")
    print(HEADER)
    for line in bench_layers(args.dims, args.tokens, args.reps, args.pairs, device):
        print(line, flush=True)
    if args.step_reps:
        print(f"\nMiniLM training step, batch {args.batch_size} × {args.max_length} tokens, query/value "
              f"adapters + classifier head, {args.step_reps} repetitions")
        print(HEADER)
        for line in bench_step(args.batch_size, args.max_length, args.step_reps, args.pairs, device):
            print(line, flush=True)


if __name__ == "__main__":
    main()
