"""Accuracy per trainable parameter: LoRA, every structured family, head-only and full fine-tuning.

    python -m benchmarks.pareto                 # the full study (hours on a 2-core CPU): RESULTS.md + pareto.png
    python -m benchmarks.pareto --quick --out /tmp/pareto   # smoke mode, a couple of minutes

Fine-tunes the default model (packaged all-MiniLM-L6-v2) on BBC News with adapters on
query/value: LoRA r ∈ {1, 2, 4, 8, 16}, each structured family at several per-layer budgets,
head-only and full fine-tuning; same steps for all. The learning rate is tuned per method on seed
0 over a small grid (structured adapters usually want a larger one than LoRA), then every
configuration runs on ``--seeds`` seeds at its method's best rate. Writes a Markdown table of mean
± std accuracy to ``<out>/RESULTS.md`` with the answer to "which families match LoRA r=8 within
its seed spread with fewer parameters, and by what factor", and the Pareto plot to
``<out>/pareto.png`` (rendered by headless Chromium from the plotly figure).

It runs on the structure search's engine (``surm_core.search``): every fine-tune is a trial of
an Optuna study in ``<out>/pareto.db``, sampled by a grid sampler and run by the same trial
runner as ``python -m surm_core.search``; ``--resume`` continues the study.
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import threading
from pathlib import Path

import optuna
import plotly.graph_objects as go
from optuna.trial import TrialState

from surm_core.finetune import FinetuneConfig
from surm_core.search.study import TrialFailed, quiet, run_trial
from surm_core.runtime import reuse_large_buffers
from visualize.style import color
from visualize.training import pareto

# method -> list of (label, budget, hparams)
FULL_GRID = {
    "lowrank": [(f"r={r}", None, {"r": r}) for r in (1, 2, 4, 8, 16)],
    **{fam: [(f"budget={b}", b, None) for b in (384, 768, 1536, 3072)] for fam in ("circulant", "symmetric_toeplitz")},
    # 768 is the smallest Kronecker and Monarch map at 384 × 384; 3072 is MoRe's nblocks=4, blk_r=4
    **{fam: [(f"budget={b}", b, None) for b in (768, 1536, 3072, 6144)] for fam in ("kronecker", "monarch")},
    "toeplitz": [(f"budget={b}", b, None) for b in (767, 1535, 3069)],
    "ldr": [(f"budget={b}", b, None) for b in (768, 1536, 3072)],
    "head-only": [("", None, None)],
    "full": [("", None, None)],
}
LR_GRID = {"full": (2e-5, 5e-5, 1e-4), "head-only": (3e-3, 1e-2, 3e-2)}
ADAPTER_LRS = (1e-3, 3e-3, 1e-2, 3e-2)
STRUCTURED = ("circulant", "symmetric_toeplitz", "kronecker", "monarch", "toeplitz", "ldr")
QUICK_GRID = {"lowrank": [("r=8", None, {"r": 8})], "circulant": [("budget=384", 384, None)]}


def spread(configs: list, count: int | None) -> list:
    """``count`` of ``configs`` (ordered by budget): the smallest, the largest, then evenly between."""
    if count is None or count >= len(configs):
        return configs
    if count == 1:
        return configs[:1]
    picks = sorted({round(i * (len(configs) - 1) / (count - 1)) for i in range(count)})
    return [configs[i] for i in picks]


def config_for(method, budget, hparams, lr, seed, args) -> FinetuneConfig:
    return FinetuneConfig(method=method, budget=budget, hparams=hparams, lr=lr, seed=seed, steps=args.steps,
                          batch_size=args.batch_size, max_length=args.max_length, eval_every=args.steps,
                          eval_size=args.eval_size, device=args.device)


#: Every configuration the study may run, by the name its trials carry: "method label".
CONFIGS = {f"{method} {label}".strip(): (method, label, budget, hparams)
           for grid in (FULL_GRID, QUICK_GRID) for method, configs in grid.items() for label, budget, hparams in configs}


class Runs:
    """Every fine-tune of the study is a trial of one Optuna study in ``<out>/pareto.db``, run by
    the structure search's trial runner (``surm_core.search.study.run_trial``): each step of the
    study (a method's learning-rate grid, then its configurations × seeds) is a ``GridSampler``
    over configuration, learning rate and seed. A run already in the study (the learning-rate
    search's seed 0, or a resumed study's runs) is not run again: a seed fixes the whole run.
    Each run is also logged to ``<out>/runs.jsonl`` as it ends (``acc`` None and ``failure`` for
    a run that failed, e.g. diverged)."""

    def __init__(self, out: Path, args, resume: bool):
        db = out / "pareto.db"
        if db.exists() and not resume:
            raise ValueError(f"{db} holds a study already: --resume continues it (or delete it to start again)")
        self.args = args
        self.study = optuna.create_study(study_name="pareto", storage=f"sqlite:///{db}", direction="maximize",
                                         pruner=optuna.pruners.NopPruner(), load_if_exists=True)
        self.log = open(out / "runs.jsonl", "a" if resume else "w")

    def done(self) -> dict:
        """(config, lr, seed) -> the trial that ran it."""
        return {(t.params["config"], t.params["lr"], t.params["seed"]): t for t in self.study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)) if "acc" in t.user_attrs}

    def grid(self, method, labels, lrs, seeds) -> dict:
        """Run the grid ``labels × lrs × seeds`` of ``method``; ``(label, lr, seed) -> record`` with
        method, label, budget, hparams, lr, seed, trainable_params, acc."""
        space = {"config": [f"{method} {label}".strip() for label in labels], "lr": list(lrs), "seed": list(seeds)}
        sampler = optuna.samplers.GridSampler(space)
        self.study.sampler = sampler
        if not sampler.is_exhausted(self.study):
            self.study.optimize(self.objective, n_trials=len(list(itertools.product(*space.values()))),
                                catch=(TrialFailed,))
        done = self.done()
        return {(label, lr, seed): done[(f"{method} {label}".strip(), lr, seed)].user_attrs["record"]
                for label in labels for lr in lrs for seed in seeds}

    def objective(self, trial) -> float:
        name = trial.suggest_categorical("config", list(CONFIGS))
        lr = trial.suggest_float("lr", 1e-6, 10.0, log=True)
        seed = trial.suggest_int("seed", 0, 2**31 - 1)
        earlier = self.done().get((name, lr, seed))
        if earlier is not None:  # the same run again would give the same numbers
            trial.set_user_attr("record", earlier.user_attrs["record"])
            trial.set_user_attr("acc", earlier.user_attrs["acc"])
            return earlier.user_attrs["acc"] if earlier.user_attrs["acc"] is not None else float("nan")
        method, label, budget, hparams = CONFIGS[name]
        record = {"method": method, "label": label, "budget": budget, "hparams": hparams, "lr": lr, "seed": seed}
        try:
            acc = run_trial(trial, config_for(method, budget, hparams, lr, seed, self.args), threading.Event())
        except TrialFailed as e:
            acc, record["failure"] = None, str(e)
        record.update(trainable_params=trial.user_attrs.get("trainable_params"), acc=acc)
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()
        trial.set_user_attr("record", record)
        trial.set_user_attr("acc", acc)
        if acc is None:
            raise TrialFailed(record["failure"])
        return acc


def tune_lr(method, label, budget, hparams, args, runs: Runs) -> tuple[float, list[float]]:
    """Best final eval accuracy on seed 0 over the method's learning-rate grid, and the rates
    tried. While the best is at an end of the grid, the grid goes one step further that way (by
    its end ratio, at most twice): an optimum on the edge says the grid was in the wrong place.
    A run that failed (diverged) ranks below every other."""
    grid = list(LR_GRID.get(method, ADAPTER_LRS))
    if args.quick:
        return grid[1], grid
    scores = {}
    for extensions in range(3):
        done = runs.grid(method, [label], [lr for lr in grid if lr not in scores], [0])
        scores.update({lr: -1.0 if r["acc"] is None else r["acc"] for (_, lr, _), r in done.items()})
        best = max(scores, key=scores.get)
        if extensions == 2 or best not in (grid[0], grid[-1]):
            break
        if best == grid[-1]:
            grid.append(float(f"{grid[-1] ** 2 / grid[-2]:.0e}"))
        else:
            grid.insert(0, float(f"{grid[0] ** 2 / grid[1]:.0e}"))
    tried = ", ".join(f"{lr:g}→{acc:.3f}" for lr, acc in sorted(scores.items()))
    print(f"  lr search {method}: {tried}", flush=True)
    return best, sorted(scores)


def study_figure(rows) -> go.Figure:
    """The app's Pareto view of the mean accuracies, for a page: points without labels (too many
    to read), a legend of methods, and the accuracy axis zoomed to the runs."""
    fig = pareto([{"name": f"{r['method']} {r['label']}".strip(), "method": r["method"],
                   "trainable_params": r["trainable_params"], "final_eval_acc": r["mean"]} for r in rows])
    fig.update_traces(mode="markers", selector=dict(name="runs"))
    for method in dict.fromkeys(r["method"] for r in rows):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=method,
                                 marker=dict(size=11, color=color(method))))
    low = min(r["mean"] for r in rows)
    fig.update_yaxes(range=[low - 0.02, 1.0])
    return fig


def render_png(fig, path: Path) -> None:
    """Screenshot the figure in headless Debian Chromium (plotly's own PNG export needs kaleido)."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "fig.html"
        fig.write_html(html, include_plotlyjs=True, full_html=True, default_width=900, default_height=560)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 920, "height": 580})
            page.goto(html.as_uri())
            page.wait_for_selector(".main-svg")
            page.screenshot(path=str(path))
            browser.close()


