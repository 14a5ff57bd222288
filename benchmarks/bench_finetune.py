"""Time one training step of MiniLM with each adapter family, as a ratio to LoRA r=8.

    python -m benchmarks.bench_finetune                 # batch 32, max length 128, query/value
    python -m benchmarks.bench_finetune --reps 10 --families circulant monarch-4x4
    python -m benchmarks.bench_finetune --device cuda     # bfloat16 autocast, as fine-tuning runs there

This is the number users feel: a whole step (forward, backward, AdamW update) of the packaged
all-MiniLM-L6-v2 (hidden 384) on BBC News text, adapters on query/value, the classifier head
trained too. Models are stepped in turns within each repetition; cells are medians.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from benchmarks.bench_apply import CONFIGS as APPLY_CONFIGS, device_from_args, time_once
from surm_core import AdapterConfig, inject
from surm_core.finetune.data import load_dataset
from surm_core.models import DEFAULT_MODEL, load_model
from surm_core.runtime import reuse_large_buffers

# the apply benchmark's configurations, but for dense: full fine-tuning is not an adapter
CONFIGS = {name: cfg for name, cfg in APPLY_CONFIGS.items() if name != "dense"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--families", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--model", default=DEFAULT_MODEL, help="local model directory (default: the packaged all-MiniLM-L6-v2)")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"],
                    help="auto: CUDA when available; CUDA steps run in bfloat16 autocast")
    ap.add_argument("--glibc-defaults", action="store_true", help="keep glibc's allocator thresholds")
    args = ap.parse_args(argv)
    names = list(dict.fromkeys(["lora-r8", *args.families]))
    device, where = device_from_args(ap, args.device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    allocator = "glibc defaults" if args.glibc_defaults or not reuse_large_buffers() else "large buffers reused"

    data = load_dataset("bbc_news")
    num_labels = len(data.label_names)
    _, tokenizer = load_model(args.model, num_labels=num_labels)
    # padded to max_length so every step sees exactly batch × max_length tokens
    batch = tokenizer(data.texts[: args.batch_size], truncation=True, max_length=args.max_length,
                      padding="max_length", return_tensors="pt")
    batch["labels"] = torch.tensor(data.labels[: args.batch_size])
    batch = {k: v.to(device) for k, v in batch.items()}

    runs = {}
    for name in names:
        family, hparams = CONFIGS[name]
        model, _ = load_model(args.model, num_labels=num_labels)
        inject(model, AdapterConfig(family, ["query", "value"], hparams=hparams, modules_to_save=["classifier"]))
        model.to(device).train()
        params = [p for p in model.parameters() if p.requires_grad]
        runs[name] = (model, torch.optim.AdamW(params, lr=1e-3), sum(p.numel() for p in params))

    def step(model, opt):
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        opt.step()

    times = {name: [] for name in names}
    for rep in range(args.reps + 1):  # round 0 warms up
        for name, (model, opt, _) in runs.items():
            t = time_once(lambda: step(model, opt), device)
            if rep:
                times[name].append(t)

    if device.type == "cuda":
        where += ", bf16 autocast"
    model_name = "MiniLM" if args.model == DEFAULT_MODEL else Path(args.model).name
    print(f"{model_name} train step, batch {args.batch_size} × {args.max_length} tokens, query/value adapters, "
          f"torch {torch.__version__}, {where}, allocator: {allocator}, "
          f"median of {args.reps}")
    print(f"{'family':<20} {'trainable':>10} {'step ms':>9} {'/LoRA':>7} {'examples/s':>11}")
    lora = statistics.median(times["lora-r8"])
    for name in names:
        t = statistics.median(times[name])
        print(f"{name:<20} {runs[name][2]:>10} {t * 1e3:>9.1f} {t / lora:>7.3f} {args.batch_size / t:>11.1f}")


if __name__ == "__main__":
    main()
