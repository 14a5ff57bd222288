"""Time what the Explore tab computes for every family, stage by stage: the first answer
(configuration, heatmap, explanation), then singular values and displacement, last eigenvalues.

    python -m benchmarks.bench_explore                          # square 256, 512, 768, 1024 at budget 4·n
    python -m benchmarks.bench_explore --sizes 1024 --budgets min max --memory   # the slider's ends
    python -m benchmarks.bench_explore --sizes 1024 --budgets 16n --reps 5

``--budgets``: ``min`` (the family's smallest), ``max`` (the dense count ``n²``, the slider's top)
or ``<k>n`` (k·n, raised to the family's smallest). Maps above 128 × 128 answer in stages
(``session.explore_stages``), and the time to each is printed. Cells are medians over
repetitions, in seconds since the request; figures are built (plotly objects), then serialized
in their own column (``json s``: what the page then sends), beside ``session.explore_cost``'s upper
estimate of the time (``est. s``) that the server's ``--max-map`` refusal quotes. ``--memory``
adds the peak memory above the resident size before the request (Linux: VmHWM, reset through
/proc/self/clear_refs before the first repetition).
"""
from __future__ import annotations

import argparse
import re
import statistics
import time

from surm_core import FAMILIES
from surm_core.session import budget_range, explore_cost, explore_stages

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


def peak_rss() -> int:
    """This process's peak resident memory (VmHWM), in bytes."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))


def reset_peak() -> int:
    """Reset VmHWM to the current resident size, and return that size."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    return peak_rss()


def budget_for(spec: str, family: str, n: int) -> int:
    smallest, largest = budget_range(family, n, n)
    if spec == "min":
        return smallest
    if spec == "max":
        return largest
    return max(int(spec[:-1]) * n, smallest)


def budget_spec(text: str) -> str:
    if text in ("min", "max") or re.fullmatch(r"[1-9]\d*n", text):
        return text
    raise argparse.ArgumentTypeError(f"a budget is 'min', 'max' or '<k>n' such as '4n', got {text!r}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 768, 1024])
    ap.add_argument("--budgets", type=budget_spec, nargs="+", default=["4n"], help="min, max or <k>n (default 4n)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--memory", action="store_true", help="add the peak memory above the start (Linux)")
    args = ap.parse_args(argv)
    time_stages("circulant", 64, 64)  # imports and first-call set-up out of the timings

    print(f"{'n':>5} {'family':<20} {'budget':>9} {'answer s':>9} {'spectra s':>10} {'eigen s':>8} {'json s':>7} "
          f"{'est. s':>7}" + (f" {'peak MiB':>9}" if args.memory else ""))
    for n in args.sizes:
        for family in args.families:
            for spec in args.budgets:
                budget = budget_for(spec, family, n)
                runs, peak = [], None
                for rep in range(args.reps):
                    start = reset_peak() if args.memory and rep == 0 else None
                    runs.append(time_stages(family, n, budget))
                    if start is not None:
                        peak = (peak_rss() - start) / 2**20
                # a small map answers in one stage: its one time fills every column (the last: json)
                cells = [statistics.median(r[min(i, len(r) - 2)] for r in runs) for i in range(3)]
                cells += [statistics.median(r[-1] for r in runs), explore_cost(n, n).seconds]
                print(f"{n:>5} {family:<20} {budget:>9,} "
                      + " ".join(f"{c:>{w}.3f}" for c, w in zip(cells, (9, 10, 8, 7, 7)))
                      + (f" {max(peak, 0.0):>9.0f}" if args.memory else ""), flush=True)


if __name__ == "__main__":
    main()
