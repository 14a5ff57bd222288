"""What a structure search samples: family, size, target modules and learning rate of one trial.

>>> space = SearchSpace(["circulant", "monarch", "lowrank"], max_budget=3072)
>>> layers = Layers({"attention-qv": [(384, 384)] * 12}, head_params=1925)
>>> space.check(layers)     # ValueError before any trial when a family cannot fit
>>> space.smallest("monarch", layers.shapes["attention-qv"])
768

Per trial (Optuna's define-by-run, so each family has its own parameters):

* ``family``: one of ``families`` (any registered family, ``lowrank`` is LoRA). ``head-only`` is
  not drawn with them: it has one setting, its learning rate, and with the parameter count as an
  objective it is never dominated there, so the sampler kept drawing it (16 of 60 trials on BBC
  News). It runs first instead, at a few fixed rates (:meth:`SearchSpace.head_only_references`);
  searched alone, its rate is sampled.
* ``<family>.budget``: adapter parameters per layer, log-uniform integer between the family's
  smallest member on every adapted layer (or ``min_budget``, when larger) and the maximum. ``max_budget`` gives the maximum per
  layer; ``max_params`` caps the *total* trainable parameters instead, which with ``L`` adapted
  layers and a head of ``H`` parameters allows ``(max_params − H) // L`` per layer (a budget above
  it is lowered to it). Every family then takes its most expressive member that fits, as
  :func:`surm_core.from_budget` does, except:
* ``monarch.nblocks`` (log-uniform 1 … d_in) with the budget is MoRe's space: that many blocks
  (or the largest fewer that fit) with the largest ``blk_r`` within the budget, so every
  ``(nblocks, blk_r)`` is reachable.
* ``ldr.r`` (log-uniform 1 … 16): the displacement rank (or the largest lower one that fits),
  with the smallest tiles within the budget.
* ``targets``: a target-module preset, when more than one is given (the engine's
  ``attention-qv``, ``attention-all``, ``all-linear``, or comma-separated module-name suffixes
  such as ``query,key,value``).
* ``<family>.lr``: the peak learning rate, log-uniform over the family's range in
  :data:`LR_RANGES` (the prior: structured maps start at zero and move few parameters, so they
  want larger steps than LoRA). Each range is about a decade wide around the rate the Pareto
  study in ``benchmarks/RESULTS.md`` chose for that family: with two decades, BBC trials drew rates
  that train to chance (Kronecker at 0.14: 0.24 accuracy; circulant at 0.078: 0.27).
"""
from __future__ import annotations

import dataclasses

from ..adapters.layer import layer_shape
from ..adapters.targets import head_names, match_targets
from ..families import FAMILIES
from ..families.monarch import monarch_dims
from ..finetune.config import TARGET_PRESETS
from ..finetune.prepare import resolve_targets

HEAD_ONLY = "head-only"
#: Peak learning-rate range per family (log-uniform); families not listed take ``STRUCTURED_LR``.
STRUCTURED_LR = (1e-3, 3e-2)
LR_RANGES = {
    "lowrank": (3e-3, 3e-2),
    "dense": (1e-5, 1e-3),
    "kronecker": (1e-2, 1e-1),
    "monarch": (3e-2, 3e-1),
    HEAD_ONLY: (3e-2, 3e-1),
}
#: The user attribute that marks a head-only trial run at a fixed rate, outside the sampler.
REFERENCE = "head_only_reference"
#: Largest LDR displacement rank searched (SURM uses r ≤ 4; beyond 16 a tile is nearly dense).
MAX_LDR_RANK = 16


@dataclasses.dataclass(frozen=True)
class Layers:
    """What the model offers the search: ``(d_out, d_in)`` of every layer each target preset
    adapts, and the number of head parameters every method trains."""

    shapes: dict[str, list[tuple[int, int]]]
    head_params: int


def model_layers(model, targets, head: list[str] | None = None) -> Layers:
    """:class:`Layers` of a loaded ``model`` for the presets ``targets``; ``head``: the names of the
    modules every trial trains (``None``: the classification head; a causal LM trains none)."""
    shapes = {t: [layer_shape(model.get_submodule(n)) for n in match_targets(model, resolve_targets(model, target_modules(t)))]
              for t in targets}
    head = sum(p.numel() for n in (head_names(model) if head is None else head) for p in model.get_submodule(n).parameters())
    return Layers(shapes, head)


