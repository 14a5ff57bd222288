"""Put named adapters into a model, switch between them, report what trains, merge and unload.

An adapted model carries its adapters in :class:`~surm_core.adapters.layer.AdaptedLayer` wrappers
and an :class:`AdapterState` (``model.surm_adapters``). Until :func:`merge_and_unload` or
:func:`unload` takes them out, its ``save_pretrained`` writes the active adapter (as PEFT's does)
instead of weights that ``from_pretrained`` would misread.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re

import torch
from torch import nn

from ..families import StructuredMatrix, from_budget, make
from .config import AdapterConfig
from .layer import DEFAULT_ADAPTER, AdaptedLayer, layer_shape
from .targets import default_targets, match_modules_to_save, match_targets, pattern_matches, task_head

#: Attribute under which an adapted model keeps its :class:`AdapterState`.
STATE_ATTR = "surm_adapters"
#: Attribute holding the active adapter's resolved config (what a one-adapter model was adapted with).
CONFIG_ATTR = "surm_adapter_config"


@dataclasses.dataclass
class AdapterState:
    """What an adapted model carries beside its wrapped layers, as ``model.surm_adapters``.

    ``configs``: each adapter's resolved config by name, in the order added; ``active``: the
    adapter that applies and trains; ``saved``: each adapter's modules to save (full names). A
    module to save holds one owner's tensors at a time (``placed``: an adapter's name, or ``None``
    for the base model's own); the other owners' copies wait in ``stash`` by ``(owner, module)``.
    """

    configs: dict[str, AdapterConfig]
    active: str
    saved: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    placed: dict[str, str | None] = dataclasses.field(default_factory=dict)
    stash: dict[tuple, dict[str, torch.Tensor]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Plan:
    """What :func:`inject` would do, without changing the model: the adapters built (not installed).

    ``adapters``: by target full name, the structured map and (residual placement) its bias;
    ``saved``: the modules to save; ``stash``: the starting copies of those modules' tensors for
    an adapter that does not start active (the model's first adapter is active at once, later
    ones wait for :func:`set_adapter`, as in PEFT).
    """

    name: str
    config: AdapterConfig
    adapters: dict[str, tuple[StructuredMatrix, nn.Parameter | None]]
    saved: list[str]
    active: bool
    stash: dict[str, dict[str, torch.Tensor]]


def _check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def adapted_layers(model: nn.Module) -> dict[str, AdaptedLayer]:
    return {n: m for n, m in model.named_modules() if isinstance(m, AdaptedLayer)}


def adapter_state(model: nn.Module) -> AdapterState:
    _check_model(model)
    state = getattr(model, STATE_ATTR, None)
    if state is None:
        raise ValueError("the model has no adapters; call surm_core.inject(model, config) first")
    return state


def _mutable_state(model: nn.Module, action: str) -> AdapterState:
    """The state, checked not to be inside :func:`disable_adapter` (where ``action`` would mix up
    which tensors are in place)."""
    state = adapter_state(model)
    if not all(layer.enabled for layer in adapted_layers(model).values()):
        raise ValueError(f"cannot {action} inside disable_adapter(model); leave the with-block first")
    return state


def adapter_config(model: nn.Module, adapter_name: str | None = None) -> AdapterConfig:
    """The resolved config of adapter ``adapter_name`` (default: the active one)."""
    state = adapter_state(model)
    name = state.active if adapter_name is None else adapter_name
    if name not in state.configs:
        raise ValueError(f"the model has no adapter named {name!r}; it has {list(state.configs)}")
    return state.configs[name]


def check_adapter_name(name) -> str:
    # A name is a key of the layers' nn.ModuleDicts: no dots, and none of ModuleDict's own attributes.
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", name) or hasattr(nn.ModuleDict(), name):
        raise ValueError(
            f"adapter_name must be a non-empty string of letters, digits, '_' and '-' (and not a "
            f"torch ModuleDict attribute such as 'keys'), got {name!r}"
        )
    return name


# -- inject ---------------------------------------------------------------------------------------
def layer_settings(config: AdapterConfig, targets: list[str]) -> dict[str, dict]:
    """Per target full name, ``{"budget": b}`` or ``{"hparams": h}``: from the one key of
    ``budget_pattern`` / ``hparams_pattern`` that matches it, else the config's own. A key that
    matches no target, or a target that two keys match, is a ``ValueError``."""
    chosen: dict[str, tuple[str, dict]] = {}
    for what, patterns in (("budget", config.budget_pattern), ("hparams", config.hparams_pattern)):
        for pattern, value in (patterns or {}).items():
            hits = [t for t in targets if pattern_matches(pattern, t)]
            if not hits:
                raise ValueError(
                    f"{what}_pattern key {pattern!r} matches no target; the targets are "
                    f"{', '.join(targets[:4])}{', …' if len(targets) > 4 else ''}"
                )
            for t in hits:
                if t in chosen:
                    raise ValueError(
                        f"target {t!r} matches both {chosen[t][0]} and {what}_pattern key {pattern!r}; "
                        "make the patterns exclusive"
                    )
                chosen[t] = (f"{what}_pattern key {pattern!r}", {what: value})
    default = {"budget": config.budget} if config.budget is not None else {"hparams": config.hparams or {}}
    return {t: chosen[t][1] if t in chosen else default for t in targets}


def _build_adapter(name: str, base: nn.Module, config: AdapterConfig, settings: dict):
    """The structured map for target ``name`` and, for the residual placement, its zero bias."""
    d_out, d_in = layer_shape(base)
    if config.placement == "adapter":
        d_in = d_out  # S acts on the layer's output
    try:
        if "budget" in settings:
            adapter = from_budget(config.family, d_out, d_in, settings["budget"])
        else:
            adapter = make(config.family, d_out, d_in, **settings["hparams"])
    except ValueError as e:
        raise ValueError(f"cannot adapt {name!r} ({d_out}×{d_in}): {e}") from None
    w = base.weight
    adapter = adapter.to(device=w.device, dtype=w.dtype)
    bias = nn.Parameter(torch.zeros(d_out, device=w.device, dtype=w.dtype)) if config.placement == "adapter" else None
    return adapter, bias


def _clone(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: t.detach().clone() for k, t in module.state_dict().items()}


def plan(model: nn.Module, config: AdapterConfig, adapter_name: str = DEFAULT_ADAPTER) -> Plan:
    """What :func:`inject` would do, without changing the model (``ValueError`` if it cannot)."""
    _check_model(model)
    if not isinstance(config, AdapterConfig):
        raise ValueError(f"config must be an AdapterConfig, got {type(config).__name__}")
    name = check_adapter_name(adapter_name)
    state = getattr(model, STATE_ATTR, None)
    if state is None and adapted_layers(model):
        raise ValueError("the model holds adapted layers but no adapter state; load a fresh base model")
    if state is not None:
        _mutable_state(model, "add an adapter")
        if name in state.configs:
            raise ValueError(
                f"the model already has adapters named {list(state.configs)}; give another adapter_name "
                "to add one, or load a fresh base model"
            )
    if config.target_modules is None:
        config = dataclasses.replace(config, target_modules=default_targets(model))
    head = task_head(model, config.task_type)
    if head:
        config = dataclasses.replace(config, modules_to_save=list(dict.fromkeys((config.modules_to_save or []) + head)))
    targets = match_targets(model, config.target_modules)
    saved = match_modules_to_save(model, config.modules_to_save)
    protected = list(dict.fromkeys(saved + list(state.placed if state else [])))
    for target in targets:
        clash = [s for s in protected if target == s or target.startswith(s + ".")]
        if clash:
            raise ValueError(f"{target!r} is both a target and inside modules_to_save {clash[0]!r}")
    for path in saved:
        if any(isinstance(m, AdaptedLayer) for m in model.get_submodule(path).modules()):
            raise ValueError(f"module to save {path!r} holds adapted layers; it cannot also be saved whole")
    settings = layer_settings(config, targets)
    adapters = {t: _build_adapter(t, _unwrapped(model.get_submodule(t)), config, settings[t]) for t in targets}
    stash = {}
    if state is not None:  # a later adapter starts from the base model's own tensors
        for path in saved:
            placed = state.placed.get(path)
            stash[path] = _clone(model.get_submodule(path)) if placed is None else \
                {k: t.clone() for k, t in state.stash[(None, path)].items()}
    return Plan(name, config, adapters, saved, active=state is None, stash=stash)


def _unwrapped(module: nn.Module) -> nn.Module:
    return module.base_layer if isinstance(module, AdaptedLayer) else module


def install(model: nn.Module, planned: Plan) -> nn.Module:
    """Carry out a :func:`plan`: wrap the targets, add the adapter, make the active one trainable."""
    state = getattr(model, STATE_ATTR, None)
    if state is None:
        model.requires_grad_(False)
        state = AdapterState(configs={}, active=planned.name)
        setattr(model, STATE_ATTR, state)
        _guard_save_pretrained(model)
    config = planned.config
    for target, (adapter, bias) in planned.adapters.items():
        layer = model.get_submodule(target)
        if not isinstance(layer, AdaptedLayer):
            layer = AdaptedLayer(layer)
            layer.active_adapter = state.active
            parent, _, child = target.rpartition(".")
            setattr(model.get_submodule(parent), child, layer)
        layer.add_adapter(planned.name, adapter, bias, config.placement, config.scale, config.dropout)
    state.configs[planned.name] = config
    state.saved[planned.name] = planned.saved
    for path in planned.saved:
        if planned.active:
            state.stash[(None, path)] = _clone(model.get_submodule(path))
            state.placed[path] = planned.name
        else:
            state.placed.setdefault(path, None)
            state.stash[(planned.name, path)] = planned.stash[path]
    _activate(model, state)
    return model


def inject(model: nn.Module, config: AdapterConfig, adapter_name: str = DEFAULT_ADAPTER) -> nn.Module:
    """Adapt ``model`` in place per ``config`` and return it.

    The targeted layers get a zero-initialised adapter (so the outputs do not change), every other
    parameter is frozen except those of ``config.modules_to_save``. A model's first adapter is
    active at once; injecting more (each under its own ``adapter_name``) adds them inactive, to
    switch to with :func:`set_adapter` (as PEFT's ``add_adapter``).

    >>> model = inject(nn.Sequential(nn.Linear(4, 4)), AdapterConfig("circulant", ["0"]))
    >>> trainable_report(model)["adapter_params"]
    4
    """
    return install(model, plan(model, config, adapter_name))


def _place_modules(model: nn.Module, state: AdapterState, owner: str | None) -> None:
    """Put ``owner``'s copies of the modules to save in place (``None``: the base model's own);
    a module ``owner`` does not save gets the base model's."""
    for path, now in state.placed.items():
        want = owner if owner is not None and path in state.saved[owner] else None
        if now == want:
            continue
        module = model.get_submodule(path)
        state.stash[(now, path)] = _clone(module)
        module.load_state_dict(state.stash.pop((want, path)))
        state.placed[path] = want


