"""What to adapt and how: :class:`AdapterConfig`, a plain dataclass that round-trips through JSON."""
from __future__ import annotations

import dataclasses
import math
import re

from ..families import family_class
from ..families.base import check_size

PLACEMENTS = ("delta", "adapter")

#: PEFT's ``task_type`` values this library knows, each with the class-name ending of the models it
#: is for: their new task head (``head_names``) is trained and saved with the adapter.
TASK_TYPES = {
    "SEQ_CLS": "ForSequenceClassification",
    "TOKEN_CLS": "ForTokenClassification",
    "IMAGE_CLS": "ForImageClassification",
}


@dataclasses.dataclass
class AdapterConfig:
    r"""How :func:`surm_core.inject` adapts a model.

    * ``family``: a name in ``surm_core.FAMILIES``.
    * ``target_modules``: the layers to adapt (``nn.Linear`` or GPT-2's ``Conv1D``) as a list of
      module-name suffixes (``["query", "value"]`` matches ``…attention.self.query``), a regular
      expression matched against the full name (``re.fullmatch``), ``"all-linear"`` (every such layer
      outside the task head), or ``None`` for :func:`surm_core.default_targets` of the model.
    * ``budget``: trainable parameters per adapted layer, solved with ``from_budget``; or
      ``hparams``: the family's hyperparameters, the same for every layer; neither: family defaults.
    * ``budget_pattern`` / ``hparams_pattern`` (PEFT's ``rank_pattern``): per-layer exceptions,
      ``{pattern: budget}`` / ``{pattern: hparams}``. A pattern is a regular expression matched
      against the end of a target's full name after a dot (``"value"`` matches
      ``…attention.self.value``, ``r"layer\.0\..*"`` every target in layer 0); a target that
      matches uses that budget or those hparams instead of ``budget``/``hparams``. Every pattern must
      match a target, and no target may match two patterns.
    * ``placement``: ``"delta"`` gives ``y = W0 x + scale·ΔW x`` (LoRA-style, mergeable);
      ``"adapter"`` follows the layer with SURM's residual adapter ``h ← h + scale·gelu(S h) + b``,
      S a square structured map of the layer's output size (``budget`` counts S only).
    * ``dropout``: on the adapter's input, during training. ``modules_to_save``: module-name
      suffixes (e.g. a new ``"classifier"``) that are trained fully and saved with the adapter.
    * ``task_type`` (PEFT's): ``"SEQ_CLS"``, ``"TOKEN_CLS"`` or ``"IMAGE_CLS"`` for a
      ``*ForSequenceClassification`` / ``*ForTokenClassification`` / ``*ForImageClassification``
      model adds its new head (``classifier``, GPT-2's ``score``) to ``modules_to_save``; ``None``
      (the default) adds nothing.

    >>> import json
    >>> c = AdapterConfig("kronecker", ["query", "value"], hparams={"a_shape": (8, 8)},
    ...                   hparams_pattern={"value": {"a_shape": (16, 16)}}, task_type="SEQ_CLS")
    >>> AdapterConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    True
    """

    family: str
    target_modules: list[str] | str | None = None
    budget: int | None = None
    hparams: dict | None = None
    placement: str = "delta"
    scale: float = 1.0
    dropout: float = 0.0
    modules_to_save: list[str] | None = None
    budget_pattern: dict[str, int] | None = None
    hparams_pattern: dict[str, dict] | None = None
    task_type: str | None = None

    def __post_init__(self):
        family_class(self.family)  # ValueError listing the known families
        self.target_modules = _check_targets(self.target_modules)
        if self.budget is not None and self.hparams is not None:
            raise ValueError("give either budget or hparams, not both")
        if self.budget is not None:
            self.budget = check_size("budget", self.budget)
        if self.hparams is not None:
            self.hparams = _check_hparams("hparams", self.hparams)
        if self.budget_pattern is not None:
            pairs = _check_pattern("budget_pattern", self.budget_pattern)
            self.budget_pattern = {p: check_size(f"budget_pattern[{p!r}]", b) for p, b in pairs}
        if self.hparams_pattern is not None:
            pairs = _check_pattern("hparams_pattern", self.hparams_pattern)
            self.hparams_pattern = {p: _check_hparams(f"hparams_pattern[{p!r}]", h) for p, h in pairs}
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {self.placement!r}")
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not math.isfinite(self.scale):
            raise ValueError(f"scale must be a finite number, got {self.scale!r}")
        self.scale = float(self.scale)
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be a probability in [0, 1), got {self.dropout!r}")
        self.dropout = float(self.dropout)
        if self.modules_to_save is not None:
            self.modules_to_save = _check_names("modules_to_save", self.modules_to_save)
        if self.task_type is not None and self.task_type not in TASK_TYPES:
            raise ValueError(f"task_type must be one of {list(TASK_TYPES)} or None, got {self.task_type!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AdapterConfig":
        if not isinstance(d, dict):
            raise ValueError(f"an adapter config must be a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown adapter config key(s) {unknown}; known: {sorted(known)}")
        if "family" not in d:
            raise ValueError("an adapter config needs a 'family'")
        return cls(**d)


def _check_hparams(what: str, hparams) -> dict:
    if not isinstance(hparams, dict):
        raise ValueError(f"{what} must be a dict, got {type(hparams).__name__}")
    # JSON turns tuples (kronecker's a_shape) into lists: store tuples so that a config read back
    # from JSON equals the one written.
    return {k: tuple(v) if isinstance(v, list) else v for k, v in hparams.items()}


def _check_pattern(what: str, pattern):
    """The ``(pattern, value)`` pairs of a non-empty dict keyed by valid regular expressions."""
    if not isinstance(pattern, dict) or not pattern:
        raise ValueError(f"{what} must be a non-empty dict from module-name pattern to value, got {pattern!r}")
    for key in pattern:
        if not isinstance(key, str) or not key:
            raise ValueError(f"{what} keys must be non-empty strings, got {key!r}")
        try:
            re.compile(key)
        except re.error as e:
            raise ValueError(f"{what} key {key!r} is not a valid regular expression: {e}") from None
    return pattern.items()


def _check_names(what: str, names) -> list[str]:
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise ValueError(f"{what} must be a list of module names, got {names!r}")
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{what} must be a non-empty list of non-empty strings, got {names!r}")
    return list(names)


def _check_targets(targets):
    if targets is None or targets == "all-linear":
        return targets
    if isinstance(targets, str):
        try:
            re.compile(targets)
        except re.error as e:
            raise ValueError(f"target_modules {targets!r} is not a valid regular expression: {e}") from None
        return targets
    return _check_names("target_modules", targets)
