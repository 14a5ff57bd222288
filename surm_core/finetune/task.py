"""What a fine-tuning run learns, behind one small seam: a *task* owns the data, the model's head,
batching, the loss and the metrics, evaluation and prediction; the engine owns everything else
(devices, processes, the optimizer and its schedule, batch order, checkpoints, events).

The tasks are :class:`TextClassification`, :class:`ImageClassification` and :class:`CausalLM`;
:func:`task_for` picks the one a config names (``config.task``) or its model is for.

>>> task = task_for(FinetuneConfig(method="head-only"))  # doctest: +SKIP
>>> model, tokenizer = task.load_model()                 # doctest: +SKIP
>>> task.predict(model, ["Shares fell sharply today"])   # doctest: +SKIP
[{'business': 0.91, 'entertainment': 0.01, ...}]

A task has ``train_split`` and ``test_split`` (unless made only to predict), ``load_model()``,
``head(model)`` (the modules every method trains), ``rows(which, limit)``, ``collate(rows)``
(tensors with ``.to(device)``), ``length(row)`` (for evaluation batching), ``loss(model, batch,
autocast)`` (the mean loss and ``[loss sum, correct, count]`` of a step), ``score(model, batch,
autocast)`` (a vector, its entries named by ``score_names``, that the engine sums over
evaluation batches and processes), ``metrics(totals)`` (the evaluation's numbers, named by
``metric_names``; ``metric`` is the one that ranks evaluations, better when higher if
``higher_is_better``), ``summary()`` and ``predict``.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import BatchEncoding, DataCollatorWithPadding

from ..models import head_names, infer_task, load_causal_lm, load_image_model, load_model
from . import causal, images
from .config import FinetuneConfig
from .data import BBC_NEWS, load_dataset, split, tokenize


class Classification:
    """What text and image classification share: a new head, cross-entropy, accuracy."""

    metric = "eval_acc"
    higher_is_better = True
    metric_names = ("eval_acc",)
    score_names = ("correct", "count")

    def head(self, model) -> list[str]:
        """Names of the head's modules: new, so every method trains them."""
        head = head_names(model)
        if not head:
            raise ValueError(f"found no classification head in {type(model).__name__}")
        return head

    def loss(self, model, batch, autocast) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean loss, [loss sum, correct, count])`` of one batch; the loss in float32."""
        inputs = dict(batch)
        labels = inputs.pop("labels")
        with autocast:
            logits = model(**inputs).logits
        loss = F.cross_entropy(logits.float(), labels)
        return loss, torch.stack([
            loss.detach() * len(labels),
            (logits.argmax(-1) == labels).sum().float(),
            torch.tensor(float(len(labels)), device=labels.device),
        ])

    def score(self, model, batch, autocast) -> torch.Tensor:
        """``[correct, count]`` of one batch (call under ``torch.inference_mode``)."""
        inputs = dict(batch)
        labels = inputs.pop("labels")
        with autocast:
            logits = model(**inputs).logits
        return torch.stack([(logits.argmax(-1) == labels).sum().double(),
                            torch.tensor(float(len(labels)), dtype=torch.float64, device=labels.device)])

    @staticmethod
    def metrics(totals: torch.Tensor) -> dict:
        """``{"eval_acc": accuracy}`` from the summed :meth:`score` of every batch."""
        correct, count = totals.tolist()
        return {"eval_acc": correct / count}

    def summary(self) -> dict:
        """What the run's summary records about the task."""
        return {"task": self.name, "labels": self.label_names}

    @torch.inference_mode()
    def probabilities(self, model, inputs: list, batch_size: int) -> list[dict[str, float]]:
        model.eval()
        device = next(model.parameters()).device
        out = []
        for start in range(0, len(inputs), batch_size):
            batch = self.encode(inputs[start:start + batch_size]).to(device)
            probs = torch.softmax(model(**batch).logits.double(), dim=-1).cpu().tolist()
            out += [dict(zip(self.label_names, p)) for p in probs]
        return out


class TextClassification(Classification):
    """Sequence classification of texts into ``label_names``, scored by accuracy.

    Made from a config, it has read and split the dataset (``train_split``, ``test_split``; the
    split is the same for every run), unless it is given the ``label_names`` of a finished run
    (then it only predicts). Rows are the tokenized feature dicts of
    :func:`surm_core.finetune.tokenize`; a batch is their padded tensors, ``labels`` included.
    """

    name = "text-classification"

    def __init__(self, config: FinetuneConfig, label_names: list[str] | None = None):
        self.config = config
        if label_names is None:
            data = load_dataset(config.dataset, config.text_column, config.label_column)
            label_names = data.label_names
            self.train_split, self.test_split = split(data)
        self.label_names = label_names
        self.tokenizer = self.collator = None

    def load_model(self):
        """``(model, tokenizer)``: the base model with a new ``len(label_names)``-way head."""
        model, self.tokenizer = load_model(self.config.model, num_labels=len(self.label_names))
        self.collator = DataCollatorWithPadding(self.tokenizer)
        return model, self.tokenizer

    def rows(self, which: str, limit: int | None = None) -> list[dict]:
        """The tokenized ``"train"`` or ``"test"`` rows (the first ``limit`` of them)."""
        return tokenize(first(self.train_split if which == "train" else self.test_split, limit), self.tokenizer,
                        self.config.max_length)

    def collate(self, rows: list[dict]):
        """Rows padded to the longest of them, as tensors."""
        return self.collator(rows)

    @staticmethod
    def length(row: dict) -> int:
        return len(row["input_ids"])

    def encode(self, texts: list[str]):
        return self.tokenizer(texts, truncation=True, max_length=self.config.max_length, padding=True, return_tensors="pt")

    def predict(self, model, texts: list[str], batch_size: int = 32) -> list[dict[str, float]]:
        """Class probabilities of each text, ``{label: probability}`` (summing to 1)."""
        return self.probabilities(model, texts, batch_size)


