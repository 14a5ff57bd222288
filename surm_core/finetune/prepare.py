"""What a run trains, and seeing it before it starts: target-module presets, :func:`prepare`
(the one place a model is made ready to train) and :func:`preview` (the matched layers and
trainable-parameter counts of a config, without training).

>>> plan = preview(FinetuneConfig(method="lowrank", hparams={"r": 8, "alpha": 16}, target_modules="attention-all"))  # doctest: +SKIP
>>> [layer["name"] for layer in plan["layers"]][:4], plan["trainable_params"]  # doctest: +SKIP
(['bert.encoder.layer.0.attention.self.query', ..., 'bert.encoder.layer.0.attention.output.dense'], 149381)
"""
from __future__ import annotations

import copy
import functools
import os

import torch

from ..adapters import AdapterConfig, inject, trainable_report
from ..models import default_targets
from .config import FinetuneConfig
from .task import task_for

#: Of the ``target_modules`` presets (``config.TARGET_PRESETS``), "attention-qv" is LoRA's choice (the query and value projections,
#: :func:`surm_core.default_targets`), "all-linear" every linear layer outside the head, and
#: "attention-all": every attention projection — query, key, value and output — as module-name
#: suffixes per architecture (the first group whose suffixes all match wins): BERT/RoBERTa/MiniLM,
#: Llama/Mistral/ViT, OPT/BART, DistilBERT, GPT-2 (fused q/k/v), Falcon, GPT-NeoX, T5.
ATTENTION_GROUPS = (
    ["query", "key", "value", "attention.output.dense"],
    ["q_proj", "k_proj", "v_proj", "o_proj"],
    ["q_proj", "k_proj", "v_proj", "out_proj"],
    ["q_lin", "k_lin", "v_lin", "out_lin"],
    ["c_attn", "attn.c_proj"],
    ["query_key_value", "self_attention.dense"],
    ["query_key_value", "attention.dense"],
    ["q", "k", "v", "o"],
)


def resolve_targets(model, target_modules):
    """``target_modules`` as :class:`surm_core.AdapterConfig` takes them: a preset becomes the
    module-name suffixes (or ``"all-linear"``) it means for ``model``; lists and regular
    expressions pass through."""
    if target_modules in (None, "attention-qv"):
        return default_targets(model)
    if target_modules != "attention-all":
        return target_modules
    names = [n for n, _ in model.named_modules()]
    for group in ATTENTION_GROUPS:
        if all(any(n == s or n.endswith("." + s) for n in names) for s in group):
            return list(group)
    raise ValueError(
        f"found no known attention projections in {type(model).__name__} for 'attention-all'; "
        "name the target modules (a list of module-name suffixes or a regular expression)"
    )


def prepare(model, config: FinetuneConfig, head: list[str]) -> None:
    """Make the tensors ``config.method`` trains trainable, and only those: the head's (``head``:
    module names) always, then every weight (``"full"``), nothing else (``"head-only"``), or an
    adapter of the family on the targeted layers."""
    if config.method == "full":
        model.requires_grad_(True)
    elif config.method == "head-only":
        model.requires_grad_(False)
        for name in head:
            model.get_submodule(name).requires_grad_(True)
    else:
        inject(model, AdapterConfig(
            config.method, target_modules=resolve_targets(model, config.target_modules), budget=config.budget,
            hparams=config.hparams, modules_to_save=head,
        ))


def preview(config: FinetuneConfig, label_names: list[str] | None = None) -> dict:
    """What ``config`` would train, without training: for the app to show before Start.

    Returns ``{"layers": [{"name", "family", "shape", "hparams", "params"}, ...]`` (the adapted
    layers, in model order; empty for the baselines), ``"head": [{"name", "params"}]``,
    ``"adapter_params"`` (trainable outside the head, as in a run's summary: every body weight
    for ``"full"``), ``"trainable_params"``, ``"base_params"`` and ``"percent"``
    (100·trainable/base)}. ``label_names`` size the head; ``None`` reads them from the
    config's dataset. Base models and label lists are cached, so a changed budget or preset
    costs a model copy and an injection (well under a second for MiniLM). Raises ``ValueError``
    as the run would (a target that matches nothing, a budget no member of the family fits, ...).
    """
    if label_names is None:
        label_names = dataset_labels(config.dataset, config.text_column, config.label_column, *file_stamp(config.dataset))
    task = task_for(config, label_names=list(label_names))
    model = copy.deepcopy(base_model(config.model, tuple(label_names)))
    head = task.head(model)
    prepare(model, config, head)
    report = trainable_report(model)
    head_rows = [{"name": n, "params": sum(p.numel() for p in model.get_submodule(n).parameters())} for n in head]
    return {"layers": report["layers"], "head": head_rows,
            "adapter_params": report["trainable_params"] - sum(row["params"] for row in head_rows),
            **{k: report[k] for k in ("trainable_params", "base_params", "percent")}}


@functools.lru_cache(maxsize=2)
def base_model(model: str, label_names: tuple[str, ...]):
    """The base model with its new head, loaded once per (model, labels): the head is initialised
    like a run's (seed 0), though only its size matters here."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net, _ = task_for(FinetuneConfig(model=model, method="head-only"), label_names=list(label_names)).load_model()
    return net


@functools.lru_cache(maxsize=8)
def dataset_labels(dataset: str, text_column, label_column, *stamp) -> tuple[str, ...]:
    """The label names of a dataset; ``stamp`` (the file's size and time) keys the cache."""
    task = task_for(FinetuneConfig(dataset=dataset, text_column=text_column, label_column=label_column))
    return tuple(task.label_names)


def file_stamp(path: str) -> tuple:
    try:
        stat = os.stat(path)
    except OSError:
        return ()
    return (stat.st_size, stat.st_mtime_ns)
