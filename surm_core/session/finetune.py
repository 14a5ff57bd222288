"""The Fine-tune tab's settings: the engine's config from the page's fields, the server's limits,
a run's readable default name, and where an uploaded dataset goes.

>>> config = finetune_config("", None, "circulant", budget=384, steps=20, batch_size=8, lr=5e-3, seed=0)
>>> default_run_name(config)
'circulant-384-q,v-s0'
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import shutil
from pathlib import Path

from ..families import FAMILIES
from ..families.base import check_size
from ..finetune import BASELINES, BBC_NEWS, FinetuneConfig, check_seed, preview
from ..finetune import images
from ..finetune.engine import describe as describe_device
from ..finetune.engine import pick_device
from ..finetune.prepare import dataset_labels, file_stamp
from ..models import DEFAULT_MODEL, TASKS, check_name, infer_task

#: Methods offered, as (label, value): the families an adapter can use, then the two baselines.
#: Dense is left out: as an adapter it is full fine-tuning of the targeted layers.
METHODS = [("lowrank (LoRA)" if f == "lowrank" else f, f) for f in FAMILIES if f != "dense"] + [
    ("full fine-tuning", "full"), ("head only", "head-only")]

#: Layers an adapter goes on, as (label, value): the engine's presets (named per architecture),
#: or "custom": module-name suffixes, or a regular expression over full module names.
TARGETS = [("attention q, v", "attention-qv"), ("all attention", "attention-all"),
           ("all linear layers", "all-linear"), ("custom", "custom")]
#: How a run's default name says which layers it adapted.
SHORT_TARGETS = {None: "q,v", "attention-qv": "q,v", "attention-all": "q,k,v,o", "all-linear": "all-linear"}
#: A custom target with any of these characters is a regular expression, else a list of suffixes.
REGEX_CHARS = set("\\^$.*+?()[]{}|")

#: What a fine-tune learns, as (label, value): the task selector's choices.
TASK_CHOICES = [("text classification", "text-classification"), ("image classification", "image-classification"),
                ("causal LM", "causal-lm")]
#: Files a task's dataset upload takes.
UPLOAD_TYPES = {"text-classification": [".csv", ".jsonl"], "image-classification": [".zip", ".csv", ".jsonl"],
                "causal-lm": [".jsonl", ".csv"]}
#: What a task's upload holds, for the page.
UPLOAD_HELP = {
    "text-classification": "a .csv / .jsonl of texts and labels",
    "image-classification": "a .zip of a folder with one sub-folder of images per class, or a .csv / .jsonl of image "
                            "paths on this server and labels",
    "causal-lm": "a .jsonl (or .csv) with prompt and completion columns (the loss is on the completion), or a text column",
}
#: The model a task needs when the model field is empty: only text classification has one packaged.
MODEL_HINTS = {"image-classification": "a vision model such as ViT (a local directory or a hub id, e.g. "
                                       "google/vit-base-patch16-224-in21k)",
               "causal-lm": "a causal language model such as GPT-2, Llama or Qwen (a local directory or a hub id, e.g. gpt2)"}
#: Datasets that come with the server, used when nothing is uploaded.
BUILT_IN = (BBC_NEWS, *images.BUILT_IN)


def built_in_datasets(task: str) -> tuple[list[tuple[str, str]], str]:
    """The built-in datasets ``task`` can train on, as (label, value), and a note for the page
    (empty, or that Fashion-MNIST is not installed on this server)."""
    check_task(task)
    if task == "text-classification":
        return [("BBC News (5 topics, built in)", BBC_NEWS)], ""
    if task == "causal-lm":
        return [("BBC News as prompt → topic (built in)", BBC_NEWS)], ""
    choices = [("digits (scikit-learn, 8×8, built in)", images.DIGITS)]
    if images.FASHION_MNIST_DIR.is_dir():
        return choices + [("Fashion-MNIST (Debian's dataset-fashion-mnist)", images.FASHION_MNIST)], ""
    return choices, ("Fashion-MNIST is not installed on this server (`apt-get install dataset-fashion-mnist` "
                     "adds it).")


def check_task(task) -> str:
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    return task


def typed_model_task(model, current: str) -> str:
    """The task selector's value once ``model`` is typed: the task its config is for (see
    :func:`surm_core.models.infer_task`), or ``current`` while the field is empty or the model
    cannot be read (the plan then says why).

    >>> typed_model_task("", "causal-lm")
    'causal-lm'
    """
    model = (model or "").strip()
    if not model:
        return current
    try:
        return infer_task(model)
    except ValueError:
        return current


def model_field(model, task: str) -> str:
    """The model field's value as the engine takes it: empty is the packaged MiniLM, for text
    classification (the other tasks ask for a model); a name that cannot be one is refused
    (:func:`surm_core.models.check_name`); a local directory becomes its absolute path (the
    training or search process runs in a directory of its own)."""
    if not (model and str(model).strip()) and task in MODEL_HINTS:
        raise ValueError(f"{task} needs {MODEL_HINTS[task]}: type it in the model field (the packaged MiniLM is a "
                         "text model)")
    model = check_name(model if model and str(model).strip() else DEFAULT_MODEL).strip()
    # os.path.isdir: Path.is_dir raises on a name too long for the file system
    if os.path.isdir(Path(model).expanduser()):
        model = str(Path(model).expanduser().resolve())
    return model


def dataset_choice(task: str, upload: str | None, built_in: str | None) -> str:
    """The dataset a run of ``task`` trains on: the upload if there is one, else the chosen
    built-in dataset (else the task's first), refused when it does not fit the task."""
    if upload:
        return upload
    choices = [value for _, value in built_in_datasets(task)[0]]
    if not built_in:
        return choices[0]
    if built_in not in choices:
        if built_in == images.FASHION_MNIST:
            raise ValueError(built_in_datasets(task)[1])
        raise ValueError(f"the built-in dataset {built_in!r} does not fit {task}: choose one of {', '.join(choices)} "
                         "or upload a file")
    return built_in


#: A run name (and its directory): letters, digits and ``. , = + -``; other characters become "-".
NAME_CHARS = re.compile(r"[^A-Za-z0-9.,=+-]+")
MAX_NAME = 80


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one fine-tune may ask of this server; larger requests are refused before they start."""

    max_steps: int = 5000
    max_classes: int = 100
    max_upload_mb: float = 20.0


def device_name() -> str:
    """The device a fine-tune started now runs on ("cpu" or "cuda:0 (<GPU name>)")."""
    return describe_device(pick_device("auto"))


def finetune_config(model: str | None, dataset: str | None, method: str, budget=None, steps=200,
                    batch_size=32, lr=5e-3, seed=0, *, text_column: str | None = None,
                    label_column: str | None = None, rank=None, alpha=None, targets: str = "attention-qv",
                    custom_targets: str = "", max_length=128, warmup_ratio=0.1, eval_every=50,
                    eval_size="512", task: str = "text-classification", built_in: str | None = None,
                    chat_template: bool = False, limits: Limits = Limits()) -> FinetuneConfig:
    """The engine's config for one run from the page's fields, each checked with a message that
    names it. ``task`` is the task selector's (see :data:`TASK_CHOICES`); ``dataset`` an upload,
    else ``built_in`` (see :func:`built_in_datasets`; empty: the task's first). An empty model is
    the packaged MiniLM, for text classification; the other tasks ask for one. LoRA (``"lowrank"``) is
    sized by ``rank`` and ``alpha``, the other families by ``budget`` (parameters per layer); the
    baselines ("full", "head-only") by neither, and they take no targets. More steps than
    ``limits`` allow are refused here; the dataset's limits are checked by :func:`check_dataset`.
    """
    if method not in {value for _, value in METHODS}:
        raise ValueError(f"method must be one of {', '.join(v for _, v in METHODS)}, got {method!r}")
    if method in BASELINES:
        size, hparams, target_modules = None, None, None
    elif method == "lowrank":
        rank = check_size("LoRA rank r", rank)
        alpha = rank if alpha is None else positive_number("LoRA alpha", alpha)
        size, hparams, target_modules = None, {"r": rank, "alpha": alpha}, parse_targets(targets, custom_targets)
    else:
        size, hparams, target_modules = check_size("budget", budget), None, parse_targets(targets, custom_targets)
    task = check_task(task)
    model = model_field(model, task)
    if not isinstance(chat_template, bool):
        raise ValueError(f"chat template must be true or false, got {chat_template!r}")
    return FinetuneConfig(
        model=model,
        task=task,
        chat_template=chat_template and task == "causal-lm",
        dataset=dataset_choice(task, dataset, built_in),
        text_column=(text_column or "").strip() or None,
        label_column=(label_column or "").strip() or None,
        method=method, budget=size, hparams=hparams, target_modules=target_modules,
        steps=check_steps(steps, limits),
        batch_size=check_size("batch size", batch_size),
        lr=positive_number("learning rate", lr),
        seed=check_seed(seed),
        max_length=check_size("max length", max_length),
        warmup_ratio=fraction("warmup", warmup_ratio),
        eval_every=check_size("eval every", eval_every),
        eval_size=parse_eval_size(eval_size),
    )


def model_error(message: str, model: str) -> str:
    """``message`` unless it is about loading the model: then one message for every failure, since
    the details would tell a visitor which directories exist on the server."""
    if message.startswith("could not load model"):
        return f"could not load a model from {model!r}: give a local model directory or a Hugging Face hub id"
    return message


#: Columns of the matched-layers table shown before a run starts.
PLAN_COLUMNS = ["layer", "family", "shape", "hyperparameters", "parameters"]


def plan(config: FinetuneConfig, limits: Limits) -> tuple[str, list[list]]:
    """What ``config`` would train, before it starts: one line for people (layers adapted,
    trainable parameters, their share of the model) and the adapted layers as rows of
    :data:`PLAN_COLUMNS`. ``ValueError`` as the run would raise (a target that matches nothing,
    a budget the family cannot meet, a model that does not load, a dataset beyond ``limits``).
    """
    check_dataset(config, limits)
    try:
        p = preview(config)
    except ValueError as e:
        raise ValueError(model_error(str(e), config.model)) from None
    head = sum(h["params"] for h in p["head"])
    share = f"{p['trainable_params']:,} trainable parameters, {p['percent']:.3g}% of the model's {p['base_params']:,}"
    if config.method in BASELINES:
        line = f"{config.method}: {share}" + (f" (the head's {head:,} included)" if p["head"] else "")
    else:
        kinds = ", ".join(dict.fromkeys(layer["name"].rsplit(".", 1)[-1] for layer in p["layers"]))
        line = (f"{len(p['layers'])} layers adapted ({kinds}) · {share}: {p['adapter_params']:,} in adapters"
                + (f" + {head:,} in the head" if p["head"] else " (the language-model head stays as it is)"))
    rows = [[layer["name"], layer["family"], " × ".join(map(str, layer["shape"])),
             ", ".join(f"{k}={v}" for k, v in layer["hparams"].items()), layer["params"]] for layer in p["layers"]]
    return line, rows


def check_steps(steps, limits: Limits) -> int:
    steps = check_size("steps", steps)
    if steps > limits.max_steps:
        raise ValueError(f"steps = {steps:,} is more than this server allows ({limits.max_steps:,}; "
                         "the --max-steps flag of app.py sets it)")
    return steps


def positive_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return value


def fraction(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a fraction of the steps in [0, 1), got {value!r}")
    return value


def parse_eval_size(text) -> int | None:
    """``"all"`` (the whole test split: ``None``) or a positive number of test rows."""
    text = str(text).strip()
    if text.lower() == "all":
        return None
    try:
        return check_size("eval size", int(text))
    except ValueError:
        raise ValueError(f"eval size must be a positive number of rows or 'all', got {text!r}") from None


def parse_targets(preset: str, custom: str) -> list[str] | str:
    """``target_modules`` for the engine: a preset, or the custom field: a regular expression (when
    it has regex characters) or comma-separated module-name suffixes."""
    if preset != "custom":
        if preset not in SHORT_TARGETS:
            raise ValueError(f"targets must be one of {', '.join(v for _, v in TARGETS)}, got {preset!r}")
        return preset
    custom = (custom or "").strip()
    if REGEX_CHARS & set(custom):
        return custom
    names = [n.strip() for n in custom.split(",") if n.strip()]
    if not names:
        raise ValueError("custom targets: give module-name suffixes separated by commas (e.g. query, key, value) "
                         "or a regular expression over module names (e.g. .*attention.*)")
    return names


def short_targets(target_modules) -> str:
    if isinstance(target_modules, list):
        return ",".join(target_modules)
    return SHORT_TARGETS.get(target_modules, "re")


def default_run_name(config: FinetuneConfig) -> str:
    """What the run did, readable: ``circulant-384-q,v-s0``, ``lowrank-r8-a16-q,v-s0``, ``full-s0``."""
    parts = [config.method]
    if config.method == "lowrank":
        r, alpha = config.hparams["r"], config.hparams["alpha"]
        parts += [f"r{r}"] + ([] if alpha == r else [f"a{alpha:g}"])
    elif config.budget is not None:
        parts.append(str(config.budget))
    if config.method not in BASELINES:
        parts.append(short_targets(config.target_modules))
    return check_run_name("-".join(parts + [f"s{config.seed}"]))


def check_run_name(name) -> str:
    """A run name made safe for a directory: other characters become "-", at most ``MAX_NAME`` long."""
    name = NAME_CHARS.sub("-", str(name or "")).strip("-.")[:MAX_NAME]
    if not name:
        raise ValueError("a run name needs at least one letter or digit")
    return name


def check_dataset(config: FinetuneConfig, limits: Limits) -> dict:
    """Check the run's dataset against its task and the server's limits, before anything starts
    (a dataset that does not fit the task is refused, naming both); return how a summary records
    it: the built-in name, or an upload's original name and SHA-256 (never a server path)."""
    def labels():
        try:
            return dataset_labels(config.model, config.task, config.dataset, config.text_column, config.label_column,
                                  *file_stamp(config.dataset))
        except ValueError as e:  # an upload by its name, never where the server keeps it
            raise ValueError(str(e).replace(config.dataset, Path(config.dataset).name)) from None

    if config.dataset in BUILT_IN:
        labels()
        return {"name": config.dataset}
    upload = Path(config.dataset)
    if not upload.is_file():  # the page stayed open longer than the server keeps uploads
        raise ValueError(f"the uploaded dataset {upload.name!r} is no longer on this server (uploads are deleted "
                         "after some hours): upload it again")
    size_mb = upload.stat().st_size / 2**20
    if size_mb > limits.max_upload_mb:
        raise ValueError(f"the dataset is {size_mb:.1f} MB, more than this server accepts "
                         f"({limits.max_upload_mb:g} MB; the --max-upload-mb flag of app.py sets it)")
    classes = len(labels())  # a causal LM's "labels" are its short completions, not classes
    if config.task != "causal-lm" and classes > limits.max_classes:
        raise ValueError(f"the dataset has {classes:,} classes, more than this server allows "
                         f"({limits.max_classes:,}; the --max-classes flag of app.py sets it)")
    return {"name": upload.name, "sha256": hashlib.sha256(upload.read_bytes()).hexdigest()}


def keep_dataset(config: FinetuneConfig, run_dir: Path) -> None:
    """Copy an uploaded dataset into the run directory (``data/<its name>``) and point ``config`` at
    the copy, relative to the run directory: the run can be resumed after the upload is cleaned away."""
    if config.dataset not in BUILT_IN:
        upload = Path(config.dataset)
        (run_dir / "data").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(upload, run_dir / "data" / upload.name)
        config.dataset = f"data/{upload.name}"