class ImageClassification(Classification):
    """Classification of images into ``label_names``, scored by accuracy (see :mod:`.images`).

    Rows are ``{"image": source, "labels": label}``; the model's image processor makes a
    batch's pixels when it is collated. An image counts as ``max_length`` tokens when the
    engine sizes evaluation batches, so an evaluation batch holds as many images as it would
    hold full-length texts.
    """

    name = "image-classification"

    def __init__(self, config: FinetuneConfig, label_names: list[str] | None = None):
        if config.text_column is not None:
            raise ValueError(
                "text_column is for text datasets; a table of images names its image column "
                f"{', '.join(images.IMAGE_COLUMNS)}"
            )
        self.config = config
        if label_names is None:
            data = images.load_image_dataset(config.dataset, label_column=config.label_column)
            label_names = data.label_names
            self.train_split, self.test_split = split(data)
        self.label_names = label_names
        self.processor = self.collator = None

    def load_model(self):
        """``(model, image_processor)``: the base model with a new ``len(label_names)``-way head."""
        model, self.processor = load_image_model(self.config.model, num_labels=len(self.label_names))
        self.collator = images.ImageCollator(self.processor, getattr(model.config, "num_channels", 3))
        return model, self.processor

    def rows(self, which: str, limit: int | None = None) -> list[dict]:
        return images.image_rows(first(self.train_split if which == "train" else self.test_split, limit))

    def collate(self, rows: list[dict]):
        return self.collator(rows)

    def length(self, row: dict) -> int:
        return self.config.max_length

    def encode(self, sources: list):
        return self.collator([{"image": s, "labels": 0} for s in sources])

    def predict(self, model, sources: list, batch_size: int = 32) -> list[dict[str, float]]:
        """Class probabilities of each image (a path, ``(name, bytes)`` or uint8 array)."""
        return self.probabilities(model, sources, batch_size)


