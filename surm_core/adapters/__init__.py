"""Structured adapters on real models, PEFT-style: configure, inject, report, merge, save, load."""
from .config import AdapterConfig
from .io import load_adapter, save_adapter
from .model import format_report, inject, merge, trainable_report, unmerge

__all__ = [
    "AdapterConfig",
    "inject",
    "trainable_report",
    "format_report",
    "merge",
    "unmerge",
    "save_adapter",
    "load_adapter",
]