def results_markdown(rows, lrs, args) -> str:
    lines = [
        "# Parameter efficiency on BBC News (all-MiniLM-L6-v2, adapters on query/value)",
        "",
        "Made by `" + " ".join(["python -m benchmarks.pareto", *args.argv]) + "`.",
        "",
        f"{args.steps} steps, batch {args.batch_size}, max length {args.max_length}, eval on "
        f"{args.eval_size or 'all'} test rows, {args.seeds} seed(s), device {args.device}. Learning rate tuned per "
        f"method on seed 0 (on the middle configuration of its range) over {ADAPTER_LRS} for adapters, "
        f"{LR_GRID['head-only']} head-only, {LR_GRID['full']} full, a grid extended one step while its best "
        "rate was at an end.",
        "",
        "| method | rates tried | chosen |",
        "|---|---|---|",
        *(f"| {m} | {', '.join(f'{lr:g}' for lr in tried)} | {lr:g} |" for m, (lr, tried) in lrs.items()),
        "",
    ]
    head = next((r["trainable_params"] for r in rows if r["method"] == "head-only"), None)
    if head is not None:
        lines += ["", f"Trainable parameters include the classifier head ({head:,}), trained by every method."]
    lines += [
        "",
        "| method | config | trainable params | accuracy mean | std | seeds |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["trainable_params"]):
        lines.append(f"| {r['method']} | {r['label']} | {r['trainable_params']:,} | {r['mean']:.4f} | "
                     f"{r['std']:.4f} | {len(r['accs'])} |")
    lora8 = next((r for r in rows if r["method"] == "lowrank" and r["label"] == "r=8"), None)
    lines += ["", "## Which families match LoRA r=8 with fewer parameters?", ""]
    if lora8 is None:
        lines.append("LoRA r=8 was not in this run.")
    else:
        floor = lora8["mean"] - lora8["std"]
        lines.append(f"LoRA r=8: {lora8['mean']:.4f} ± {lora8['std']:.4f} with {lora8['trainable_params']:,} "
                     f"trainable parameters; a configuration matches it when its mean is ≥ {floor:.4f}.")
        lines.append("")
        for method in dict.fromkeys(r["method"] for r in rows):
            if method == "lowrank":
                continue
            matches = [r for r in rows if r["method"] == method and r["mean"] >= floor
                       and r["trainable_params"] < lora8["trainable_params"]]
            if matches:
                best = min(matches, key=lambda r: r["trainable_params"])
                lines.append(f"- **{method}** matches at {best['label']}: {best['trainable_params']:,} parameters, "
                             f"{lora8['trainable_params'] / best['trainable_params']:.1f}× fewer "
                             f"({best['mean']:.4f} ± {best['std']:.4f}).")
            else:
                lines.append(f"- {method}: no configuration with fewer parameters reaches it.")
    lines += ["", "![accuracy vs trainable parameters](pareto.png)", ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke mode: LoRA r=8 and one circulant, a few steps")
    ap.add_argument("--out", default="benchmarks", help="folder for RESULTS.md, pareto.png, runs.jsonl")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--eval-size", type=int, default=None, help="test rows to score (default: all 445)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--budgets-per-family", type=int, default=None,
                    help="keep only this many budgets of each structured family, smallest and largest first "
                         "(a shorter study; default: all)")
    ap.add_argument("--resume", action="store_true",
                    help="continue the study in <out>/pareto.db: run only what it does not hold yet (same settings)")
    args = ap.parse_args(argv)
    if args.budgets_per_family is not None and args.budgets_per_family < 1:
        ap.error(f"--budgets-per-family must be at least 1, got {args.budgets_per_family}")
    args.argv = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--resume"]
    if args.quick:
        args.steps, args.seeds, args.batch_size, args.max_length, args.eval_size = 3, 1, 8, 32, 40
    grid = QUICK_GRID if args.quick else {m: spread(c, args.budgets_per_family) if m in STRUCTURED else c
                                          for m, c in FULL_GRID.items()}
    reuse_large_buffers()
    quiet()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    rows, lrs = [], {}
    try:
        runs = Runs(out, args, resume=args.resume)
    except ValueError as e:
        ap.error(str(e))
    for method, configs in grid.items():
        # tune on the configuration in the middle of the method's range
        lrs[method] = tune_lr(method, *configs[len(configs) // 2], args, runs)
        lr = lrs[method][0]
        done = runs.grid(method, [label for label, _, _ in configs], [lr], range(args.seeds))
        for label, budget, hparams in configs:
            records = [done[(label, lr, seed)] for seed in range(args.seeds)]
            accs = [r["acc"] for r in records if r["acc"] is not None]  # seeds that did not fail
            rows.append({"method": method, "label": label, "trainable_params": records[-1]["trainable_params"],
                         "accs": accs, "mean": statistics.fmean(accs), "std": statistics.pstdev(accs)})
            print(f"{method:<20} {label:<12} {rows[-1]['trainable_params']:>10,} params  acc {rows[-1]['mean']:.4f} "
                  f"± {rows[-1]['std']:.4f}", flush=True)

    (out / "RESULTS.md").write_text(results_markdown(rows, lrs, args))
    render_png(study_figure(rows), out / "pareto.png")
    print(f"wrote {out / 'RESULTS.md'} and {out / 'pareto.png'}")


if __name__ == "__main__":
    main()
