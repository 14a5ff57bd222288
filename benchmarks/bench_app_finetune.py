"""How much the page's explorers slow a fine-tune started from the app: the same short MiniLM run
alone, then while clients hammer the Explore tab with 1024 × 1024 maps.

    python -m benchmarks.bench_app_finetune                       # 20 steps × batch 8, 3 explorers
    python -m benchmarks.bench_app_finetune --steps 40 --explorers 2

The app is served in a subprocess exactly as ``python app.py`` serves it; the fine-tune and the
explorers are ``gradio_client`` clients of it. Printed per phase: the run's wall time from the
request to its result, the time of its training steps alone (from its summary), and how many
explorations the explorers completed meanwhile.
"""
from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from gradio_client import Client

ROOT = Path(__file__).resolve().parent.parent
#: Explorations cycle through these so that no answer comes from a cache.
EXPLORE_CASES = [("toeplitz", 4096), ("kronecker", 4096), ("monarch", 16384), ("lowrank", 16384),
                 ("circulant", 4096), ("symmetric_toeplitz", 2048)]


def serve(port: int, runs_dir: str) -> subprocess.Popen:
    code = f"import app; app.serve('127.0.0.1', {port}, runs_dir={runs_dir!r})"
    log = open(Path(runs_dir) / "server.log", "w")
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def connect(url: str, timeout: float = 120) -> Client:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return Client(url, verbose=False)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def explorer(url: str, stop: threading.Event, done: list) -> None:
    client = Client(url, verbose=False)
    for seed, (family, budget) in enumerate(itertools.cycle(EXPLORE_CASES)):
        if stop.is_set():
            return
        client.predict(family, 1024, 1024, budget, seed, "Z1", "Z-1", api_name="/explore")
        done.append(time.monotonic())


def finetune(client: Client, steps: int, batch_size: int) -> tuple[float, dict]:
    t0 = time.perf_counter()
    summary = client.predict(model="", dataset_file=None, method="circulant", budget=384, steps=steps,
                             batch_size=batch_size, lr=5e-3, seed=0, api_name="/finetune")[0]
    return time.perf_counter() - t0, summary


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--explorers", type=int, default=3)
    ap.add_argument("--port", type=int, default=7871)
    args = ap.parse_args(argv)
    url = f"http://127.0.0.1:{args.port}/"
    with tempfile.TemporaryDirectory() as runs_dir:
        server = serve(args.port, runs_dir)
        try:
            client = connect(url)
            finetune(client, 1, args.batch_size)  # model load and first-call set-up out of the timings
            rows = []
            for explorers in (0, args.explorers):
                stop, done = threading.Event(), []
                threads = [threading.Thread(target=explorer, args=(url, stop, done), daemon=True)
                           for _ in range(explorers)]
                for t in threads:
                    t.start()
                time.sleep(5 if explorers else 0)  # the explorers are busy before the run starts
                wall, summary = finetune(client, args.steps, args.batch_size)
                stop.set()
                train_s = summary["steps_done"] * args.batch_size / summary["examples_per_s"]
                rows.append((explorers, wall, summary["wall_time_s"], train_s, len(done)))
                print(*rows[-1], flush=True)
                for t in threads:
                    t.join()
        except BaseException:
            print((Path(runs_dir) / "server.log").read_text()[-5000:])
            raise
        finally:
            server.terminate()
            server.wait()
    print(f"circulant 384/layer, {args.steps} steps × batch {args.batch_size}, MiniLM on BBC News")
    print(f"{'explorers':>9} {'request s':>10} {'run s':>7} {'steps s':>8} {'explores':>9}")
    for explorers, wall, run_s, train_s, explores in rows:
        print(f"{explorers:>9} {wall:>10.1f} {run_s:>7.1f} {train_s:>8.1f} {explores:>9}")
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