def _activate(model: nn.Module, state: AdapterState) -> None:
    """Make ``state.active`` the adapter that applies, and the only one that trains."""
    for layer in adapted_layers(model).values():
        layer.active_adapter = state.active
        for name in layer.adapters:
            for p in layer.adapter_parameters(name).values():
                p.requires_grad_(name == state.active)
    _place_modules(model, state, state.active)
    for path in state.placed:
        model.get_submodule(path).requires_grad_(path in state.saved[state.active])
    setattr(model, CONFIG_ATTR, state.configs[state.active])


def set_adapter(model: nn.Module, adapter_name: str) -> nn.Module:
    """Make ``adapter_name`` the adapter that applies and trains (the others freeze and wait).

    Its modules to save (a task head) come into place, and the previous adapter's are kept.
    Not while merged: :func:`unmerge` first.
    """
    state = _mutable_state(model, "switch adapters")
    if adapter_name not in state.configs:
        raise ValueError(f"the model has no adapter named {adapter_name!r}; it has {list(state.configs)}")
    if any(layer.merged for layer in adapted_layers(model).values()):
        raise ValueError(f"adapter {state.active!r} is merged into the weights; unmerge(model) before switching")
    state.active = adapter_name
    _activate(model, state)
    return model


def disable_adapter(model: nn.Module):
    """A context manager inside which ``model`` computes as its base model, exactly.

    Every adapter is skipped and the modules to save hold the base model's own tensors; on leaving,
    the active adapter is back. Not while merged (undoing a merge is exact only up to rounding).

    >>> with disable_adapter(model):  # doctest: +SKIP
    ...     base_logits = model(**batch).logits
    """
    state = _mutable_state(model, "disable the adapters again")
    layers = list(adapted_layers(model).values())
    if any(layer.merged for layer in layers):
        raise ValueError("the adapters are merged into the weights; unmerge(model) before disable_adapter")
    return _disabled(model, state, layers)


