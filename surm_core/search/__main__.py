"""Command line: ``python -m surm_core.search --families circulant monarch lowrank --max-budget 3072
--trials 40 --steps 60 --dataset bbc_news --out searches/s1``.

Prints a line per finished trial, then the Pareto front and the best configuration, written to
``<out>/best.json`` (train it longer with ``python -m surm_core.finetune --config <out>/best.json
--steps 600 --out runs/best``). Ctrl-C stops cleanly (running trials end after their current step
and are queued again); the same command with ``--resume`` continues. Several machines join one
study with ``--storage URL`` (start it on one, add ``--resume`` on the others).
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from ..families import FAMILIES
from ..finetune import BBC_NEWS, FinetuneConfig
from ..finetune.config import TARGET_PRESETS
from ..finetune.images import BUILT_IN as IMAGE_DATASETS
from ..models import TASKS
from .space import HEAD_ONLY, SearchSpace
from .study import (Search, best, counted, describe, front, metric_value, objective_name, open_storage, print_trial,
                    run_search, steps_saved, write_config)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m surm_core.search", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="search directory: trial runs, study.db (default storage), best.json")
    p.add_argument("--families", nargs="*", default=[f for f in FAMILIES if f != "dense"] + [HEAD_ONLY],
                   help=f"families to try, from {', '.join([*FAMILIES, HEAD_ONLY])} (lowrank is LoRA; default: all but dense)")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--max-budget", type=int, help="largest adapter budget per layer (parameters)")
    size.add_argument("--max-params", type=int, help="largest number of trainable parameters in all (adapters and head)")
    p.add_argument("--min-budget", type=int, help="smallest adapter budget per layer (default: each family's smallest)")
    p.add_argument("--targets", nargs="+", default=["attention-qv"],
                   help=f"target-module presets to try: {', '.join(TARGET_PRESETS)}, or comma-separated module names")
    p.add_argument("--trials", type=int, default=40, help="trials to finish (complete, pruned or failed)")
    p.add_argument("--steps", type=int, default=60, help="optimizer steps per trial")
    p.add_argument("--eval-every", type=int, help="evaluate (and maybe prune) every N steps (default: steps // 3)")
    p.add_argument("--batch-size", type=int, default=FinetuneConfig.batch_size)
    p.add_argument("--max-length", type=int, default=FinetuneConfig.max_length)
    p.add_argument("--eval-size", type=lambda s: None if s == "all" else int(s), default=FinetuneConfig.eval_size,
                   help="test rows to evaluate on, or 'all'")
    p.add_argument("--model", help="local model directory or hub id (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--task", choices=list(TASKS), help="what the trials fine-tune for (default: what the model's config "
                   "says it is for); the objective is eval accuracy (maximised), or a causal LM's eval loss (minimised)")
    p.add_argument("--dataset", default=BBC_NEWS, help=f"built in: {BBC_NEWS!r} (texts), "
                   f"{' / '.join(map(repr, IMAGE_DATASETS))} (images); or a .csv / .jsonl file, an image folder or a .zip of one")
    p.add_argument("--text-column")
    p.add_argument("--label-column")
    p.add_argument("--seed", type=int, default=0, help="seed of every trial's run and of the sampler")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--storage", help="Optuna storage: a database URL (postgresql://..., mysql+pymysql://..., "
                                     "sqlite:///...) or a journal file on a shared disk (default: <out>/study.db)")
    p.add_argument("--study", help="study name in the storage (default: the --out folder's name)")
    p.add_argument("--resume", action="store_true", help="continue (or join) the existing study with the same settings")
    p.add_argument("--workers", type=int, help="worker processes here (default: one per GPU on CUDA, else 1)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    stop = threading.Event()

    def on_interrupt(*_):
        print("stopping: running trials end after their current step (Ctrl-C again to abort)", flush=True)
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    try:
        run = FinetuneConfig(
            **({"model": args.model} if args.model else {}), task=args.task, dataset=args.dataset, text_column=args.text_column,
            label_column=args.label_column, steps=args.steps, batch_size=args.batch_size, max_length=args.max_length,
            eval_every=args.eval_every or max(1, args.steps // 3), eval_size=args.eval_size, seed=args.seed,
            device=args.device,
        )
        search = Search(SearchSpace(args.families, args.max_budget, args.max_params, args.targets, args.min_budget), run)
        previous = signal.signal(signal.SIGINT, on_interrupt)
        try:
            study = run_search(search, args.out, args.trials, storage=args.storage, name=args.study,
                               resume=args.resume, workers=args.workers, stop=stop, on_trial=print_trial)
        finally:
            signal.signal(signal.SIGINT, previous)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report(study, search, Path(args.out), stopped=stop.is_set())
    return 0


def report(study, search: Search, out: Path, stopped: bool) -> None:
    done, running = counted(study)
    run_steps, saved = steps_saved(study)
    print(f"\n{'stopped' if stopped else 'finished'}: {done} trials done"
          + (f", {running} running elsewhere" if running else "")
          + f"; {run_steps:,} training steps run, {saved:,} saved by pruning")
    points = front(study)
    if points:
        name = objective_name(study)
        print(f"Pareto front ({name} vs trainable parameters{', lower is better' if name == 'eval loss' else ''}):")
        for t in points:
            print(f"  trial {t.number:>3}  {t.user_attrs['trainable_params']:>10,} params  {name} {metric_value(t):.4f}  {describe(t)}")
        top = best(study, search.space.max_params)
        print(f"best: trial {top.number} ({metric_value(top):.4f}), written to {out / 'best.json'}; train it longer with\n"
              f"  python -m surm_core.finetune --config {out / 'best.json'} --steps 600 --out runs/best")
    else:
        print("no trial completed yet")
    if stopped:
        print("continue with the same command and --resume")


def export_main(argv=None) -> int:
    """``python -m surm_core.search export --out DIR --trial N [--storage URL] [--study NAME]``."""
    p = argparse.ArgumentParser(prog="python -m surm_core.search export",
                                description="Write one trial's configuration as JSON for python -m surm_core.finetune --config.")
    p.add_argument("--out", required=True, help="the search directory")
    p.add_argument("--trial", type=int, required=True, help="trial number")
    p.add_argument("--storage")
    p.add_argument("--study")
    p.add_argument("--to", help="file to write (default: <out>/trial-<N>.json)")
    args = p.parse_args(argv)
    import optuna

    out = Path(args.out)
    if args.storage is None and not (out / "study.db").exists():
        print(f"error: {out} holds no search (no study.db)", file=sys.stderr)
        return 2
    try:
        study = optuna.load_study(study_name=args.study or out.resolve().name, storage=open_storage(args.storage, out))
    except (KeyError, ValueError) as e:
        print(f"error: no study to export from: {e}", file=sys.stderr)
        return 2
    trials = [t for t in study.get_trials(deepcopy=False) if t.number == args.trial and "config" in t.user_attrs]
    if not trials:
        print(f"error: study has no started trial {args.trial}", file=sys.stderr)
        return 2
    path = write_config(trials[0], args.to or out / f"trial-{args.trial}.json")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(export_main(sys.argv[2:]) if sys.argv[1:2] == ["export"] else main())
