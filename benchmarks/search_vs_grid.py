"""How much compute a structure search needs to find the grid study's front.

    python -m benchmarks.search_vs_grid --search searches/bbc     # after python -m surm_core.search ... --out searches/bbc

The grid is the Pareto study in ``benchmarks/runs.jsonl`` (``benchmarks.pareto``): its rows are
the configurations run on every seed at their method's chosen learning rate. At each number of
trainable parameters P the grid covered, its best is the highest mean accuracy of a row with at
most P parameters; the search *finds* it at the first finished trial (in the order trials
finished) with at most P parameters and an accuracy within ``--tolerance`` of it. Compute is
counted in trial-steps (optimizer steps of every trial, pruned and failed ones included, up to
and including that trial) against the grid's (every run of the study, learning-rate search
included, times its steps).
"""
from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import optuna
from optuna.trial import TrialState

from surm_core.search.study import describe


def grid_rows(runs: list[dict]) -> list[dict]:
    """The study's table rows: configurations run on more than one seed, with their mean."""
    groups = defaultdict(list)
    for r in runs:
        groups[(r["method"], r["label"], r["lr"])].append(r)
    return [{"name": f"{m} {label}".strip(), "lr": lr, "trainable_params": rs[0]["trainable_params"],
             "mean": statistics.fmean(r["acc"] for r in rs)}
            for (m, label, lr), rs in groups.items() if len(rs) > 1]


def levels(rows: list[dict]) -> list[tuple[int, dict]]:
    """(P, the row with the best mean among those with at most P parameters) for every P covered."""
    return [(p, max((r for r in rows if r["trainable_params"] <= p), key=lambda r: r["mean"]))
            for p in sorted({r["trainable_params"] for r in rows})]


def finished_in_order(study) -> list:
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    return sorted((t for t in trials if "steps" in t.user_attrs), key=lambda t: t.datetime_complete)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--search", required=True, help="the search directory (its study.db)")
    ap.add_argument("--study", help="study name (default: the search directory's name)")
    ap.add_argument("--grid", default="benchmarks/runs.jsonl", help="the grid study's runs")
    ap.add_argument("--grid-steps", type=int, default=60, help="steps of each grid run")
    ap.add_argument("--tolerance", type=float, default=0.005, help="accuracy a match may lie below the grid's best")
    args = ap.parse_args(argv)
    runs = [json.loads(line) for line in Path(args.grid).read_text().splitlines()]
    grid_steps = len(runs) * args.grid_steps
    search = Path(args.search)
    study = optuna.load_study(study_name=args.study or search.resolve().name, storage=f"sqlite:///{search / 'study.db'}")
    trials = finished_in_order(study)
    spent, total = [], 0
    for t in trials:
        total += t.user_attrs["steps"]
        spent.append(total)
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    print(f"grid: {len(runs)} runs x {args.grid_steps} steps = {grid_steps:,} trial-steps; search: {len(trials)} "
          f"trials ({pruned} pruned), {total:,} trial-steps\n")
    print(f"| trainable ≤ | grid's best (mean of seeds) | search's first within {args.tolerance * 100:g} points | "
          "accuracy | trial-steps | / grid |")
    print("|---|---|---|---|---|---|")
    needed = 0
    for p, row in levels(grid_rows(runs)):
        target = row["mean"] - args.tolerance
        hit = next((i for i, t in enumerate(trials) if t.state == TrialState.COMPLETE
                    and t.user_attrs["trainable_params"] <= p and t.value >= target), None)
        grid = f"{row['name']} (lr {row['lr']:g}) {row['mean']:.4f}"
        if hit is None:
            print(f"| {p:,} | {grid} | not found | | | |")
            needed = None
            continue
        t = trials[hit]
        print(f"| {p:,} | {grid} | trial {t.number}: {describe(t)}, {t.user_attrs['trainable_params']:,} params | "
              f"{t.value:.4f} | {spent[hit]:,} | {spent[hit] / grid_steps:.2f} |")
        needed = None if needed is None else max(needed, spent[hit])
    if needed is not None:
        print(f"\nevery level found after {needed:,} trial-steps: {needed / grid_steps:.2f} of the grid's {grid_steps:,}")


if __name__ == "__main__":
    main()