@contextlib.contextmanager
def _disabled(model, state, layers):
    for layer in layers:
        layer.enabled = False
    _place_modules(model, state, None)
    try:
        yield model
    finally:
        _place_modules(model, state, state.active)
        for layer in layers:
            layer.enabled = True


# -- report ---------------------------------------------------------------------------------------
def trainable_report(model: nn.Module) -> dict:
    """What trains: per layer of the active adapter its name, family, placement, shape (of ΔW or S),
    hparams and ``params`` (all its adapter tensors, S's bias included); the totals
    ``adapter_params`` (the active adapter's), ``trainable_params`` (adapter plus modules to save),
    ``base_params`` (all parameters but adapters) and ``percent`` = 100·trainable/base.
    Works on models without adapters too.
    """
    _check_model(model)
    layers, adapter_ids = [], set()
    for name, layer in adapted_layers(model).items():
        adapter_ids |= {id(p) for n in layer.adapters for p in layer.adapter_parameters(n).values()}
        if layer.active_adapter not in layer.adapters:
            continue
        layers.append({
            "name": name,
            "family": layer.adapter.family,
            "placement": layer.placement,
            "shape": list(layer.adapter.shape),
            "hparams": dict(layer.adapter.hparams),
            "params": sum(p.numel() for p in layer.adapter_parameters().values()),
        })
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    base = sum(p.numel() for p in model.parameters() if id(p) not in adapter_ids)
    return {
        "layers": layers,
        "adapter_params": sum(layer["params"] for layer in layers),
        "trainable_params": trainable,
        "base_params": base,
        "percent": 100.0 * trainable / base if base else 0.0,
    }