def target_modules(preset: str):
    """A preset's ``target_modules`` value for :class:`surm_core.finetune.FinetuneConfig`: the
    engine's preset name, or the list of comma-separated module-name suffixes."""
    if preset in TARGET_PRESETS:
        return preset
    names = [n.strip() for n in preset.split(",")]
    if not all(names):
        raise ValueError(f"target preset {preset!r}: use one of {list(TARGET_PRESETS)} or comma-separated module names")
    return names


@dataclasses.dataclass
class SearchSpace:
    """The families to try, their size limit (per layer or in total) and the target presets."""

    families: list[str]
    max_budget: int | None = None
    max_params: int | None = None
    targets: list[str] = dataclasses.field(default_factory=lambda: ["attention-qv"])
    min_budget: int | None = None

    def __post_init__(self):
        self.families, self.targets = list(self.families), list(self.targets)
        if not self.families:
            raise ValueError(f"give at least one family to search: {', '.join([*FAMILIES, HEAD_ONLY])}")
        unknown = [f for f in self.families if f not in FAMILIES and f != HEAD_ONLY]
        if unknown:
            raise ValueError(f"unknown family {unknown[0]!r}; known: {', '.join([*FAMILIES, HEAD_ONLY])}")
        if len(set(self.families)) < len(self.families):
            raise ValueError(f"a family is listed twice in {self.families}")
        if (self.max_budget is None) == (self.max_params is None) and self.adapters:
            raise ValueError("give exactly one size limit: a maximum budget per layer or a maximum of trainable parameters")
        for name in ("max_budget", "max_params", "min_budget"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.targets:
            raise ValueError("give at least one target preset")
        for t in self.targets:
            target_modules(t)

    @property
    def adapters(self) -> list[str]:
        return [f for f in self.families if f != HEAD_ONLY]

    def head_only_references(self, trials: int) -> list[tuple[dict, dict]]:
        """The head-only trials a search of ``trials`` runs first (none without head-only, or when
        it is searched alone): one per four trials, one to three, at the centres of equal log-scale
        parts of its learning-rate range, as ``(params, user_attrs)`` for ``study.enqueue_trial``.

        >>> [round(p["head-only.lr"], 3) for p, _ in SearchSpace(["circulant", "head-only"], max_budget=64).head_only_references(40)]
        [0.044, 0.095, 0.204]
        """
        if HEAD_ONLY not in self.families or not self.adapters:
            return []
        count = max(1, min(3, trials // 4))
        low, high = LR_RANGES[HEAD_ONLY]
        return [({f"{HEAD_ONLY}.lr": low * (high / low) ** ((i + 0.5) / count)}, {REFERENCE: True})
                for i in range(count)]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def smallest(self, family: str, shapes) -> int:
        """The smallest budget per layer searched for ``family`` on ``shapes``: its smallest member
        that fits every layer, or ``min_budget`` when larger."""
        cls = FAMILIES[family]
        return max(self.min_budget or 1, *(cls.count(d_out, d_in, **cls.smallest(d_out, d_in)) for d_out, d_in in shapes))

    def largest(self, shapes, layers: Layers) -> int:
        """The largest budget per layer allowed on ``shapes``."""
        if self.max_budget is not None:
            return self.max_budget
        return (self.max_params - layers.head_params) // len(shapes)

    def check(self, layers: Layers) -> None:
        """Raise ``ValueError`` unless every family fits every preset within the size limit."""
        if self.max_params is not None and self.max_params < layers.head_params:
            raise ValueError(f"max_params {self.max_params:,} is below the {layers.head_params:,} head parameters every method trains")
        limit = (f"a maximum budget of {self.max_budget:,} per layer" if self.max_budget is not None
                 else f"a maximum of {self.max_params:,} trainable parameters")
        for preset, shapes in layers.shapes.items():
            if not shapes:
                raise ValueError(f"target preset {preset!r} adapts no layer of this model")
            need = {f: self.smallest(f, shapes) for f in self.adapters}
            allowed = self.largest(shapes, layers)
            too_big = {f: n for f, n in need.items() if n > allowed}
            if self.min_budget is not None and self.min_budget > allowed:
                raise ValueError(f"the minimum budget of {self.min_budget:,} per layer is above what {limit} allows ({allowed:,})")
            if too_big and len(too_big) == len(need):
                raise ValueError(
                    f"{limit} allows {allowed:,} parameters per layer, below every family's smallest on this model "
                    f"({', '.join(f'{f} {n:,}' for f, n in need.items())}): raise it")
            if too_big:
                f, n = next(iter(too_big.items()))
                raise ValueError(f"{f}'s smallest member needs {n:,} parameters per layer on this model, but {limit} "
                                 f"allows {allowed:,}: raise it or drop {f}")

    def suggest(self, trial, layers: Layers) -> dict:
        """Sample one trial's ``FinetuneConfig`` fields: ``method``, ``budget`` or ``hparams``,
        ``target_modules`` and ``lr``."""
        adapters = self.adapters
        if trial.user_attrs.get(REFERENCE) or not adapters:
            family = HEAD_ONLY
        else:
            family = trial.suggest_categorical("family", adapters) if len(adapters) > 1 else adapters[0]
        low, high = LR_RANGES.get(family, STRUCTURED_LR)
        lr = trial.suggest_float(f"{family}.lr", low, high, log=True)
        if family == HEAD_ONLY:
            return {"method": family, "budget": None, "hparams": None, "target_modules": None, "lr": lr}
        preset = trial.suggest_categorical("targets", self.targets) if len(self.targets) > 1 else self.targets[0]
        shapes = layers.shapes[preset]
        # The range is the same whatever the preset (Optuna's samplers learn best from a fixed
        # range); a budget above what this preset's layers allow is lowered to it.
        low = max(self.smallest(family, s) for s in layers.shapes.values())
        high = max(self.largest(s, layers) for s in layers.shapes.values())
        budget = min(trial.suggest_int(f"{family}.budget", low, max(low, high), log=True), self.largest(shapes, layers))
        size = {"budget": budget, "hparams": None}
        if family == "monarch":
            nblocks = trial.suggest_int("monarch.nblocks", 1, min(d_in for _, d_in in shapes), log=True)
            size = {"budget": None, "hparams": monarch_hparams(shapes, budget, nblocks)}
        elif family == "ldr":
            r = trial.suggest_int("ldr.r", 1, MAX_LDR_RANK, log=True)
            size = {"budget": None, "hparams": ldr_hparams(shapes, budget, r)}
        return {"method": family, **size, "target_modules": target_modules(preset), "lr": lr}


def monarch_hparams(shapes, budget: int, nblocks: int) -> dict:
    """MoRe's Monarch with ``nblocks`` blocks (or the largest fewer that fit) and the largest
    ``blk_r`` (≤ ``in_blk``) whose ``nblocks·blk_r·(in_blk + out_blk)`` fits ``budget`` on every layer."""
    for k in range(nblocks, 0, -1):
        per_rank = [k * sum(monarch_dims(d_out, d_in, k)) for d_out, d_in in shapes]
        blk_r = min(min(budget // n for n in per_rank), *(monarch_dims(d_out, d_in, k)[0] for d_out, d_in in shapes))
        if blk_r >= 1:
            return {"nblocks": k, "blk_r": blk_r}
    raise ValueError(f"no Monarch map fits {budget} parameters per layer")


def ldr_hparams(shapes, budget: int, r: int) -> dict:
    """LDR with displacement rank ``r`` (or the largest lower one that fits) and the tile size
    with the most parameters within ``budget`` on every layer (then the larger tile)."""
    cls = FAMILIES["ldr"]
    largest_block = min(max(shape) for shape in shapes)
    for rank in range(r, 0, -1):
        fits = [(sum(cls.count(*s, block=b, r=rank) for s in shapes), b) for b in range(rank, largest_block + 1)
                if all(cls.count(*s, block=b, r=rank) <= budget for s in shapes)]
        if fits:
            return {"block": max(fits)[1], "r": rank}
    raise ValueError(f"no LDR map fits {budget} parameters per layer")
