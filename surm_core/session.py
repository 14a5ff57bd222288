"""What the explorer app needs besides widgets: the results each tab shows, fine-tuning runs in a
background thread, and the runs directory (table, Pareto view, downloads).

Plain Python (no Gradio), so all of it is tested without a browser; ``app.py`` only wires widgets
to these functions. Bad input raises ``ValueError`` with a message meant for the page.

>>> result = explore("circulant", 64, 64, budget=64, seed=0)
>>> result.config["hparams"], result.config["num_params"]
({'block': 64}, 64)
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import threading
import time
import zipfile
from pathlib import Path

import plotly.graph_objects as go

import visualize
from visualize.compare import TARGETS
from visualize.style import empty_figure
from .adapters import AdapterConfig, inject, trainable_report
from .explain import describe
from .families import FAMILIES, family_class, from_budget
from .families.base import check_size
from .finetune import BASELINES, BBC_NEWS, FinetuneConfig, run
from .finetune.engine import describe as describe_device
from .finetune.engine import pick_device
from .models import DEFAULT_MODEL, head_names, load_model

log = logging.getLogger(__name__)

#: Largest side the Explore and Compare tabs accept: every interaction up to it stays interactive.
MAX_EXPLORE_SIZE = 1024
#: Shift operators offered for the displacement ``A M − M B`` (``Z_f``: ones below the diagonal,
#: ``f`` in the top-right corner).
OPERATORS = ("Z1", "Z-1", "Z0")
#: Up to this many entries (128 × 128) a whole exploration takes ~0.05 s on a 2-core CPU; above,
#: the heatmap is shown first and the spectral plots follow as they are computed.
QUICK_CELLS = 128 * 128


# -- Explore ---------------------------------------------------------------------------------------
def check_explore_size(name: str, value) -> int:
    value = check_size(name, value)
    if value > MAX_EXPLORE_SIZE:
        raise ValueError(f"{name} = {value} is larger than the explorer shows; use at most {MAX_EXPLORE_SIZE}")
    return value


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return seed


def budget_range(family: str, d_out: int, d_in: int) -> tuple[int, int]:
    """``(smallest budget a member of family fits, largest worth offering)`` for a d_out × d_in map.

    The largest is the dense map's ``d_out · d_in`` (or the smallest, when even that exceeds it).

    >>> budget_range("lowrank", 64, 32)
    (96, 2048)
    """
    cls = family_class(family)
    d_out, d_in = check_explore_size("d_out", d_out), check_explore_size("d_in", d_in)
    smallest = cls.count(d_out, d_in, **cls.smallest(d_out, d_in))
    return smallest, max(smallest, d_out * d_in)


def clamp_budget(family: str, d_out: int, d_in: int, budget) -> int:
    """``budget`` moved into :func:`budget_range` (a new family or size keeps the budget if it can)."""
    low, high = budget_range(family, d_out, d_in)
    return low if budget is None else max(low, min(high, int(budget)))


@dataclasses.dataclass
class Exploration:
    """Everything the Explore tab shows for one member of a family."""

    config: dict  # family, shape, hparams, num_params, budget, smallest_budget, dense_params
    heatmap: go.Figure
    spectrum: go.Figure
    eigenvalues: go.Figure | None  # None: the map is not square
    displacement: go.Figure
    explanation: str
    complete: bool = True  # False: some figures are "computing…" placeholders (a later stage follows)


def explore_stages(family: str, d_out: int, d_in: int, budget: int, seed: int = 0,
                   A: str = "Z1", B: str = "Z-1"):
    """Yield the :class:`Exploration` of the most expressive random member of ``family`` within
    ``budget`` (``from_budget``, in float64 so that its structure is exact at float64's
    precision); its spectrum overlays LoRA (lowrank) at the same budget when that fits.

    A map of more than ``QUICK_CELLS`` entries is yielded in three stages, each with the figures
    computed so far and "computing…" placeholders for the rest: first the configuration,
    heatmap and explanation (the page answers at once: ≤ 0.2 s at 1024 × 1024 on a 2-core
    CPU), then the singular values and displacement (structure-aware: FFTs, small cores, random
    sketches of low-rank residuals; a dense SVD only where no structure helps), last the
    eigenvalues (a dense ``eigvals`` for families without an eigen-structure: ~1.7 s at 1024).
    Later stages reuse the earlier figures (the same objects), so a caller can skip resending
    them; the last is ``complete``.
    """
    d_out, d_in = check_explore_size("d_out", d_out), check_explore_size("d_in", d_in)
    seed = check_seed(seed)
    for name, op in (("A", A), ("B", B)):
        if op not in OPERATORS:
            raise ValueError(f"displacement operator {name} must be one of {', '.join(OPERATORS)}, got {op!r}")
    m = from_budget(family, d_out, d_in, budget, init="random", seed=seed).double()
    overlay = {family: m}
    if family != "lowrank" and budget >= budget_range("lowrank", d_out, d_in)[0]:
        overlay["lowrank (LoRA)"] = from_budget("lowrank", d_out, d_in, budget, init="random", seed=seed).double()
    config = {
        "family": family, "shape": [d_out, d_in], "hparams": dict(m.hparams),
        "num_params": m.num_params, "budget": int(budget),
        "smallest_budget": budget_range(family, d_out, d_in)[0], "dense_params": d_out * d_in,
    }
    result = Exploration(config, visualize.heatmap(m), spectrum=None, eigenvalues=None, displacement=None,
                         explanation=describe(family), complete=False)
    square, staged = d_out == d_in, d_out * d_in > QUICK_CELLS
    if staged:
        result = dataclasses.replace(
            result, spectrum=empty_figure("Singular values", "computing…"),
            eigenvalues=empty_figure("Eigenvalues", "computing…") if square else None,
            displacement=empty_figure("Displacement", "computing…"))
        yield result
    result = dataclasses.replace(result, spectrum=visualize.spectrum(overlay),
                                 displacement=visualize.displacement_figure(m, A=A, B=B), complete=not square)
    if staged and square:
        yield result
    if square:
        result = dataclasses.replace(result, eigenvalues=visualize.eigenvalue_plot(m), complete=True)
    yield result


def explore(family: str, d_out: int, d_in: int, budget: int, seed: int = 0,
            A: str = "Z1", B: str = "Z-1") -> Exploration:
    """The complete :class:`Exploration` (the last of :func:`explore_stages`)."""
    *_, complete = explore_stages(family, d_out, d_in, budget, seed, A, B)
    return complete


# -- Compare ---------------------------------------------------------------------------------------
TARGET_KINDS = TARGETS  # gaussian, psd, minilm_query
TABLE_COLUMNS = ["family", "params", "hyperparameters", "rank", "displacement rank", "relative error"]
#: LDR's nearest member is fitted iteratively (L-BFGS): up to a budget of 32·n (displacement rank
#: 16 for one n × n tile) a fit takes about a second on a 2-core CPU, at rank 64 and above from
#: 20 s to minutes. Compare fits LDR up to this many parameters per row of the target.
LDR_BUDGET_PER_ROW = 32


@dataclasses.dataclass
class Comparison:
    """What the Compare tab shows for one target matrix."""

    curves: go.Figure
    rows: list[list]  # TABLE_COLUMNS, one row per family
    note: str  # what is left out or still being computed


def format_hparams(hparams: dict) -> str:
    """``{"block": 16, "r": 2}`` as ``"block=16, r=2"``."""
    return ", ".join(f"{k}={v}" for k, v in hparams.items())


def compare_budgets(n: int) -> list[int]:
    """Budgets of the approximation curves: 16, 64, 256, … (×4) up to the dense ``n²``, which
    ends the list.

    >>> compare_budgets(24)
    [16, 64, 256, 576]
    """
    budgets = [16]
    while budgets[-1] * 4 < n * n:
        budgets.append(budgets[-1] * 4)
    return budgets + [n * n] if n * n > budgets[-1] else budgets


def compare_stages(kind: str, n: int, budget: int, seed: int = 0):
    """Yield the :class:`Comparison` for an ``n × n`` target: the relative error of every
    family's nearest member against budget, and a table of the families at ``budget``.

    First without LDR (all the others take well under a second), then complete: LDR is fitted
    iteratively, and only up to ``LDR_BUDGET_PER_ROW · n`` parameters.
    """
    n, budget, seed = check_explore_size("n", n), check_size("budget", budget), check_seed(seed)
    W = visualize.target_matrix(kind, n, seed)
    budgets, ldr_limit = compare_budgets(n), LDR_BUDGET_PER_ROW * n
    others = [f for f in FAMILIES if f != "ldr"]
    curves = visualize.approximation_curves(W, budgets, families=others)
    yield Comparison(curves, _table_rows(W, budget, others), "ldr: fitting…")
    complete = go.Figure(curves)
    complete.add_traces(visualize.approximation_curves(W, [b for b in budgets if b <= ldr_limit], ["ldr"]).data)
    note = (f"ldr is fitted iteratively and shown up to {ldr_limit:,} parameters "
            f"({LDR_BUDGET_PER_ROW}·n): larger fits take minutes on a CPU.")
    families = list(FAMILIES) if budget <= ldr_limit else others
    yield Comparison(complete, _table_rows(W, budget, families), note)


def compare(kind: str, n: int, budget: int, seed: int = 0) -> Comparison:
    """The complete :class:`Comparison` (the last of :func:`compare_stages`)."""
    *_, complete = compare_stages(kind, n, budget, seed)
    return complete


def _table_rows(W, budget: int, families: list[str]) -> list[list]:
    return [[row["family"], row["params"], format_hparams(row["hparams"]), row["rank"],
             row["displacement_rank"], round(row["rel_error"], 4)]
            for row in visualize.approximation_table(W, budget, families)]


# -- Fine-tune -------------------------------------------------------------------------------------
#: Methods offered, as (label, value): the families an adapter can use, then the two baselines.
#: Dense is left out: as an adapter it is full fine-tuning of the targeted layers.
METHODS = [("lowrank (LoRA)" if f == "lowrank" else f, f) for f in FAMILIES if f != "dense"] + [
    ("full fine-tuning", "full"), ("head only", "head-only")]


def device_name() -> str:
    """The device a fine-tune started now runs on ("cpu" or "cuda:0 (<GPU name>)")."""
    return describe_device(pick_device("auto"))


def finetune_config(runs_dir, model: str | None, dataset: str | None, method: str, budget,
                    steps, batch_size, lr, seed, text_column: str | None = None,
                    label_column: str | None = None) -> FinetuneConfig:
    """The engine's config for one run from the app's inputs, writing into a new directory of
    ``runs_dir``. Empty model/dataset mean the defaults (MiniLM, BBC News); ``budget`` is ignored
    by the baselines ("full", "head-only").
    """
    if method not in {value for _, value in METHODS}:
        raise ValueError(f"method must be one of {', '.join(v for _, v in METHODS)}, got {method!r}")
    config = FinetuneConfig(
        model=(model or "").strip() or DEFAULT_MODEL,
        dataset=dataset or BBC_NEWS,
        text_column=(text_column or "").strip() or None,
        label_column=(label_column or "").strip() or None,
        method=method,
        budget=None if method in BASELINES else check_size("budget", budget),
        steps=check_size("steps", steps),
        batch_size=check_size("batch size", batch_size),
        lr=lr,
        seed=check_seed(seed),
    )
    config.out_dir = str(new_run_dir(runs_dir, run_name(config.to_dict())))
    return config


def run_name(config: dict) -> str:
    """A short label for a run: its method, and its per-layer budget for an adapter."""
    return config["method"] if config.get("budget") is None else f"{config['method']} {config['budget']}"


def new_run_dir(runs_dir, name: str) -> Path:
    """A fresh ``runs_dir/<time>-<name>`` (suffixed when that exists): runs sort by start time."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    stem = time.strftime("%Y%m%d-%H%M%S") + "-" + name.replace(" ", "-")
    for n in range(1000):
        path = runs_dir / (stem if n == 0 else f"{stem}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run directory under {runs_dir}")


