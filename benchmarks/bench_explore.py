"""Time what the Explore tab computes for every family, stage by stage: the first answer
(configuration, heatmap, explanation), then singular values and displacement, last eigenvalues.

    python -m benchmarks.bench_explore                    # square 256, 512, 768, 1024 at budget 4·n
    python -m benchmarks.bench_explore --sizes 1024 --budget-per-row 16 --reps 5

The explorer promises an answer within half a second at sizes up to 1024; maps above 128 × 128
answer in stages (``session.explore_stages``), and the time to each is printed. Cells are
medians over repetitions, in seconds since the request; figures are built (plotly objects) but
serialized in their own column (``json s``: what the page then sends), beside
``session.estimate``'s upper estimate of the time (``est. s``) that the server's ``--max-map``
refusal quotes.
"""
from __future__ import annotations

import argparse
import statistics
import time

from surm_core import FAMILIES
from surm_core.session import budget_range, estimate, explore_stages

FIGURES = ("heatmap", "parameters", "spectrum", "eigenvalues", "displacement")


def time_stages(family: str, n: int, budget: int) -> list[float]:
    """Seconds from the request to each stage of one exploration, then to serialize its figures."""
    t0 = time.perf_counter()
    times = []
    for result in explore_stages(family, n, n, budget, seed=0):
        times.append(time.perf_counter() - t0)
    t1 = time.perf_counter()
    for name in FIGURES:
        getattr(result, name).to_json()
    return times + [time.perf_counter() - t1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 768, 1024])
    ap.add_argument("--budget-per-row", type=int, default=4, help="budget = this × n (raised to the family's minimum)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    args = ap.parse_args(argv)
    time_stages("circulant", 64, 64)  # imports and first-call set-up out of the timings

    print(f"{'n':>5} {'family':<20} {'budget':>9} {'answer s':>9} {'spectra s':>10} {'eigen s':>8} {'json s':>7} "
          f"{'est. s':>7}")
    for n in args.sizes:
        for family in args.families:
            budget = max(args.budget_per_row * n, budget_range(family, n, n)[0])
            runs = [time_stages(family, n, budget) for _ in range(args.reps)]
            # a small map answers in one stage: its one time fills every column
            cells = [statistics.median(r[min(i, len(r) - 2)] for r in runs) for i in range(3)]
            cells.append(statistics.median(r[-1] for r in runs))
            cells.append(estimate(n, n).seconds)
            print(f"{n:>5} {family:<20} {budget:>9,} "
                  + " ".join(f"{c:>{w}.3f}" for c, w in zip(cells, (9, 10, 8, 7, 7))), flush=True)


if __name__ == "__main__":
    main()
