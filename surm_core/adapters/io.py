"""Save and load adapters: ``adapter_config.json`` plus ``adapter_model.safetensors`` (never pickle)."""
from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from .config import AdapterConfig
from .model import adapted_layers, adapter_config, install, plan
from .targets import match_modules_to_save

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


def _tensors(model: nn.Module, layers: dict, saved: list[str]) -> dict:
    """The tensors an adapter file holds, by full name: adapter tensors, then modules to save."""
    out = {f"{name}.{k}": p for name, layer in layers.items() for k, p in layer.adapter_parameters().items()}
    for name in saved:
        out.update({f"{name}.{k}": t for k, t in model.get_submodule(name).state_dict().items()})
    return out


def save_adapter(model: nn.Module, directory) -> Path:
    """Write the adapters of ``model`` (and its modules to save) to ``directory``; return it.

    Only adapter tensors are written, never the base weights, so a merged model saves the same
    file as the unmerged one (merging changes the base weights only).
    """
    config = adapter_config(model)
    layers = adapted_layers(model)
    saved = match_modules_to_save(model, config.modules_to_save)
    tensors = {k: t.detach().cpu().contiguous() for k, t in _tensors(model, layers, saved).items()}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    # The family and placement ride along in the file's metadata, to be checked against the config.
    metadata = {"family": config.family, "placement": config.placement}
    safetensors.torch.save_file(tensors, str(directory / WEIGHTS_FILE), metadata=metadata)
    return directory


def load_adapter(model: nn.Module, directory) -> nn.Module:
    """Inject the adapters saved in ``directory`` into a fresh base ``model`` and load their tensors.

    Checks, before changing the model, that the file's family and placement match its config and
    that the tensors are exactly those the config creates on this model, with the same shapes
    (a different base model or ``num_labels`` shows up here); ``ValueError`` naming the mismatch.
    """
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
    planned = plan(model, config)
    _, layers, saved = planned
    expected = _tensors(model, layers, saved)
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
    install(model, planned)
    with torch.no_grad():
        for name, t in expected.items():
            t.copy_(stored[name])
    return model