class CausalLM:
    """A causal language model learning completions (or texts), see :mod:`.causal`: the loss is
    the mean over completion tokens; an evaluation reports it (``eval_loss``, the metric, lower
    is better), its ``perplexity``, and — when the completions are short labels — ``eval_acc``,
    the share of rows whose greedy completion is exactly the expected one.

    Exact match comes from the same forward pass as the loss: a greedy completion equals the
    expected tokens (end token included) exactly when, at every completion position, the
    expected token is the most likely one given the ones before it.
    """

    name = "causal-lm"
    metric = "eval_loss"
    higher_is_better = False
    metric_names = ("eval_loss", "perplexity", "eval_acc")
    score_names = ("loss_sum", "tokens", "exact", "rows")

    def __init__(self, config: FinetuneConfig, label_names: list[str] | None = None):
        if config.method == "head-only":
            raise ValueError("method 'head-only' trains a classification head, and a causal language model has none; "
                             "use an adapter family or 'full'")
        self.config = config
        self.short_labels = bool(label_names)
        if label_names is None:
            data = causal.load_causal_dataset(config.dataset, config.text_column, config.label_column)
            self.short_labels = data.short_labels
            label_names = data.label_names if data.short_labels else []
            self.train_split, self.test_split = split(data)
        self.label_names = label_names
        self.tokenizer = self.collator = None

    def load_model(self):
        """``(model, tokenizer)``, the tokenizer with end and padding tokens (see ``load_causal_lm``)."""
        model, self.tokenizer = load_causal_lm(self.config.model)
        self.collator = causal.CausalCollator(self.tokenizer.pad_token_id)
        return model, self.tokenizer

    def head(self, model) -> list[str]:
        """Nothing: the language-model head is pretrained (and often tied to the embeddings)."""
        return []

    def rows(self, which: str, limit: int | None = None) -> list[dict]:
        data = first(self.train_split if which == "train" else self.test_split, limit)
        return causal.encode(data, self.tokenizer, self.config.max_length, self.config.chat_template)

    def collate(self, rows: list[dict]):
        return BatchEncoding(self.collator(rows))

    @staticmethod
    def length(row: dict) -> int:
        return len(row["input_ids"])

    @staticmethod
    def forward(model, batch, autocast):
        inputs = dict(batch)
        labels = inputs.pop("labels")
        with autocast:
            logits = model(**inputs).logits
        targets = labels[:, 1:]
        predicted = logits[:, :-1].argmax(-1)
        return logits, labels, (predicted == targets) & (targets != causal.IGNORE)

    def loss(self, model, batch, autocast) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean loss per completion token, [loss sum, correct tokens, completion tokens])``."""
        logits, labels, right = self.forward(model, batch, autocast)
        total, count = causal.completion_loss(logits, labels)
        return total / count, torch.stack([total.detach(), right.sum().float(), count.float()])

    def score(self, model, batch, autocast) -> torch.Tensor:
        """``[loss sum, completion tokens, rows exactly right, rows]`` of one batch."""
        logits, labels, right = self.forward(model, batch, autocast)
        total, count = causal.completion_loss(logits, labels)
        targets = labels[:, 1:] != causal.IGNORE
        exact = (right == targets).all(-1).sum()
        return torch.stack([total.double(), count.double(), exact.double(),
                            torch.tensor(float(len(labels)), dtype=torch.float64, device=labels.device)])

    def metrics(self, totals: torch.Tensor) -> dict:
        """``{"eval_loss", "perplexity", "eval_acc"}``; ``eval_acc`` (exact match) is ``None``
        unless the completions are short labels."""
        loss_sum, count, exact, rows = totals.tolist()
        eval_loss = loss_sum / count
        return {"eval_loss": eval_loss, "perplexity": math.exp(min(eval_loss, 700.0)),
                "eval_acc": exact / rows if self.short_labels else None}

    def summary(self) -> dict:
        return {"task": self.name, "labels": self.label_names}

    def predict(self, model, prompts: list[str], max_new_tokens: int = 32) -> list[str]:
        """Greedy completions of ``prompts``, up to ``max_new_tokens`` tokens each."""
        return causal.generate(model, self.tokenizer, prompts, max_new_tokens, self.config.chat_template)


TASK_CLASSES = {task.name: task for task in (TextClassification, ImageClassification, CausalLM)}
#: What each task can learn from (see :func:`dataset_kind`), and how to say so.
ACCEPTS = {
    "text-classification": ("texts",),
    "image-classification": ("images",),
    "causal-lm": ("texts", "prompts and completions"),
}
NEEDS = {
    "text-classification": f"texts with labels ({BBC_NEWS!r} or a .csv / .jsonl of texts and labels)",
    "image-classification": "images (a folder with one sub-folder per class, a .zip of one, a .csv / .jsonl of "
                            f"image paths and labels, or {images.DIGITS!r} / {images.FASHION_MNIST!r})",
    "causal-lm": "texts (a .jsonl / .csv with prompt and completion columns, a text column, or texts with labels)",
}


def task_name(config: FinetuneConfig) -> str:
    """The task ``config`` trains: ``config.task``, or the one its model's config is for
    (:func:`surm_core.models.infer_task`)."""
    return config.task or infer_task(config.model)


def task_for(config: FinetuneConfig, label_names: list[str] | None = None):
    """The task ``config`` trains: ``config.task``, or the one its model's config is for
    (:func:`surm_core.models.infer_task`); see :class:`TextClassification` for ``label_names``.

    Before any data is read, a dataset that cannot serve the task (images for a text model, texts
    for an image model, prompts and completions for a classifier) is refused, naming both.
    """
    task = task_name(config)
    if label_names is None:
        kind = dataset_kind(config.dataset)
        if kind not in ACCEPTS[task]:
            source = "" if config.task else f", inferred from model {config.model!r}"
            raise ValueError(
                f"the task is {task}{source}, but dataset {config.dataset!r} holds {kind}; {task} needs {NEEDS[task]}"
            )
    return TASK_CLASSES[task](config, label_names)


def dataset_kind(dataset: str) -> str:
    """``"images"``, ``"prompts and completions"`` or ``"texts"``: what a dataset holds, from its
    name, or a table's first row, without reading it. Anything unclear is ``"texts"``, for the
    text loaders to judge."""
    if dataset in images.BUILT_IN:
        return "images"
    path = Path(dataset)
    if path.is_dir() or path.suffix.lower() == ".zip":
        return "images"
    columns = set()
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            if path.suffix.lower() == ".csv":
                columns = set(next(csv.reader(f), []))
            elif path.suffix.lower() == ".jsonl":
                line = next((line for line in f if line.strip()), "{}")
                row = json.loads(line)
                columns = set(row) if isinstance(row, dict) else set()
    except (OSError, UnicodeDecodeError, csv.Error, json.JSONDecodeError):
        return "texts"
    if {c.strip().lower() for c in columns} & set(images.IMAGE_COLUMNS):
        return "images"
    if {"prompt", "completion"} <= columns:
        return "prompts and completions"
    return "texts"


def first(data, limit: int | None):
    return data.subset(range(limit)) if limit is not None and limit < len(data) else data


__all__ = ["CausalLM", "ImageClassification", "TextClassification", "dataset_kind", "task_for"]
