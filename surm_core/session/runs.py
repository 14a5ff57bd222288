"""Runs on disk: whose they are (workspaces), the runs table, what one Pareto view compares,
downloads, deleting, and the reference parameter counts of the parameter chart.

A workspace is a directory of ``runs_dir`` holding one directory per run, named by the run. The
app writes ``run.json`` there (the name, when it started, the dataset's original name and
SHA-256); the engine writes the rest (``metrics.jsonl``, ``summary.json``, the weights).
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import logging
import secrets
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

from ..adapters import AdapterConfig, inject, trainable_report
from ..finetune import BASELINES, complete, load_snippet, predict, run_status
from ..finetune.prepare import base_model
from ..models import DEFAULT_MODEL, head_names

log = logging.getLogger(__name__)

RUN_COLUMNS = ["run", "method", "status", "trainable params", "eval acc", "best acc", "steps", "time (s)",
               "model", "dataset"]
#: The runs table of causal-LM runs: their metrics instead of accuracy (exact match when the
#: completions are short labels; the perplexity, exp(eval loss), is in the summary and the plot).
CAUSAL_COLUMNS = ["run", "method", "status", "trainable params", "eval loss", "exact match", "steps", "time (s)",
                  "model", "dataset"]
#: A finished run's summary needs these to be shown (a summary missing any is skipped with a note).
SUMMARY_KEYS = ("trainable_params", "final_eval_acc", "steps_done", "stopped_reason", "labels", "config")
#: What a download holds: the weights, the engine's records and the app's.
PACKAGED = ("adapter", "trainable.safetensors", "summary.json", "metrics.jsonl", "run.json")
#: The directory of the one workspace everybody shares (``app.py --shared-runs``).
SHARED = "shared"
MAX_KEY = 100


def new_workspace_key() -> str:
    """A fresh, unguessable workspace key: whoever holds it sees the workspace's runs."""
    return secrets.token_urlsafe(12)


def workspace_dir(runs_dir, key: str | None) -> Path:
    """The directory of the workspace ``key`` (``None``: the shared one). The directory is named by
    a digest of the key, so any key is a safe name and the names on disk do not reveal keys."""
    if key is None:
        return Path(runs_dir) / SHARED
    key = str(key).strip()
    if not key or len(key) > MAX_KEY:
        raise ValueError(f"a workspace key has 1 to {MAX_KEY} characters, got {len(key)}")
    return Path(runs_dir) / ("w-" + hashlib.sha256(key.encode()).hexdigest()[:24])


def new_run_dir(workspace, name: str) -> Path:
    """A fresh ``workspace/<name>`` (a run's or a search's), suffixed ``-2``, ``-3``, ... when the name is taken."""
    workspace = Path(workspace)
    workspace.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        path = workspace / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise ValueError(f"could not find a free name like {name!r}; choose another name")


def write_record(run_dir: Path, dataset: dict) -> None:
    record = {"name": run_dir.name, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "dataset": dataset}
    (run_dir / "run.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def load_runs(workspace, active: dict | None = None) -> tuple[list[dict], list[str]]:
    """The runs of ``workspace`` (oldest first) and a one-line note for each directory skipped.

    A run is its ``summary.json`` (once it has one) with ``name``, ``dir`` (its path), ``method``,
    ``config``, ``dataset`` (the record of :func:`write_record`), ``resumable`` and ``status``: how
    it ended (``"completed"``, ``"stopped"``, ``"diverged at step N: ..."``), with ", resumable"
    when it can go on; ``"interrupted"`` for a training process that ended without a summary
    (killed); or the state ``active`` gives its directory (``"queued"``, ``"running"``).
    """
    runs, notes = [], []
    for run_dir in sorted(p for p in Path(workspace).glob("*") if p.is_dir()):
        try:
            runs.append(read_run(run_dir, (active or {}).get(run_dir)))
        except ValueError as e:
            notes.append(f"skipped {run_dir.name}: {e}")
    runs.sort(key=lambda r: r["started"])
    return runs, notes


def read_run(run_dir: Path, state: str | None = None) -> dict:
    record = read_json(run_dir / "run.json")
    if not isinstance(record.get("started"), str) or not isinstance(record.get("dataset"), dict):
        raise ValueError("run.json lacks its start time or dataset")
    run = {"name": run_dir.name, "dir": run_dir, "started": record["started"], "dataset": record["dataset"],
           "resumable": False}
    if (run_dir / "summary.json").exists() and state is None:
        summary = read_json(run_dir / "summary.json")
        missing = [k for k in SUMMARY_KEYS if k not in summary]
        if missing or not isinstance(summary["config"], dict) or "method" not in summary["config"]:
            raise ValueError(f"summary.json lacks {', '.join(missing or ['config.method'])}")
        run.update(summary, name=run["name"], status=summary["stopped_reason"], method=summary["config"]["method"])
    else:
        config = read_json(run_dir / "config.json")
        run.update(config=config, method=config.get("method"), status=state)
    if state is None:
        status = run_status(run_dir)
        if status["state"] == "broken":
            raise ValueError(status["detail"])
        run["resumable"] = status["resumable"]
        if status["state"] in ("interrupted", "running"):
            run.update(status=status["state"], steps_done=status["steps_done"])
        if run["resumable"]:
            run["status"] += ", resumable"
    return run


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path.name} ({type(e).__name__})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path.name} is not a JSON object")
    return value


