"""Fine-tuning with structured adapters (or the full / head-only baselines): data, engine, CLI.

>>> summary = run(FinetuneConfig(method="circulant", budget=4096, steps=200, out_dir="runs/circ"))  # doctest: +SKIP
"""
from .data import BBC_NEWS, DatasetError, TextDataset, load_dataset, split, tokenize
from .engine import BASELINES, FinetuneConfig, run, weights_digest

__all__ = [
    "BBC_NEWS",
    "BASELINES",
    "DatasetError",
    "TextDataset",
    "FinetuneConfig",
    "load_dataset",
    "split",
    "tokenize",
    "run",
    "weights_digest",
]
