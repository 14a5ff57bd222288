"""Put adapters into a model, report what is trainable, and merge them into the weights."""
from __future__ import annotations

import dataclasses

from torch import nn

from ..families import from_budget, make
from .config import AdapterConfig
from .layer import AdaptedLayer, DeltaLayer, ResidualAdapterLayer, layer_shape
from .targets import default_targets, match_modules_to_save, match_targets

#: Attribute under which an adapted model keeps its (resolved) AdapterConfig.
CONFIG_ATTR = "surm_adapter_config"


def adapted_layers(model: nn.Module) -> dict[str, AdaptedLayer]:
    return {n: m for n, m in model.named_modules() if isinstance(m, AdaptedLayer)}


def adapter_config(model: nn.Module) -> AdapterConfig:
    """The config a model was adapted with (``target_modules`` resolved if it was ``None``)."""
    config = getattr(model, CONFIG_ATTR, None)
    if config is None:
        raise ValueError("the model has no adapters; call surm_core.inject(model, config) first")
    return config


def _build_layer(name: str, base: nn.Module, config: AdapterConfig) -> AdaptedLayer:
    d_out, d_in = layer_shape(base)
    if config.placement == "adapter":
        d_in = d_out  # S acts on the layer's output
    try:
        if config.budget is not None:
            adapter = from_budget(config.family, d_out, d_in, config.budget)
        else:
            adapter = make(config.family, d_out, d_in, **(config.hparams or {}))
    except ValueError as e:
        raise ValueError(f"cannot adapt {name!r} ({d_out}×{d_in}): {e}") from None
    cls = DeltaLayer if config.placement == "delta" else ResidualAdapterLayer
    return cls(base, adapter, config.scale, config.dropout)


def plan(model: nn.Module, config: AdapterConfig):
    """What :func:`inject` would do, without changing the model.

    Returns ``(config, layers, saved)``: the config with its targets resolved, the wrapped layers
    by full name (built, not yet installed) and the full names of the modules to save.
    """
    if not isinstance(config, AdapterConfig):
        raise ValueError(f"config must be an AdapterConfig, got {type(config).__name__}")
    if getattr(model, CONFIG_ATTR, None) is not None or adapted_layers(model):
        raise ValueError("the model already has adapters; load a fresh base model to inject again")
    if config.target_modules is None:
        config = dataclasses.replace(config, target_modules=default_targets(model))
    targets = match_targets(model, config.target_modules)
    saved = match_modules_to_save(model, config.modules_to_save)
    for name in targets:
        clash = [s for s in saved if name == s or name.startswith(s + ".")]
        if clash:
            raise ValueError(f"{name!r} is both a target and inside modules_to_save {clash[0]!r}")
    layers = {name: _build_layer(name, model.get_submodule(name), config) for name in targets}
    return config, layers, saved


def install(model: nn.Module, planned) -> nn.Module:
    """Carry out a :func:`plan`: freeze the model, swap in the layers, unfreeze modules to save."""
    config, layers, saved = planned
    model.requires_grad_(False)
    for name, layer in layers.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, layer)
    for name in saved:
        model.get_submodule(name).requires_grad_(True)
    setattr(model, CONFIG_ATTR, config)
    return model


def inject(model: nn.Module, config: AdapterConfig) -> nn.Module:
    """Adapt ``model`` in place per ``config`` and return it.

    The targeted layers get a zero-initialised adapter (so the outputs do not change), every other
    parameter is frozen except those of ``config.modules_to_save``.

    >>> model = inject(nn.Sequential(nn.Linear(4, 4)), AdapterConfig("circulant", ["0"]))
    >>> trainable_report(model)["adapter_params"]
    4
    """
    return install(model, plan(model, config))


def trainable_report(model: nn.Module) -> dict:
    """What trains: per adapted layer its name, family, placement, shape (of ΔW or S), hparams and
    ``params`` (all its adapter tensors, S's bias included); the totals ``adapter_params``,
    ``trainable_params`` (adapters plus modules to save), ``base_params`` (all parameters but the
    adapters) and ``percent`` = 100·trainable/base. Works on models without adapters too.
    """
    layers, adapter_ids = [], set()
    for name, layer in adapted_layers(model).items():
        params = layer.adapter_parameters()
        adapter_ids |= {id(p) for p in params.values()}
        layers.append({
            "name": name,
            "family": layer.adapter.family,
            "placement": layer.placement,
            "shape": list(layer.adapter.shape),
            "hparams": dict(layer.adapter.hparams),
            "params": sum(p.numel() for p in params.values()),
        })
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    base = sum(p.numel() for p in model.parameters() if id(p) not in adapter_ids)
    return {
        "layers": layers,
        "adapter_params": sum(layer["params"] for layer in layers),
        "trainable_params": trainable,
        "base_params": base,
        "percent": 100.0 * trainable / base if base else 0.0,
    }


def format_report(report: dict) -> str:
    """A :func:`trainable_report` as a printable table with a totals line."""
    rows = [("layer", "family", "shape", "params")] + [
        (r["name"], r["family"], "×".join(map(str, r["shape"])), f"{r['params']:,}") for r in report["layers"]
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d:>{widths[3]}}" for a, b, c, d in rows
    ]
    lines.append(
        f"adapter params {report['adapter_params']:,} in {len(report['layers'])} layers; "
        f"trainable {report['trainable_params']:,} = {report['percent']:.4f}% of "
        f"{report['base_params']:,} base params"
    )
    return "\n".join(lines)


def _layers(model: nn.Module) -> dict[str, AdaptedLayer]:
    layers = adapted_layers(model)
    if not layers:
        raise ValueError("the model has no adapters; call surm_core.inject(model, config) first")
    return layers


def merge(model: nn.Module) -> nn.Module:
    """Fold ``scale·ΔW`` into each adapted weight: same outputs, no adapter cost at inference.

    Only the ``"delta"`` placement merges; merging a merged model is an error (never a double add).
    A merged model skips its adapters, so they get no gradients: unmerge before training again.
    """
    layers = _layers(model)
    if any(layer.placement == "adapter" for layer in layers.values()):
        raise ValueError(
            "the 'adapter' placement cannot be merged: h + scale·gelu(S h) + b is not linear in h, "
            "so no weight matrix equals it; only placement='delta' merges"
        )
    if any(layer.merged for layer in layers.values()):
        raise ValueError("the adapters are already merged; unmerge(model) first")
    for layer in layers.values():
        layer.merge()
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """Undo :func:`merge`: subtract ``scale·ΔW`` again (exact up to float rounding)."""
    layers = _layers(model)
    if not all(layer.merged for layer in layers.values()):
        raise ValueError("the adapters are not merged; nothing to unmerge")
    for layer in layers.values():
        layer.unmerge()
    return model
