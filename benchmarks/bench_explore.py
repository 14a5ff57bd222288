"""Time what the Explore tab computes for every family, stage by stage: the first answer
(configuration, heatmap, parameters, explanation), then every figure (estimates where the exact
values need a dense O(n³) decomposition), then the exact ones.

    python -m benchmarks.bench_explore                          # square 256, 512, 768, 1024 at budget 4·n
    python -m benchmarks.bench_explore --sizes 1024 --budgets min max --memory   # the slider's ends
    python -m benchmarks.bench_explore --sizes 1024 --budgets 16n --reps 5

``--budgets``: ``min`` (the family's smallest), ``max`` (the dense count ``n²``, the slider's top)
or ``<k>n`` (k·n, raised to the family's smallest). Maps above 128 × 128 answer in stages
(``session.explore_stages``). Columns, in seconds since the request (medians over repetitions):
``answer s`` (the first figures), ``all figures s`` (every panel drawn, some perhaps estimates;
``est.`` names how many), ``exact s`` (the last stage); then ``json s``, the time to serialize
the figures (what the page then sends), and ``cost s``, ``session.explore_cost``'s upper estimate
that the server's ``--max-map`` refusal quotes. ``--memory`` adds the peak memory above the
resident size before the request (Linux: VmHWM, reset through /proc/self/clear_refs before the
first repetition). The first line times one dense 1024 × 1024 SVD: how busy the CPU is.

Like the app (``app.py``), the benchmark lets idle OpenMP workers sleep (``OMP_WAIT_POLICY=PASSIVE``)
unless the variable is set.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as app.py: set before torch loads OpenMP

import argparse  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from surm_core import FAMILIES  # noqa: E402
from surm_core.session import budget_range, explore_cost, explore_stages  # noqa: E402

FIGURES = ("heatmap", "parameters", "spectrum", "eigenvalues", "displacement")


def time_stages(family: str, n: int, budget: int) -> tuple[list[float], int]:
    """Seconds from the request to the first answer, to every figure drawn, to the exact last
    stage, and to serialize its figures; and how many figures were first estimates."""
    t0 = time.perf_counter()
    times, estimates = [], 0
    for result in explore_stages(family, n, n, budget, seed=0):
        times.append(time.perf_counter() - t0)
        estimates = max(estimates, len(result.estimates))
    drawn = times[min(1, len(times) - 1)]  # a staged map's second stage draws every panel
    t1 = time.perf_counter()
    for name in FIGURES:
        getattr(result, name).to_json()
    return [times[0], drawn, times[-1], time.perf_counter() - t1], estimates


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
    X = torch.randn(1024, 1024, dtype=torch.float64)
    t0 = time.perf_counter()
    torch.linalg.svdvals(X)
    print(f"load: one dense 1024 × 1024 svdvals took {time.perf_counter() - t0:.2f} s")

    print(f"{'n':>5} {'family':<20} {'budget':>9} {'answer s':>9} {'all figures s':>13} {'est.':>4} {'exact s':>8} "
          f"{'json s':>7} {'cost s':>7}" + (f" {'peak MiB':>9}" if args.memory else ""))
    for n in args.sizes:
        for family in args.families:
            for spec in args.budgets:
                budget = budget_for(spec, family, n)
                runs, peak, estimates = [], None, 0
                for rep in range(args.reps):
                    start = reset_peak() if args.memory and rep == 0 else None
                    times, estimated = time_stages(family, n, budget)
                    runs.append(times)
                    estimates = max(estimates, estimated)
                    if start is not None:
                        peak = (peak_rss() - start) / 2**20
                answer, drawn, exact, json = (statistics.median(r[i] for r in runs) for i in range(4))
                print(f"{n:>5} {family:<20} {budget:>9,} {answer:>9.3f} {drawn:>13.3f} {estimates:>4} {exact:>8.3f} "
                      f"{json:>7.3f} {explore_cost(n, n).seconds:>7.2g}"
                      + (f" {max(peak, 0.0):>9.0f}" if args.memory else ""), flush=True)


if __name__ == "__main__":
    main()
