"""How much compute a structure search needs to find the grid study's front.

    python -m benchmarks.search_vs_grid --search searches/bbc     # after python -m surm_core.search ... --out searches/bbc

The grid is the Pareto study in ``benchmarks/runs.jsonl`` (``benchmarks.pareto``): its rows are
the configurations run on every seed at their method's chosen learning rate. At each number of
trainable parameters P the grid covered, its best is the highest mean accuracy of a row with at
most P parameters (a row per P where that best improves: the grid's front); the search *finds*
it at the first finished trial (in the order trials finished) with at most P parameters and an
accuracy within ``--tolerance`` of it. Compute is
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

from surm_core.search.study import describe, metric_value


def grid_rows(runs: list[dict], seed: int | None = None) -> list[dict]:
    """The study's table rows: configurations run on more than one seed, with their mean (or,
    with ``seed``, their accuracy on that seed: the search's trials run on one seed too, and the
    grid's seeds differ by more than the tolerance)."""
    groups = defaultdict(list)
    for r in runs:
        groups[(r["method"], r["label"], r["lr"])].append(r)
    return [{"name": f"{m} {label}".strip(), "lr": lr, "trainable_params": rs[0]["trainable_params"],
             "mean": statistics.fmean(r["acc"] for r in rs if seed is None or r["seed"] == seed)}
            for (m, label, lr), rs in groups.items() if len(rs) > 1]


def levels(rows: list[dict]) -> list[tuple[int, dict]]:
    """The grid's front: (P, its best row with at most P parameters) at every P where that best
    improves (at the P between, the best is the previous level's row)."""
    result = []
    for p in sorted({r["trainable_params"] for r in rows}):
        top = max((r for r in rows if r["trainable_params"] <= p), key=lambda r: r["mean"])
        if not result or top["mean"] > result[-1][1]["mean"]:
            result.append((p, top))
    return result


def finished_in_order(study) -> list:
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    return sorted((t for t in trials if "steps" in t.user_attrs), key=lambda t: t.datetime_complete)


def report(trials: list, runs: list[dict], grid_steps: int, tolerance: float, seed: int | None = None) -> list[str]:
    """The comparison as Markdown lines: a row per level of the grid's front, then a summary.
    ``trials`` are the search's finished trials in the order they finished; ``seed``: the grid's
    accuracies on that seed, not the means of its seeds."""
    grid_total = len(runs) * grid_steps
    spent, total = [], 0
    for t in trials:
        total += t.user_attrs["steps"]
        spent.append(total)
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    lines = [f"grid: {len(runs)} runs × {grid_steps} steps = {grid_total:,} trial-steps; search: {len(trials)} "
             f"trial{'s' * (len(trials) != 1)} ({pruned} pruned), {total:,} trial-steps = {total / grid_total:.2f} of the grid's",
             "", f"| trainable ≤ | grid's best ({'mean of its seeds' if seed is None else f'seed {seed}'}) | search's first within {tolerance * 100:g} points "
             "(one seed) | accuracy | trial-steps until then | / grid |", "|---|---|---|---|---|---|"]
    found = []
    front = levels(grid_rows(runs, seed))
    for p, row in front:
        hit = next((i for i, t in enumerate(trials) if t.state == TrialState.COMPLETE
                    and t.user_attrs["trainable_params"] <= p and metric_value(t) >= row["mean"] - tolerance), None)
        grid = f"{row['name']} (lr {row['lr']:g}) {row['mean']:.4f}"
        if hit is None:
            lines.append(f"| {p:,} | {grid} | not found | | | |")
            continue
        t = trials[hit]
        found.append(spent[hit])
        lines.append(f"| {p:,} | {grid} | trial {t.number}: {describe(t)}, {t.user_attrs['trainable_params']:,} params | "
                     f"{metric_value(t):.4f} | {spent[hit]:,} | {spent[hit] / grid_total:.2f} |")
    n = len(front)
    lines.append("")
    if len(found) == n:
        lines.append(f"every level of the grid's front found after {max(found):,} trial-steps: "
                     f"{max(found) / grid_total:.2f} of the grid's {grid_total:,}")
    else:
        lines.append(f"{len(found)} of the grid's {n} front levels found in {total:,} trial-steps "
                     f"({total / grid_total:.2f} of the grid's {grid_total:,})")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--search", required=True, help="the search directory (its study.db)")
    ap.add_argument("--study", help="study name (default: the search directory's name)")
    ap.add_argument("--grid", default="benchmarks/runs.jsonl", help="the grid study's runs")
    ap.add_argument("--grid-steps", type=int, default=60, help="steps of each grid run")
    ap.add_argument("--tolerance", type=float, default=0.005, help="accuracy a match may lie below the grid's best")
    ap.add_argument("--grid-seed", type=int, help="compare with the grid's runs on this seed (default: the means of its seeds)")
    args = ap.parse_args(argv)
    runs = [json.loads(line) for line in Path(args.grid).read_text().splitlines()]
    search = Path(args.search)
    study = optuna.load_study(study_name=args.study or search.resolve().name, storage=f"sqlite:///{search / 'study.db'}")
    print("\n".join(report(finished_in_order(study), runs, args.grid_steps, args.tolerance, args.grid_seed)))


if __name__ == "__main__":
    main()
