"""Which modules of a model an :class:`AdapterConfig` names."""
from __future__ import annotations

import re

from torch import nn

from .config import TASK_TYPES
from .layer import ADAPTABLE_TYPES, AdaptedLayer

#: Attention projections adapted by default, per architecture, as module-name suffixes (the
#: first group whose names all occur wins): BERT/RoBERTa/MiniLM, ViT/Llama/OPT/BART, DistilBERT,
#: GPT-2 (fused q/k/v), Falcon/BLOOM/GPT-NeoX, T5.
DEFAULT_TARGET_GROUPS = (
    ["query", "value"],
    ["q_proj", "v_proj"],
    ["q_lin", "v_lin"],
    ["c_attn"],
    ["query_key_value"],
    ["q", "v"],
)


def head_names(model: nn.Module) -> list[str]:
    """Names of the task head's top-level modules with parameters (``["classifier"]`` for BERT).

    For a Hugging Face model the head is everything beside the base model (``base_model_prefix``):
    the classifier of BertForSequenceClassification, GPT-2's ``score``, a language model's
    ``lm_head``; parameter-free parts (a dropout) are left out, so the names suit
    ``modules_to_save``. A model without such a split has no head.
    """
    prefix = getattr(model, "base_model_prefix", None)
    children = dict(model.named_children())
    if not prefix or prefix not in children:
        return []
    return [name for name, m in children.items() if name != prefix and any(True for _ in m.parameters())]


def _in(name: str, roots: list[str]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in roots)


def _suffix_match(name: str, suffix: str) -> bool:
    return name == suffix or name.endswith("." + suffix)


def pattern_matches(pattern: str, name: str) -> bool:
    """Whether ``name`` is, or ends after a dot with, a match of the regular expression ``pattern``
    (PEFT's rule for ``rank_pattern``): ``"value"`` matches ``bert.encoder.layer.0.attention.self.value``."""
    return re.fullmatch(rf"(?:.*\.)?(?:{pattern})", name) is not None


def visible_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The named modules a config can name: an adapted layer stands for its base layer, so what it
    holds inside (``base_layer``, its adapters) is hidden and a second adapter can target it."""
    wrapped = [n for n, m in model.named_modules() if isinstance(m, AdaptedLayer)]
    return {n: m for n, m in model.named_modules() if n and not _in(n, [w for w in wrapped if w != n])}


def _adaptable(module: nn.Module) -> bool:
    return isinstance(module, ADAPTABLE_TYPES + (AdaptedLayer,))


def body_linear_names(model: nn.Module) -> list[str]:
    """Names of the adaptable layers (``nn.Linear``, ``Conv1D``) outside the task head."""
    head = head_names(model)
    return [n for n, m in visible_modules(model).items() if _adaptable(m) and not _in(n, head)]


def _examples(model: nn.Module) -> str:
    """A few existing layer names, for error messages."""
    leaves = dict.fromkeys(n.rsplit(".", 1)[-1] for n, m in visible_modules(model).items() if _adaptable(m))
    return ", ".join(list(leaves)[:8]) or "none (the model has no nn.Linear or Conv1D layer)"


def default_targets(model: nn.Module) -> list[str]:
    """The attention projections to adapt when none are named, as module-name suffixes.

    Query and value, as LoRA does (``["query", "value"]`` for BERT-likes), or GPT-2's fused
    ``c_attn``; see ``DEFAULT_TARGET_GROUPS``.
    """
    leaves = {n.rsplit(".", 1)[-1] for n in body_linear_names(model)}
    for group in DEFAULT_TARGET_GROUPS:
        if leaves.issuperset(group):
            return list(group)
    raise ValueError(
        "found no known attention projections to adapt by default; name target_modules "
        f"explicitly (layers here include: {_examples(model)})"
    )


def match_targets(model: nn.Module, target_modules) -> list[str]:
    """Full names of the modules that ``target_modules`` selects, checked to be adaptable.

    Every suffix in a list must match something (so a typo is an error, not a silent no-op).
    """
    if target_modules is None:
        target_modules = default_targets(model)
    modules = visible_modules(model)
    names = list(modules)
    if target_modules == "all-linear":
        matched = body_linear_names(model)
    elif isinstance(target_modules, str):
        matched = [n for n in names if re.fullmatch(target_modules, n)]
    else:
        matched = []
        for suffix in target_modules:
            hits = [n for n in names if _suffix_match(n, suffix)]
            if not hits:
                raise ValueError(
                    f"target module {suffix!r} matches no module; layers here include: {_examples(model)}"
                )
            matched += hits
    matched = list(dict.fromkeys(matched))
    if not matched:
        raise ValueError(
            f"target_modules {target_modules!r} matches no module; layers here include: {_examples(model)}"
        )
    for name in matched:
        module = modules[name]
        if not _adaptable(module):
            raise ValueError(
                f"module {name!r} is a {type(module).__name__}; only nn.Linear and GPT-2's Conv1D "
                "layers can be adapted"
            )
    return matched


def match_modules_to_save(model: nn.Module, suffixes: list[str] | None) -> list[str]:
    """Full names of the modules to train fully and save (outermost ones, if they nest)."""
    if not suffixes:
        return []
    names = list(visible_modules(model))
    matched = []
    for suffix in suffixes:
        hits = [n for n in names if _suffix_match(n, suffix)]
        if not hits:
            top = ", ".join(n for n, _ in model.named_children())
            raise ValueError(f"module to save {suffix!r} matches no module; top-level modules: {top}")
        matched += hits
    matched = list(dict.fromkeys(matched))
    return [n for n in matched if not any(n.startswith(m + ".") for m in matched)]


def task_head(model: nn.Module, task_type: str | None) -> list[str]:
    """The head that ``task_type`` trains and saves: :func:`head_names` of a model of that task."""
    if task_type is None:
        return []
    kind = type(model).__name__
    if not kind.endswith(TASK_TYPES[task_type]):
        raise ValueError(
            f"task_type {task_type!r} is for *{TASK_TYPES[task_type]} models, not a {kind}; "
            "name the modules to train fully in modules_to_save instead"
        )
    head = head_names(model)
    if not head:
        raise ValueError(f"task_type {task_type!r}: found no task head beside the base model in this {kind}")
    return head