def format_report(report: dict) -> str:
    """A :func:`trainable_report` as a printable table with a totals line."""
    rows = [("layer", "family", "shape", "params")] + [
        (r["name"], r["family"], "×".join(map(str, r["shape"])), f"{r['params']:,}") for r in report["layers"]
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d:>{widths[3]}}" for a, b, c, d in rows
    ]
    lines.append(
        f"adapter params {report['adapter_params']:,} in {len(report['layers'])} layers; "
        f"trainable {report['trainable_params']:,} = {report['percent']:.4f}% of "
        f"{report['base_params']:,} base params"
    )
    return "\n".join(lines)


def print_trainable_parameters(model: nn.Module) -> None:
    """Print PEFT's one line: parameters that train, all parameters (adapters included), and the share.

    >>> print_trainable_parameters(inject(nn.Sequential(nn.Linear(4, 4)), AdapterConfig("circulant", ["0"])))
    trainable params: 4 || all params: 24 || trainable%: 16.6667
    """
    _check_model(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    print(f"trainable params: {trainable:,d} || all params: {total:,d} || "
          f"trainable%: {100 * trainable / total if total else 0.0:.4f}")


# -- merge and unload -----------------------------------------------------------------------------
def _layers(model: nn.Module) -> dict[str, AdaptedLayer]:
    adapter_state(model)
    return adapted_layers(model)


def merge(model: nn.Module) -> nn.Module:
    """Fold the active adapter's ``scale·ΔW`` into each adapted weight: same outputs, no adapter cost.

    Only the ``"delta"`` placement merges; merging a merged model is an error (never a double add).
    A merged model skips its adapter, so it gets no gradients: unmerge before training again.
    """
    state = _mutable_state(model, "merge")
    layers = adapted_layers(model)
    if state.configs[state.active].placement == "adapter":
        raise ValueError(
            "the 'adapter' placement cannot be merged: h + scale·gelu(S h) + b is not linear in h, "
            "so no weight matrix equals it; only placement='delta' merges"
        )
    if any(layer.merged for layer in layers.values()):
        raise ValueError("the adapters are already merged; unmerge(model) first")
    for layer in layers.values():
        if layer.active_adapter in layer.adapters:
            layer.merge()
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """Undo :func:`merge`: subtract ``scale·ΔW`` again (exact up to float rounding)."""
    merged = [layer for layer in _layers(model).values() if layer.merged]
    if not merged:
        raise ValueError("the adapters are not merged; nothing to unmerge")
    for layer in merged:
        layer.unmerge()
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge the active adapter (if not yet merged) and take every adapter out; return the plain model.

    What is left is the model's own class with its own module names, ``from_pretrained``-ready:
    ``merge_and_unload(model).save_pretrained(d)`` then ``from_pretrained(d)`` gives the adapted
    model's outputs. The active adapter's modules to save stay (trained); other adapters are
    dropped. Parameters stay frozen as :func:`inject` left them.
    """
    state = _mutable_state(model, "merge_and_unload")
    if not any(layer.merged for layer in adapted_layers(model).values()):
        merge(model)
    return _unload(model, state, keep=state.active)


def unload(model: nn.Module) -> nn.Module:
    """Take every adapter out without merging; return the base model, as it was before :func:`inject`
    (its modules to save get their original tensors back). Not while merged: :func:`unmerge` first,
    or :func:`merge_and_unload`."""
    state = _mutable_state(model, "unload")
    if any(layer.merged for layer in adapted_layers(model).values()):
        raise ValueError("the adapters are merged into the weights; unmerge(model) before unload, "
                         "or call merge_and_unload(model)")
    return _unload(model, state, keep=None)


def _unload(model: nn.Module, state: AdapterState, keep: str | None) -> nn.Module:
    _place_modules(model, state, keep)
    for name, layer in adapted_layers(model).items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, layer.base_layer)
    for module in model.modules():
        module.__dict__.pop("save_pretrained", None)
    delattr(model, STATE_ATTR)
    delattr(model, CONFIG_ATTR)
    return model


# -- save_pretrained of an adapted model ------------------------------------------------------------
def _guard_save_pretrained(model: nn.Module) -> None:
    """Replace ``save_pretrained`` on the model and on every Hugging Face model inside it.

    Their own would write the wrapper layers' names (``query.base_layer.weight``), which
    ``from_pretrained`` does not know: it would silently re-initialise those weights.
    """
    for module in model.modules():
        if callable(getattr(type(module), "save_pretrained", None)):
            module.save_pretrained = AdaptedSavePretrained(module)


class AdaptedSavePretrained:
    """``save_pretrained`` of an adapted model: writes its active adapter, as
    :func:`surm_core.save_adapter` does (``adapter_config.json``, ``adapter_model.safetensors``) and
    as PEFT's does. What Hugging Face's ``Trainer`` passes is accepted: ``is_main_process`` (only
    the main process writes) and ``state_dict`` (ignored: the adapter's tensors come from the model).
    A merged model, or a model inside an adapted one, refuses with a ``ValueError``.

    A plain object holding its module (not a bound method), so that the model still pickles and
    deep-copies with it.
    """

    def __init__(self, module: nn.Module):
        self.module = module

    def __call__(self, save_directory, is_main_process: bool = True, state_dict=None, **kwargs):
        from .io import save_adapter  # io imports this module

        model = self.module
        fix = ("call surm_core.merge_and_unload(model) for a plain transformers model to save_pretrained, "
               "or surm_core.save_adapter(model, directory) for the adapter alone")
        if getattr(model, STATE_ATTR, None) is None:
            raise ValueError(f"this {type(model).__name__} is part of a model with surm adapters and would save "
                             f"their wrapper layers, which from_pretrained cannot read; {fix}")
        if any(layer.merged for layer in adapted_layers(model).values()):
            raise ValueError("the adapters are merged into the weights but their wrapper layers are still in the "
                             f"model, which from_pretrained cannot read; {fix}")
        if kwargs:
            raise ValueError(f"save_pretrained of a model with surm adapters saves the active adapter and takes "
                             f"only save_directory, is_main_process and state_dict, not {sorted(kwargs)}; {fix}")
        if is_main_process:
            save_adapter(model, save_directory)
