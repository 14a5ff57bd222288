"""SURM Explorer's core: structured matrix families, their analysis, and adapters built on them."""
from .families import FAMILIES, StructuredMatrix, from_budget, make, register_family
from .adapters import (
    AdapterConfig,
    disable_adapter,
    format_report,
    inject,
    load_adapter,
    merge,
    merge_and_unload,
    print_trainable_parameters,
    save_adapter,
    set_adapter,
    trainable_report,
    unload,
    unmerge,
)
from .models import DEFAULT_MODEL, default_targets, load_model

__all__ = ["FAMILIES", "StructuredMatrix", "make", "from_budget", "register_family"]
__all__ += [
    "AdapterConfig", "inject", "set_adapter", "disable_adapter", "trainable_report", "format_report",
    "print_trainable_parameters", "merge", "unmerge", "merge_and_unload", "unload", "save_adapter",
    "load_adapter", "AdapterTrainer", "DEFAULT_MODEL", "load_model", "default_targets",
]


def __getattr__(name):
    # AdapterTrainer subclasses transformers.Trainer, which imports accelerate: only on first use.
    if name == "AdapterTrainer":
        from .adapters.trainer import AdapterTrainer

        return AdapterTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
