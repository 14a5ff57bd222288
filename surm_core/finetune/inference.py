"""Try a trained run: classify texts with it, or get the Python that loads its download elsewhere.

>>> predict("runs/circ", ["Shares fell sharply after the results"])  # doctest: +SKIP
[{'business': 0.93, 'entertainment': 0.01, 'politics': 0.03, 'sports': 0.01, 'tech': 0.02}]
>>> print(load_snippet("runs/circ"))  # doctest: +SKIP
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..adapters import load_adapter
from ..models import DEFAULT_MODEL
from .config import BASELINES, FinetuneConfig
from .task import task_for

#: Weights a finished run leaves: an adapter directory, or the baselines' trainable tensors.
ADAPTER_DIR, BASELINE_FILE = "adapter", "trainable.safetensors"
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # in ADAPTER_DIR, as surm_core.save_adapter writes it


def predict(run_dir, texts: list[str]) -> list[dict[str, float]]:
    """``{label: probability}`` for each text, from the run's base model with its trained weights
    (for an image classifier the strings are image paths; for a causal language model each
    prompt's greedy completion, a string, comes back).

    ``run_dir`` must hold a completed or stopped run (its ``summary.json`` and weights). The
    probabilities of a text sum to 1. The loaded model is cached (per run directory and weights
    file), so repeated calls cost one forward pass. ``ValueError`` for a run without weights
    or texts that are not a list of strings.
    """
    if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"texts must be a list of strings, got {type(texts).__name__}")
    run_dir = Path(run_dir).resolve()
    _, weights = trained_run(run_dir)
    tensors = weights / ADAPTER_WEIGHTS if weights.is_dir() else weights
    model, task = load_trained(run_dir, tensors.stat().st_mtime_ns)
    return task.predict(model, list(texts))


def complete(run_dir, prompts: list[str], max_new_tokens: int = 32) -> list[str]:
    """Greedy completions of ``prompts`` by a finished causal-LM run (its base model with its
    trained weights), up to ``max_new_tokens`` tokens each. ``ValueError`` for a run of another
    task, or one without weights.

    >>> complete("runs/reviews", ["review : great fun sentiment :"], max_new_tokens=4)  # doctest: +SKIP
    [' positive']
    """
    if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts must be a list of strings, got {type(prompts).__name__}")
    run_dir = Path(run_dir).resolve()
    summary, weights = trained_run(run_dir)
    if summary.get("task") != "causal-lm":
        raise ValueError(f"{run_dir.name} is a {summary.get('task', 'text-classification')} run; only a causal-lm run "
                         "completes prompts")
    tensors = weights / ADAPTER_WEIGHTS if weights.is_dir() else weights
    model, task = load_trained(run_dir, tensors.stat().st_mtime_ns)
    return task.predict(model, list(prompts), max_new_tokens=max_new_tokens)


def trained_run(run_dir: Path) -> tuple[dict, Path]:
    """The run's summary and weights path, or ``ValueError`` saying why it has none."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        reason, method = summary["stopped_reason"], summary["config"]["method"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"{run_dir.name} is not a finished run (no readable summary.json)") from None
    if reason not in ("completed", "stopped"):
        raise ValueError(f"{run_dir.name} has no trained weights: it ended with {reason!r}")
    weights = run_dir / (BASELINE_FILE if method in BASELINES else ADAPTER_DIR)
    if not weights.exists():
        raise ValueError(f"{run_dir.name} has no trained weights ({weights.name} is missing)")
    return summary, weights


@functools.lru_cache(maxsize=4)
def load_trained(run_dir: Path, weights_stamp: int):
    """``(model, task)`` of a finished run on the CPU, in eval mode; ``weights_stamp`` (the weight
    tensors' modification time) keys the cache, so a resumed and finished-again run is reloaded."""
    summary, weights = trained_run(run_dir)
    config = FinetuneConfig.from_dict(summary["config"])
    task = task_for(config, label_names=summary["labels"])
    model, _ = task.load_model()
    if config.method in BASELINES:
        tensors = load_file(weights)
        names = dict(model.named_parameters())
        if not set(tensors) <= set(names) or any(tensors[n].shape != names[n].shape for n in tensors):
            raise ValueError(f"{weights} does not fit the run's base model")
        with torch.no_grad():
            for name, t in tensors.items():
                names[name].copy_(t)
    else:
        load_adapter(model, weights)
    return model.eval(), task


def load_snippet(run_dir, zip_name: str | None = None, text: str = "Type a sentence to classify here.") -> str:
    """The Python that loads the run's downloaded zip (``zip_name``, default ``<run name>.zip``:
    the run directory's files) onto its base model and classifies ``text``, using only the
    public ``surm_core`` API (plus ``torch``; ``safetensors`` for the baselines).
    """
    run_dir = Path(run_dir)
    summary, _ = trained_run(run_dir.resolve())
    if summary.get("task", "text-classification") != "text-classification":
        raise ValueError(f"load_snippet writes code for text-classification runs; {run_dir.name} is a {summary['task']} run")
    config = summary["config"]
    name = run_dir.resolve().name
    zip_name = zip_name or f"{name}.zip"
    model_arg = "" if config["model"] == DEFAULT_MODEL else f"{config['model']!r}, "
    lines = [
        f"# The fine-tuned {config['method']} run {name!r} on its base model: unzip, load, classify.",
        "import zipfile",
        "",
        "import torch",
    ]
    if config["method"] in BASELINES:
        lines += [
            "from safetensors.torch import load_file",
            "from surm_core import load_model",
            "",
            f"zipfile.ZipFile({zip_name!r}).extractall({name!r})",
            f"model, tokenizer = load_model({model_arg}num_labels={len(summary['labels'])})",
            f"model.load_state_dict(load_file({f'{name}/{BASELINE_FILE}'!r}), strict=False)  # the trained tensors",
        ]
    else:
        lines += [
            "from surm_core import load_adapter, load_model",
            "",
            f"zipfile.ZipFile({zip_name!r}).extractall({name!r})",
            f"model, tokenizer = load_model({model_arg}num_labels={len(summary['labels'])})",
            f"load_adapter(model, {f'{name}/{ADAPTER_DIR}'!r})  # surm_core.merge(model) folds it into the weights",
        ]
    lines += [
        f"labels = {summary['labels']!r}",
        "",
        "model.eval()",
        "with torch.inference_mode():",
        f"    batch = tokenizer([{text!r}], truncation=True, max_length={config['max_length']}, return_tensors=\"pt\")",
        "    probabilities = model(**batch).logits.softmax(-1)[0].tolist()",
        "print(dict(zip(labels, probabilities)))",
    ]
    return "\n".join(lines) + "\n"
