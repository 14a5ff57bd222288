"""Time every family's apply (forward, and forward+backward) against dense and LoRA r=8.

    python -m benchmarks.bench_apply                      # d ∈ {384, 768, 1024, 4096}, N ∈ {512, 4096}
    python -m benchmarks.bench_apply --dims 768 --tokens 4096 --reps 20
    python -m benchmarks.bench_apply --device cuda --dtype bfloat16

Families are timed in turns within each repetition (dense, LoRA, circulant, ..., then again), so
a slow period of the machine hits all of them alike; each cell is the median over repetitions.
Configurations: MoRe's Monarch default (nblocks=4, blk_r=4), LoRA r=8, ldr r=2, Kronecker at
its balanced default (at d=768 that is what ``from_budget`` picks for 1,600 parameters), the
FFT families as one tile. The table prints times in ms and ratios to dense and to LoRA r=8.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from surm_core import make
from surm_core.finetune.engine import pick_device
from surm_core.runtime import reuse_large_buffers

CONFIGS = {
    "dense": ("dense", {}),
    "lora-r8": ("lowrank", {"r": 8}),
    "circulant": ("circulant", {}),
    "toeplitz": ("toeplitz", {}),
    "symmetric_toeplitz": ("symmetric_toeplitz", {}),
    "kronecker": ("kronecker", {}),
    "ldr-r2": ("ldr", {"r": 2}),
    "monarch-4x4": ("monarch", {"nblocks": 4, "blk_r": 4}),
}


def time_once(fn, device: torch.device) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None  # CUDA runs asynchronously
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def device_from_args(ap: argparse.ArgumentParser, name: str) -> tuple[torch.device, str]:
    """The device ``--device`` names (a clear usage error when it is CUDA and there is none) and
    how the table's header names it."""
    try:
        device = pick_device(name)
    except ValueError as e:
        ap.error(str(e))
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    return device, label


def bench(d: int, n_tokens: int, reps: int, names: list[str], device: torch.device, dtype: torch.dtype):
    torch.manual_seed(0)
    x = torch.randn(n_tokens, d, device=device, dtype=dtype, requires_grad=True)
    grad_out = torch.randn(n_tokens, d, device=device, dtype=dtype)
    mods = {name: make(CONFIGS[name][0], d, d, init="random", seed=0, **CONFIGS[name][1]).to(device, dtype)
            for name in names}

    def fwd(m):
        with torch.no_grad():
            m(x)

    def fwd_bwd(m):
        m.zero_grad(set_to_none=True)
        x.grad = None
        m(x).backward(grad_out)

    times = {name: {"fwd": [], "fwd+bwd": []} for name in names}
    for rep in range(reps + 1):  # the first round warms up caches, FFT plans and the allocator
        for name, m in mods.items():
            tf, tb = time_once(lambda: fwd(m), device), time_once(lambda: fwd_bwd(m), device)
            if rep:
                times[name]["fwd"].append(tf)
                times[name]["fwd+bwd"].append(tb)
    med = {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}
    return {name: (mods[name].num_params, med[name]) for name in names}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dims", type=int, nargs="+", default=[384, 768, 1024, 4096])
    ap.add_argument("--tokens", type=int, nargs="+", default=[512, 4096])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--families", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="auto: CUDA when available")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                    help="of inputs and parameters (the FFT families compute in float32 either way)")
    ap.add_argument("--glibc-defaults", action="store_true",
                    help="keep glibc's allocator thresholds (large buffers page-fault on every step)")
    args = ap.parse_args(argv)
    names = list(dict.fromkeys(["dense", "lora-r8", *args.families]))
    device, where = device_from_args(ap, args.device)
    dtype = getattr(torch, args.dtype)

    allocator = "glibc defaults"
    if not args.glibc_defaults and reuse_large_buffers():
        allocator = "large buffers reused (surm_core.runtime.reuse_large_buffers)"
    print(f"torch {torch.__version__}, {where}, {args.dtype}, allocator: {allocator}, "
          f"median of {args.reps} alternating repetitions")
    header = f"{'d':>5} {'N':>5} {'family':<20} {'params':>9} {'fwd ms':>9} {'/dense':>7} {'/LoRA':>7} " \
             f"{'f+b ms':>9} {'/dense':>7} {'/LoRA':>7}"
    print(header)
    print("-" * len(header))
    for d in args.dims:
        for n in args.tokens:
            res = bench(d, n, args.reps, names, device, dtype)
            dense, lora = res["dense"][1], res["lora-r8"][1]
            for name, (params, t) in res.items():
                print(f"{d:>5} {n:>5} {name:<20} {params:>9} "
                      f"{t['fwd'] * 1e3:>9.2f} {t['fwd'] / dense['fwd']:>7.2f} {t['fwd'] / lora['fwd']:>7.2f} "
                      f"{t['fwd+bwd'] * 1e3:>9.2f} {t['fwd+bwd'] / dense['fwd+bwd']:>7.2f} "
                      f"{t['fwd+bwd'] / lora['fwd+bwd']:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