def model_label(model: str | None) -> str:
    """A model as people name it: the packaged default by its name, a directory by its last part."""
    if not model or model == DEFAULT_MODEL:
        return "all-MiniLM-L6-v2"
    return Path(model).name if Path(model).is_absolute() else model


def run_task(run: dict) -> str:
    """The task a run trained for (runs made before there were tasks classified texts)."""
    return run.get("task") or run["config"].get("task") or "text-classification"


def columns(task: str) -> list[str]:
    """The runs table's columns for runs of ``task``."""
    return CAUSAL_COLUMNS if task == "causal-lm" else RUN_COLUMNS


def runs_rows(runs: list[dict]) -> list[list]:
    """The runs table: one row per run, the columns of :func:`columns` for the runs' task."""
    def rounded(x, digits):
        return None if x is None else round(x, digits)

    def metrics(r):
        if run_task(r) == "causal-lm":
            return [rounded(r.get("final_eval_loss"), 4), rounded(r.get("final_eval_acc"), 4)]
        return [rounded(r.get("final_eval_acc"), 4), rounded(r.get("best_eval_acc"), 4)]

    return [[
        r["name"], r["method"], r["status"], r.get("trainable_params"), *metrics(r), r.get("steps_done"),
        rounded(r.get("wall_time_s"), 1), model_label(r["config"].get("model")), r["dataset"].get("name"),
    ] for r in runs]


def filter_runs(runs: list[dict], query: str) -> list[dict]:
    """The runs whose name, method, status, model or dataset contain every word of ``query``."""
    words = (query or "").lower().split()
    return [r for r in runs if all(w in " ".join(map(str, runs_rows([r])[0])).lower() for w in words)]


def evaluated(runs: list[dict]) -> list[dict]:
    """The runs with a summary (finished, stopped, diverged): the ones the charts can draw."""
    return [r for r in runs if "trainable_params" in r]


def comparable(runs: list[dict], like: dict) -> list[dict]:
    """The runs on the same model and dataset as ``like``: only they belong in one Pareto view."""
    key = (like["config"].get("model"), like["dataset"])
    return [r for r in evaluated(runs) if (r["config"].get("model"), r["dataset"]) == key]


@dataclasses.dataclass
class RunsView:
    """What the runs part of the page shows: the table (``rows`` under ``columns``, filtered),
    notes on skipped directories, the runs the charts compare (``charted``) with their
    ``references``, and the names of the task's runs of the workspace (the run picker)."""

    columns: list[str]
    rows: list[list]
    notes: list[str]
    charted: list[dict]
    references: dict[str, int]
    names: list[str]


def runs_view(workspace, active: dict | None = None, query: str = "", selected: str | None = None,
              task: str = "text-classification") -> RunsView:
    """The runs of ``task`` in ``workspace`` whose table cells hold every word of ``query``; the
    charts compare those on the model and data of the ``selected`` run (else of the latest
    evaluated one). Runs of one task at a time: their metrics differ (accuracy, eval loss)."""
    runs, notes = load_runs(workspace, active)
    runs = [r for r in runs if run_task(r) == task]
    shown = filter_runs(runs, query)
    done = evaluated(shown)
    focus = next((r for r in done if r["name"] == selected), done[-1] if done else None)
    references = {}
    if focus:
        try:
            references = reference_params(focus["config"]["model"], task, tuple(focus["labels"]))
        except ValueError:  # the model has gone since: the chart shows the runs alone
            pass
    return RunsView(columns(task), runs_rows(shown), notes, comparable(shown, focus) if focus else [], references,
                    [r["name"] for r in runs])


def find_run(runs: list[dict], name: str) -> dict:
    for r in runs:
        if r["name"] == name:
            return r
    raise ValueError(f"no run named {name!r} in your workspace")


#: The try box classifies one text of at most this many characters.
MAX_TRY_CHARS = 10_000


def check_task_of(run: dict, task: str, action: str) -> None:
    if run_task(run) != task:
        raise ValueError(f"run {run['name']!r} is a {run_task(run)} run; {action} needs a {task} run")
    if "trainable_params" not in run:
        raise ValueError(f"run {run['name']!r} has no trained weights to try ({run['status']})")


