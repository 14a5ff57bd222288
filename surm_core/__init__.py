"""SURM Explorer's core: structured matrix families, their analysis, and adapters built on them."""
from .families import FAMILIES, StructuredMatrix, from_budget, make, register_family
from .adapters import (
    AdapterConfig,
    format_report,
    inject,
    load_adapter,
    merge,
    save_adapter,
    trainable_report,
    unmerge,
)
from .models import DEFAULT_MODEL, default_targets, load_model

__all__ = ["FAMILIES", "StructuredMatrix", "make", "from_budget", "register_family"]
__all__ += [
    "AdapterConfig", "inject", "trainable_report", "format_report", "merge", "unmerge",
    "save_adapter", "load_adapter", "DEFAULT_MODEL", "load_model", "default_targets",
]
