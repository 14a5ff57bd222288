"""What defines a fine-tuning run: :class:`FinetuneConfig`, checked on creation, and its JSON file.

>>> config = FinetuneConfig(method="lowrank", hparams={"r": 8, "alpha": 16}, steps=100)
>>> FinetuneConfig.from_dict(config.to_dict()) == config
True
>>> config = load_config("my_run.json", steps=20)   # a JSON object of fields; steps overridden  # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

from ..families import FAMILIES
from ..models import DEFAULT_MODEL
from .data import BBC_NEWS

BASELINES = ("full", "head-only")
#: Seeds are what ``torch.manual_seed`` takes on every platform and what JSON, the CLI and the app
#: carry as a plain non-negative integer.
SEED_LIMIT = 2**63
PRECISIONS = ("auto", "fp32", "bf16")
#: Presets of ``target_modules`` (see :mod:`surm_core.finetune.prepare` for what they select).
TARGET_PRESETS = ("attention-qv", "attention-all", "all-linear")


@dataclasses.dataclass
class FinetuneConfig:
    """Everything that defines a run (recorded in full in ``summary.json`` and ``config.json``).

    * ``method``: a family in ``surm_core.FAMILIES`` (an adapter on ``target_modules``, sized by
      ``budget`` per layer or by ``hparams``), ``"full"`` (every weight trains) or ``"head-only"``
      (only the classification head trains). The head always trains.
    * ``target_modules``: a preset — ``"attention-qv"`` (query and value, LoRA's choice; also what
      ``None`` means), ``"attention-all"`` (query, key, value and the attention output, named per
      architecture) or ``"all-linear"`` (every linear layer outside the head) — or a list of
      module-name suffixes, or a regular expression matched against full module names.
      LoRA's rank and alpha are ``hparams={"r": 8, "alpha": 16}`` with ``method="lowrank"``.
    * ``steps`` optimizer steps of ``batch_size`` rows (the global batch, split over processes);
      ``epochs``, when set, replaces ``steps`` by ``ceil(epochs · batches per epoch)``.
    * AdamW at ``lr`` (``None``: 5e-3, or 5e-5 for ``"full"``) with linear warmup over
      ``warmup_ratio`` of the steps, then linear decay to 0.
    * ``seed`` (an integer in [0, 2⁶³)) fixes the head's initialisation, the adapters', dropout
      and the batch order: the same seed on the same device gives the same metrics (bit for bit on
      CPU; some CUDA kernels add in a varying order, so there expect the last digits to differ).
      The split is fixed (80/20, stratified) and does not depend on it.
    * ``device``: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``.
      ``precision``: ``"auto"`` (bfloat16 autocast on CUDA, float32 on the CPU), ``"fp32"`` or
      ``"bf16"`` (bfloat16 autocast on either device; weights and optimizer stay float32).
    * Evaluation on at most ``eval_size`` rows of the test split (``None`` or ``"all"``: all of it)
      every ``eval_every`` steps and at the end.
    * ``out_dir``: the run directory (``None``: write nothing).
    """

    model: str = DEFAULT_MODEL
    dataset: str = BBC_NEWS
    text_column: str | None = None
    label_column: str | None = None
    method: str = "circulant"
    budget: int | None = None
    hparams: dict | None = None
    target_modules: list[str] | str | None = None
    steps: int = 200
    epochs: float | None = None
    batch_size: int = 32
    lr: float | None = None
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_length: int = 128
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    eval_every: int = 50
    eval_size: int | None = 512
    out_dir: str | None = None

    def __post_init__(self):
        if self.method not in FAMILIES and self.method not in BASELINES:
            raise ValueError(f"method must be a family ({', '.join(FAMILIES)}) or one of {BASELINES}, got {self.method!r}")
        if self.method in BASELINES and (self.budget, self.hparams, self.target_modules) != (None, None, None):
            raise ValueError(f"method {self.method!r} takes no budget, hparams or target_modules")
        if self.budget is not None and self.hparams is not None:
            raise ValueError("give either budget or hparams, not both")
        if self.hparams is not None and not isinstance(self.hparams, dict):
            raise ValueError(f"hparams must be a dict of the family's hyperparameters, got {self.hparams!r}")
        for name in ("steps", "batch_size", "max_length", "eval_every"):
            check_positive_int(name, getattr(self, name))
        if self.budget is not None:
            check_positive_int("budget", self.budget)
        if self.eval_size == "all":
            self.eval_size = None
        if self.eval_size is not None:
            check_positive_int("eval_size", self.eval_size)
        if self.epochs is not None and not (is_number(self.epochs) and 0 < self.epochs < math.inf):
            raise ValueError(f"epochs must be a positive number, got {self.epochs!r}")
        if self.lr is None:
            self.lr = default_lr(self.method)
        if not (is_number(self.lr) and 0 < self.lr < math.inf):
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        if not (is_number(self.warmup_ratio) and 0 <= self.warmup_ratio < 1):
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if not (is_number(self.weight_decay) and 0 <= self.weight_decay < math.inf):
            raise ValueError(f"weight_decay must be a non-negative number, got {self.weight_decay!r}")
        check_seed(self.seed)
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        check_targets(self.target_modules)
        for name in ("model", "dataset"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields: dict) -> "FinetuneConfig":
        """The config with these fields (any subset of :meth:`to_dict`'s keys; the rest default).

        Raises ``ValueError`` for a key that is not a field, naming the fields there are.
        """
        if not isinstance(fields, dict):
            raise ValueError(f"a fine-tuning config must be a JSON object of fields, got {type(fields).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in fields if k not in known]
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}; the fields are {known}")
        return cls(**fields)


def load_config(path, **overrides) -> FinetuneConfig:
    """The :class:`FinetuneConfig` a JSON file describes, with ``overrides`` (fields) on top.

    The file holds one JSON object whose keys are fields of the config (any subset of
    ``FinetuneConfig().to_dict()``; a run directory's ``config.json`` is one). Raises
    ``ValueError`` for a missing or unreadable file, invalid JSON, an unknown field or a bad value.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read the config file {str(path)!r}: {e.strerror if isinstance(e, OSError) else e}") from None
    try:
        fields = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"the config file {path.name} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    if not isinstance(fields, dict):
        raise ValueError(f"the config file {path.name} must hold a JSON object of fields, not a {type(fields).__name__}")
    return FinetuneConfig.from_dict({**fields, **overrides})


def check_targets(targets) -> None:
    """A preset or regular expression (a string) or a list of module-name suffixes; whether they
    match anything is known once the model is loaded."""
    if targets is None:
        return
    if isinstance(targets, str):
        try:
            re.compile(targets)
        except re.error as e:
            raise ValueError(f"target_modules {targets!r} is not a preset {TARGET_PRESETS} nor a valid regular expression: {e}") from None
        return
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) and t for t in targets):
        raise ValueError(f"target_modules must be a preset {TARGET_PRESETS}, a regular expression or a non-empty "
                         f"list of module-name suffixes, got {targets!r}")


def default_lr(method: str) -> float:
    """The peak learning rate when none is given: adapters and a lone head need large steps, but
    moving every pretrained weight that far would wreck the model."""
    return 5e-5 if method == "full" else 5e-3


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_seed(seed) -> int:
    """``seed`` if it is an integer in [0, 2⁶³), else ``ValueError``: the one rule for the
    library, the CLI and the app."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"seed must be an integer from 0 to 2**63 - 1, got {seed!r}")
    return seed
