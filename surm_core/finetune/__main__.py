"""Command line: ``python -m surm_core.finetune --family circulant --budget 4096 --steps 200 --out runs/circ``.

Runs the same way under ``torchrun --nproc_per_node=N python -m surm_core.finetune ...`` (one
DistributedDataParallel process per CPU share or GPU; only rank 0 prints and writes files).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import signal
import sys
import threading

import transformers
from tqdm import tqdm

from ..families import FAMILIES
from .data import BBC_NEWS
from .config import BASELINES, PRECISIONS, TARGET_PRESETS, FinetuneConfig, load_config
from .engine import resume, run
from .estimate import estimate_time
from ..runtime import reuse_large_buffers

DEFAULTS = FinetuneConfig().to_dict()


def parse_hparam(text: str) -> tuple[str, object]:
    """``"r=8"`` -> ``("r", 8)``; values are Python literals (``a_shape=(8,8)``) or else strings."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def parse_eval_size(text: str) -> int | str:
    return text if text == "all" else int(text)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show each option's default (the config's), except where there is none or the help already
    says it in words. The parser itself has no defaults, so that it tells which options were given."""

    def _get_help_string(self, action):
        default = DEFAULTS.get(action.dest)
        if default is None or "default:" in (action.help or ""):
            return action.help
        return f"{action.help} (default: {default})"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m surm_core.finetune",
        description="Fine-tune a sequence classifier with a structured adapter (or the full / head-only "
        "baselines) and write metrics.jsonl, summary.json and the weights to a run directory. Under "
        "torchrun --nproc_per_node=N it trains with DistributedDataParallel. Ctrl-C stops the run "
        "after the current step, evaluates and keeps what it reached (a second Ctrl-C interrupts at "
        "once); --resume continues a stopped or killed run from its last checkpoint.",
        formatter_class=HelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the killed or stopped run in RUN_DIR where its last checkpoint left it (no other options)")
    p.add_argument("--estimate", action="store_true",
                   help="print the predicted wall time of the run as JSON (from a few measured steps) and exit without training")
    p.add_argument("--config", metavar="FILE",
                   help="a JSON object of config fields (a run directory's config.json is one); options given here override it")
    p.add_argument("--out", dest="out_dir", metavar="RUN_DIR",
                   help="run directory to create (must not hold a run already); required unless the --config file names out_dir")
    p.add_argument("--model", help="local model directory or Hugging Face hub id (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--dataset", help=f"{BBC_NEWS!r} (built in) or a .csv / .jsonl file")
    p.add_argument("--text-column", help="text column of a CSV/JSONL file (default: detected from the column names)")
    p.add_argument("--label-column", help="label column of a CSV/JSONL file (default: detected from the column names)")
    p.add_argument("--family", "--method", dest="method", choices=[*FAMILIES, *BASELINES],
                   help="structured adapter family, or a baseline: 'full' trains every weight, 'head-only' only the classifier")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--budget", type=int, help="adapter parameters per adapted layer (the family's most expressive member that fits)")
    size.add_argument("--hparams", nargs="+", type=parse_hparam, metavar="KEY=VALUE",
                      help="the family's hyperparameters instead of a budget, e.g. --hparams r=8 alpha=16 (lowrank), nblocks=4 blk_r=4 (monarch)")
    targets = p.add_mutually_exclusive_group()
    targets.add_argument("--target-modules", nargs="+", metavar="SUFFIX",
                         help=f"layers to adapt: a preset ({', '.join(TARGET_PRESETS)}) or module-name suffixes "
                         "(default: attention-qv, the attention query/value projections)")
    targets.add_argument("--target-regex", metavar="REGEX", dest="target_regex",
                         help="layers to adapt: a regular expression matched against full module names")
    p.add_argument("--lora-r", type=int, metavar="R", help="LoRA's rank (--family lowrank): the same as --hparams r=R")
    p.add_argument("--lora-alpha", type=float, metavar="ALPHA",
                   help="LoRA's alpha (--family lowrank; scale alpha/r): the same as --hparams alpha=ALPHA (default: alpha = r)")
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--epochs", type=float, help="passes over the training split; replaces --steps")
    p.add_argument("--batch-size", type=int, help="rows per step, over all processes")
    p.add_argument("--lr", type=float, help="peak AdamW learning rate (default: 5e-3, or 5e-5 for --method full)")
    p.add_argument("--warmup-ratio", type=float, help="share of the steps with linear warmup (then linear decay to 0)")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay")
    p.add_argument("--max-length", type=int, help="tokens per text (longer texts are truncated)")
    p.add_argument("--seed", type=int, help="fixes initialisation, dropout and batch order; 0 to 2**63 - 1")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="auto: CUDA when available, else CPU")
    p.add_argument("--precision", choices=list(PRECISIONS), help="auto: bfloat16 autocast on CUDA, float32 on the CPU")
    p.add_argument("--eval-every", type=int, help="evaluate every N steps (and at the end)")
    p.add_argument("--eval-size", type=parse_eval_size, help="test rows to evaluate on, or 'all'")
    return p


def config_from_args(given: dict, needs_out: bool = True) -> FinetuneConfig:
    """The run's config: the ``--config`` file's fields (if any), overridden by the options given."""
    fields = dict(given)
    file = fields.pop("config", None)
    if "hparams" in fields:
        fields["hparams"] = dict(fields["hparams"])
    lora = {k: fields.pop(f"lora_{k}") for k in ("r", "alpha") if f"lora_{k}" in fields}
    if lora:
        if "hparams" in fields or "budget" in fields:
            raise ValueError("--lora-r/--lora-alpha set LoRA's hparams: give them without --hparams or --budget")
        fields["hparams"] = lora
    if "target_regex" in fields:
        fields["target_modules"] = fields.pop("target_regex")
    elif len(fields.get("target_modules", [])) == 1 and fields["target_modules"][0] in TARGET_PRESETS:
        fields["target_modules"] = fields["target_modules"][0]
    config = load_config(file, **fields) if file is not None else FinetuneConfig.from_dict(fields)
    if lora and config.method != "lowrank":
        raise ValueError(f"--lora-r/--lora-alpha are LoRA's (--family lowrank), not {config.method!r}'s; use --hparams")
    if needs_out and config.out_dir is None:
        raise ValueError("name the run directory: --out RUN_DIR (or out_dir in the --config file)")
    return config


def main(argv=None) -> int:
    given = vars(parser().parse_args(argv))
    resume_dir = given.pop("resume", None)
    estimate = given.pop("estimate", False)
    try:
        if resume_dir is not None and given:
            raise ValueError(f"--resume continues a run with its own config.json; drop {', '.join(sorted(given))}")
        if estimate:
            print(json.dumps(estimate_time(config_from_args(given, needs_out=False))))
            return 0
        config = config_from_args(given) if resume_dir is None else None
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    reuse_large_buffers()  # this process only trains: let every step reuse its large buffers

    # The first Ctrl-C asks the run to stop after its current step (keeping what it reached);
    # a second one interrupts at once.
    stop = threading.Event()

    def on_interrupt(*_):
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous_handler = signal.signal(signal.SIGINT, on_interrupt)
    rank0 = int(os.environ.get("RANK", 0)) == 0
    if not rank0:
        transformers.logging.set_verbosity_error()  # one copy of the model-loading report is enough
    bar = tqdm(total=None, unit="step", disable=None if rank0 else True)  # None: off unless a terminal

    def on_event(event):
        if bar.total is None:  # the first event: the clock starts now, not at model loading
            bar.reset(total=event["total_steps"])
        bar.update(event["step"] - bar.n)
        if event["loss"] is not None:
            bar.set_postfix(loss=f"{event['loss']:.4f}", acc=f"{event['train_acc']:.3f}", refresh=False)
        if event["event"] == "eval":
            line = f"step {event['step']}/{event['total_steps']}: eval accuracy {event['eval_acc']:.4f}, loss {event['loss']:.4f}"
            bar.write(line) if not bar.disable else print(line, flush=True)

    try:
        if resume_dir is not None:
            summary = resume(resume_dir, on_event=on_event, should_stop=stop.is_set)
        else:
            summary = run(config, on_event=on_event, should_stop=stop.is_set)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        bar.close()
        signal.signal(signal.SIGINT, previous_handler)
    reason = summary["stopped_reason"]
    if rank0:
        final, best = (f"{a:.4f}" if a is not None else "n/a" for a in (summary["final_eval_acc"], summary["best_eval_acc"]))
        print(
            f"{reason if reason in ('completed', 'stopped') else 'failed'}: {summary['steps_done']} steps, "
            f"eval accuracy {final} (best {best}), {summary['trainable_params']:,} trainable parameters, "
            f"{summary['examples_per_s'] or 0:.1f} examples/s, {summary['wall_time_s']:.1f} s on {summary['device']} "
            f"x{summary['world_size']} processes (loading {summary['load_s']:.1f} s, steps {summary['train_s']:.1f} s, "
            f"evaluation {summary['eval_s']:.1f} s)\n"
            f"run directory: {summary['run_dir']}"
        )
        if reason == "stopped":
            print(f"resume it with: python -m surm_core.finetune --resume {summary['run_dir']}")
        elif reason != "completed":
            print(f"error: {reason}", file=sys.stderr)
    return 0 if reason in ("completed", "stopped") else 1


if __name__ == "__main__":
    sys.exit(main())