def classify(run: dict, text) -> dict[str, float]:
    """``{label: probability}`` of ``text`` by a finished (or stopped) text-classification run."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("type a text to classify")
    if len(text) > MAX_TRY_CHARS:
        raise ValueError(f"the text has {len(text):,} characters; try at most {MAX_TRY_CHARS:,}")
    check_task_of(run, "text-classification", "classifying a text")
    return predict(run["dir"], [text])[0]


def classify_image(run: dict, image) -> dict[str, float]:
    """``{label: probability}`` of the image file ``image`` by a finished image-classification run."""
    if not image:
        raise ValueError("choose an image to classify")
    check_task_of(run, "image-classification", "classifying an image")
    return predict(run["dir"], [str(image)])[0]


#: Most tokens the try box generates for one prompt.
MAX_NEW_TOKENS = 256


def generate(run: dict, prompt, max_new_tokens=32) -> str:
    """The greedy completion of ``prompt`` by a finished causal-LM run, up to ``max_new_tokens``
    tokens (at most :data:`MAX_NEW_TOKENS`)."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("type a prompt to complete")
    if len(prompt) > MAX_TRY_CHARS:
        raise ValueError(f"the prompt has {len(prompt):,} characters; try at most {MAX_TRY_CHARS:,}")
    if isinstance(max_new_tokens, float) and max_new_tokens.is_integer():
        max_new_tokens = int(max_new_tokens)
    if (isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int)
            or not 1 <= max_new_tokens <= MAX_NEW_TOKENS):
        raise ValueError(f"max new tokens must be a whole number from 1 to {MAX_NEW_TOKENS}, got {max_new_tokens!r}")
    check_task_of(run, "causal-lm", "completing a prompt")
    return complete(run["dir"], [prompt], max_new_tokens)[0]


#: How the other tasks' runs load their base model (the snippet is written for text classifiers).
LOADERS = {"image-classification": "load_image_model(model, num_labels=len(labels))",
           "causal-lm": "load_causal_lm(model)"}


def snippet(run: dict) -> str:
    """The Python that loads the run's download (``<name>.zip``) onto its base model; for an image
    or causal-LM run, a comment that says how."""
    task = run_task(run)
    if task == "text-classification":
        return load_snippet(run["dir"], zip_name=f"{run['name']}.zip")
    weights = (f"model.load_state_dict(safetensors.torch.load_file('{run['name']}/trainable.safetensors'), strict=False)"
               if run["config"]["method"] in BASELINES else f"surm_core.load_adapter(model, '{run['name']}/adapter')")
    return (f"# A {task} run: unzip {run['name']}.zip into {run['name']}/, load the base model with\n"
            f"# surm_core.models.{LOADERS[task]}, then\n# {weights}\n")


def delete_run(run: dict) -> None:
    """Remove a run's directory (not one that is running or waiting to)."""
    if run["status"] in ("queued", "running"):
        raise ValueError(f"run {run['name']!r} is {run['status']}; stop it before deleting it")
    shutil.rmtree(run["dir"])


#: A zip for download is kept this long: Gradio copies it into its own cache at once (where only
#: the session that asked knows its address).
ZIP_KEEP_S = 300


@functools.cache
def _zips() -> tempfile.TemporaryDirectory:
    """Where zips are written: a temporary directory of this process, removed when it exits."""
    return tempfile.TemporaryDirectory(prefix="surm-zips-")


def package_run(run: dict) -> Path:
    """Zip a finished run's weights with its summary, metrics and record, for download; returns the
    zip (in a temporary directory, removed a few minutes later).

    The zip holds ``adapter/`` (an adapter run, loadable with ``surm_core.load_adapter``) or
    ``trainable.safetensors`` (the baselines), ``summary.json``, ``metrics.jsonl`` and ``run.json``.
    """
    if "trainable_params" not in run:
        raise ValueError(f"run {run['name']!r} has no trained weights to download yet ({run['status']})")
    folder = Path(_zips().name)
    for old in folder.glob("*/*.zip"):  # handed to Gradio long ago
        if time.time() - old.stat().st_mtime > ZIP_KEEP_S:
            shutil.rmtree(old.parent, ignore_errors=True)
    out = Path(tempfile.mkdtemp(dir=folder)) / f"{run['name']}.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in PACKAGED:
            path = run["dir"] / name
            for p in sorted([path, *path.rglob("*")] if path.is_dir() else [path]):
                if p.is_file():
                    zf.write(p, p.relative_to(run["dir"]).as_posix())
    return out


@functools.lru_cache(maxsize=8)
def reference_params(model: str, task: str, labels: tuple[str, ...]) -> dict[str, int]:
    """Trainable parameters of LoRA r=8 (on the default targets) and of full fine-tuning for
    ``model`` trained for ``task`` (a classifier with a head for ``labels``): the reference
    lines of the parameter chart. Empty when the model has no default targets for LoRA (the
    chart then shows the runs alone).
    """
    net = copy.deepcopy(base_model(model, task, labels))
    head = [] if task == "causal-lm" else head_names(net)  # a causal LM keeps its pretrained head
    try:
        inject(net, AdapterConfig("lowrank", hparams={"r": 8}, modules_to_save=head or None))
    except ValueError:
        log.warning("no LoRA reference for %s: no default adapter targets", model)
        return {}
    report = trainable_report(net)
    return {"LoRA r=8": report["trainable_params"], "full fine-tuning": report["base_params"]}
