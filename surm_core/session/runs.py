"""The runs directory: the runs table, the runs one Pareto view compares, downloads, and the
reference parameter counts of the parameter chart."""
from __future__ import annotations

import functools
import json
import logging
import zipfile
from pathlib import Path

from ..adapters import AdapterConfig, inject, trainable_report
from ..models import head_names, load_model
from .finetune import run_name

log = logging.getLogger(__name__)

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
