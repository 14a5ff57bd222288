"""Save and load adapters: ``adapter_config.json`` plus ``adapter_model.safetensors`` (never pickle).

A directory holds one adapter. Its tensors are named by the adapted layer's full name plus
``adapter.<tensor>`` (the structured map's, e.g. ``…query.adapter.c``) or ``adapter_bias`` (the
residual placement's bias), and a module to save's by its full name: the names do not depend on
the adapter's name, so an adapter saved under one name loads under any other.
"""
from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from .config import AdapterConfig
from .layer import DEFAULT_ADAPTER
from .model import Plan, adapted_layers, adapter_config, adapter_state, install, plan

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


def _layer_tensors(target: str, adapter: nn.Module, bias) -> dict[str, torch.Tensor]:
    out = {f"{target}.adapter.{k}": p for k, p in adapter.named_parameters()}
    if bias is not None:
        out[f"{target}.adapter_bias"] = bias
    return out


def adapter_tensors(model: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """The live tensors of adapter ``name`` by their names in the file (writing to them sets them)."""
    state = adapter_state(model)
    out = {}
    for target, layer in adapted_layers(model).items():
        if name in layer.adapters:
            bias = layer.adapter_biases[name] if name in layer.adapter_biases else None
            out.update(_layer_tensors(target, layer.adapters[name], bias))
    for path in state.saved[name]:
        live = state.placed[path] == name
        tensors = model.get_submodule(path).state_dict() if live else state.stash[(name, path)]
        out.update({f"{path}.{k}": t for k, t in tensors.items()})
    return out


def _planned_tensors(model: nn.Module, planned: Plan) -> dict[str, torch.Tensor]:
    """What :func:`adapter_tensors` will return once ``planned`` is installed (the same tensors)."""
    out = {}
    for target, (adapter, bias) in planned.adapters.items():
        out.update(_layer_tensors(target, adapter, bias))
    for path in planned.saved:
        tensors = model.get_submodule(path).state_dict() if planned.active else planned.stash[path]
        out.update({f"{path}.{k}": t for k, t in tensors.items()})
    return out


def save_adapter(model: nn.Module, directory, adapter_name: str | None = None) -> Path:
    """Write adapter ``adapter_name`` of ``model`` (default: the active one) with its modules to save
    to ``directory``; return it.

    Only adapter tensors are written, never the base weights, so a merged model saves the same
    file as the unmerged one (merging changes the base weights only).
    """
    state = adapter_state(model)
    name = state.active if adapter_name is None else adapter_name
    config = adapter_config(model, name)
    tensors = {k: t.detach().cpu().contiguous() for k, t in adapter_tensors(model, name).items()}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    # The family and placement ride along in the file's metadata, to be checked against the config.
    metadata = {"family": config.family, "placement": config.placement}
    safetensors.torch.save_file(tensors, str(directory / WEIGHTS_FILE), metadata=metadata)
    return directory


def read_adapter(directory) -> tuple[AdapterConfig, dict[str, torch.Tensor]]:
    """The config and tensors saved in ``directory``, checked to agree (``ValueError`` if not)."""
    directory = Path(directory)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise ValueError(f"no {name} in {str(directory)!r}: not an adapter directory")
    try:
        config = AdapterConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
    except json.JSONDecodeError as e:
        raise ValueError(f"{CONFIG_FILE} in {str(directory)!r} is not valid JSON: {e}") from None
    with safetensors.safe_open(str(directory / WEIGHTS_FILE), framework="pt") as f:
        metadata = f.metadata() or {}
        stored = {k: f.get_tensor(k) for k in f.keys()}
    for key in ("family", "placement"):
        if metadata.get(key) != getattr(config, key):
            raise ValueError(
                f"{WEIGHTS_FILE} holds {key} {metadata.get(key)!r} but {CONFIG_FILE} says "
                f"{getattr(config, key)!r}"
            )
    return config, stored


def load_tensors(expected: dict[str, torch.Tensor], stored: dict[str, torch.Tensor], install=None) -> None:
    """Copy ``stored`` into ``expected`` after checking that it has exactly its names and shapes
    (``ValueError`` naming the mismatch; nothing changes then). ``install``, if given, runs between
    the check and the copy."""
    missing, unexpected = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"the saved adapter does not fit this model's targets: missing {missing[:5]} "
            f"({len(missing)} in all), unexpected {unexpected[:5]} ({len(unexpected)} in all)"
        )
    for name, t in expected.items():
        if t.shape != stored[name].shape:
            raise ValueError(
                f"{name}: saved shape {tuple(stored[name].shape)}, this model needs {tuple(t.shape)} "
                "(a different base model, or a different num_labels?)"
            )
    if install is not None:
        install()
    with torch.no_grad():
        for name, t in expected.items():
            t.copy_(stored[name])


def load_adapter(model: nn.Module, directory, adapter_name: str = DEFAULT_ADAPTER) -> nn.Module:
    """Inject the adapter saved in ``directory`` into ``model`` as ``adapter_name`` and load its tensors.

    Into a base model it becomes the active adapter; into a model that has adapters it is added
    inactive, for :func:`surm_core.set_adapter` (as PEFT's ``load_adapter``). Checks, before
    changing the model, that the file's family and placement match its config and that the
    tensors are exactly those the config creates on this model, with the same shapes (a
    different base model or ``num_labels`` shows up here); ``ValueError`` naming the mismatch.
    """
    config, stored = read_adapter(directory)
    planned = plan(model, config, adapter_name)
    load_tensors(_planned_tensors(model, planned), stored, install=lambda: install(model, planned))
    return model
