"""Structured adapters on real models, PEFT-style: configure, inject, switch, report, merge, save, load.

``AdapterTrainer`` (Hugging Face ``Trainer`` that resumes and picks the best checkpoint with
adapters) is imported on first use, so that importing ``surm_core`` does not import ``accelerate``.
"""
from .config import AdapterConfig
from .io import load_adapter, save_adapter
from .model import (
    disable_adapter,
    format_report,
    inject,
    merge,
    merge_and_unload,
    print_trainable_parameters,
    set_adapter,
    trainable_report,
    unload,
    unmerge,
)

__all__ = [
    "AdapterConfig",
    "inject",
    "set_adapter",
    "disable_adapter",
    "trainable_report",
    "format_report",
    "print_trainable_parameters",
    "merge",
    "unmerge",
    "merge_and_unload",
    "unload",
    "save_adapter",
    "load_adapter",
    "AdapterTrainer",
]


def __getattr__(name):
    if name == "AdapterTrainer":
        from .trainer import AdapterTrainer

        return AdapterTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