#: One fine-tune at a time on this process's device, even while a stopped run is still winding
#: down (its page closed) and the next one has already been let through Gradio's queue.
_DEVICE = threading.Lock()


class FinetuneJob:
    """One engine run in a background thread, watched by polling ``events``, ``summary``, ``error``.

    >>> job = FinetuneJob(config).start()      # doctest: +SKIP
    >>> while not job.wait(1.0): print(job.events[-1:])   # doctest: +SKIP
    """

    def __init__(self, config: FinetuneConfig):
        self.config = config
        self.events: list[dict] = []
        self.summary: dict | None = None
        self.error: str | None = None
        self.waiting_for_device = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"finetune {config.out_dir}", daemon=True)

    def start(self) -> "FinetuneJob":
        self._thread.start()
        return self

    def _run(self) -> None:
        with _DEVICE:
            self.waiting_for_device = False
            try:
                self.summary = run(self.config, on_event=self.events.append, should_stop=self._stop.is_set)
            except ValueError as e:  # bad model, dataset or settings: the engine's message says which
                self.error = str(e)
            except Exception as e:  # a failure the user cannot fix: say what it was, keep serving
                log.exception("fine-tuning run %s failed", self.config.out_dir)
                self.error = f"{type(e).__name__}: {e} (details in the server log)"
            if self.error is not None:
                _remove_if_empty(self.config.out_dir)

    def stop(self) -> None:
        """Ask the run to stop; it ends within one step and keeps what it reached."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds; True once the run has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def status(self) -> str:
        """One line for people: where the run is."""
        if self.error is not None:
            return f"Failed: {self.error}"
        if self.waiting_for_device:
            return "Waiting for the previous run to release the device…"
        if not self.events:
            return "Loading the model and the data…"
        e = self.events[-1]
        text = f"Step {e['step']}/{e['total_steps']} on {e['device']}"
        if e.get("loss") is not None:
            text += f" · loss {e['loss']:.3f} · batch accuracy {e['train_acc']:.2f}"
        evals = [x["eval_acc"] for x in self.events if x.get("eval_acc") is not None]
        if evals:
            text += f" · eval accuracy {evals[-1]:.3f}"
        if e.get("examples_per_s"):
            text += f" · {e['examples_per_s']:.1f} examples/s"
        if self.summary is not None:
            text = f"Done ({self.summary['stopped_reason']}): " + text
        return text

    def progress(self) -> float:
        """Fraction of the steps done, in [0, 1]."""
        if not self.events:
            return 0.0
        return min(1.0, self.events[-1]["step"] / self.events[-1]["total_steps"])


def _remove_if_empty(directory) -> None:
    """A run that failed before writing anything leaves no empty directory behind."""
    try:
        Path(directory).rmdir()
    except OSError:
        pass


# -- Runs directory --------------------------------------------------------------------------------
RUN_COLUMNS = ["run", "method", "trainable params", "final eval acc", "best eval acc", "steps",
               "examples/s", "wall time (s)", "device", "stopped", "model", "dataset"]


def load_runs(runs_dir) -> list[dict]:
    """Summaries of the finished runs in ``runs_dir`` (oldest first), with their directory's name
    (``dir``), a label (``name``, e.g. "circulant 4096") and ``method``.

    A directory without a readable ``summary.json`` (running, or failed) is left out.
    """
    runs = []
    for path in sorted(Path(runs_dir).glob("*/summary.json")):
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        config = summary.get("config", {})
        runs.append({**summary, "dir": path.parent.name, "name": run_name(config), "method": config.get("method")})
    return runs


def runs_rows(runs: list[dict]) -> list[list]:
    """The runs table: one row per run, columns :data:`RUN_COLUMNS`."""
    def rounded(x, digits):
        return None if x is None else round(x, digits)

    return [[
        r["dir"], r["method"], r["trainable_params"], rounded(r.get("final_eval_acc"), 4),
        rounded(r.get("best_eval_acc"), 4), r.get("steps_done"), rounded(r.get("examples_per_s"), 1),
        rounded(r.get("wall_time_s"), 1), r.get("device"), r.get("stopped_reason"),
        Path(r["config"].get("model", "")).name, Path(r["config"].get("dataset", "")).name,
    ] for r in runs]


def comparable(runs: list[dict], like: dict) -> list[dict]:
    """The runs on the same model and dataset as ``like``: only they belong in one Pareto view."""
    key = (like["config"].get("model"), like["config"].get("dataset"))
    return [r for r in runs if (r["config"].get("model"), r["config"].get("dataset")) == key]


def package_run(run_dir) -> Path:
    """Zip the run's trained weights with its summary and metrics, for download; returns the zip.

    The zip holds ``adapter/`` (an adapter run, loadable with ``surm_core.load_adapter``) or
    ``trainable.safetensors`` (the baselines), ``summary.json`` and ``metrics.jsonl``.
    """
    run_dir = Path(run_dir)
    out = run_dir / f"{run_dir.name}.zip"
    files = [p for p in sorted(run_dir.rglob("*")) if p.is_file() and p != out]
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in files:
            zf.write(p, p.relative_to(run_dir).as_posix())
    return out


@functools.lru_cache(maxsize=8)
def reference_params(model: str, num_labels: int) -> dict[str, int]:
    """Trainable parameters of LoRA r=8 (on the default targets) and of full fine-tuning for
    ``model`` with a ``num_labels`` head: the reference lines of the parameter chart. Empty when
    the model has no default targets for LoRA (the chart then shows the runs alone).
    """
    net, _ = load_model(model, num_labels=num_labels)
    try:
        lora = AdapterConfig("lowrank", hparams={"r": 8}, modules_to_save=head_names(net))
        inject(net, lora)
    except ValueError:
        log.warning("no LoRA reference for %s: no default adapter targets", model)
        return {}
    report = trainable_report(net)
    return {"LoRA r=8": report["trainable_params"], "full fine-tuning": report["base_params"]}
