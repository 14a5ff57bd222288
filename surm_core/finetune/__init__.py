"""Fine-tuning with structured adapters (or the full / head-only baselines) for text or image
classification or causal language modelling: config, data, tasks, engine, CLI.

>>> summary = run(FinetuneConfig(method="circulant", budget=4096, steps=200, out_dir="runs/circ"))  # doctest: +SKIP
>>> summary = run(load_config("my_run.json"))  # the same, from a JSON file of config fields  # doctest: +SKIP
"""
from .checkpoint import run_status
from .config import BASELINES, FinetuneConfig, check_seed, load_config
from .causal import generate, load_causal_dataset
from .data import BBC_NEWS, DatasetError, TextDataset, load_dataset, split, tokenize
from .engine import resume, run, weights_digest
from .estimate import estimate_time
from .images import load_image_dataset
from .inference import complete, load_snippet, predict
from .prepare import preview
from .task import task_for

__all__ = [
    "BBC_NEWS",
    "BASELINES",
    "DatasetError",
    "TextDataset",
    "FinetuneConfig",
    "check_seed",
    "load_config",
    "load_dataset",
    "load_image_dataset",
    "load_causal_dataset",
    "generate",
    "task_for",
    "split",
    "tokenize",
    "run",
    "resume",
    "run_status",
    "preview",
    "estimate_time",
    "predict",
    "complete",
    "load_snippet",
    "weights_digest",
]
