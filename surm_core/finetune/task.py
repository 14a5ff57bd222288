"""What a fine-tuning run learns, behind one small seam: a *task* owns the data, the model's head,
batching, the loss and the metric, evaluation and prediction; the engine owns everything else
(devices, processes, the optimizer and its schedule, batch order, checkpoints, events).

:class:`TextClassification` is the task there is. Another task (image classification, a causal
language model) is a class with the same attributes and methods, returned by :func:`task_for`.

>>> task = task_for(FinetuneConfig(method="head-only"))  # doctest: +SKIP
>>> model, tokenizer = task.load_model()                 # doctest: +SKIP
>>> task.predict(model, ["Shares fell sharply today"])   # doctest: +SKIP
[{'business': 0.91, 'entertainment': 0.01, ...}]
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DataCollatorWithPadding

from ..models import head_names, load_model
from .config import FinetuneConfig
from .data import load_dataset, split, tokenize


class TextClassification:
    """Sequence classification of texts into ``label_names``, scored by accuracy.

    Made from a config, it has read and split the dataset (``train_split``, ``test_split``; the
    split is the same for every run), unless it is given the ``label_names`` of a finished run
    (then it only predicts). Rows are the tokenized feature dicts of
    :func:`surm_core.finetune.tokenize`; a batch is their padded tensors, ``labels`` included.
    """

    metric = "accuracy"

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

    def head(self, model) -> list[str]:
        """Names of the head's modules: new, so every method trains them."""
        head = head_names(model)
        if not head:
            raise ValueError(f"found no classification head in {type(model).__name__}")
        return head

    def rows(self, which: str, limit: int | None = None) -> list[dict]:
        """The tokenized ``"train"`` or ``"test"`` rows (the first ``limit`` of them)."""
        data = self.train_split if which == "train" else self.test_split
        if limit is not None and limit < len(data):
            data = data.subset(range(limit))
        return tokenize(data, self.tokenizer, self.config.max_length)

    def collate(self, rows: list[dict]) -> dict:
        """Rows padded to the longest of them, as tensors."""
        return self.collator(rows)

    @staticmethod
    def length(row: dict) -> int:
        return len(row["input_ids"])

    def loss(self, model, batch: dict, autocast) -> tuple[torch.Tensor, torch.Tensor]:
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

    def score(self, model, batch: dict, autocast) -> torch.Tensor:
        """``[correct, count]`` of one batch (call under ``torch.inference_mode``)."""
        inputs = dict(batch)
        labels = inputs.pop("labels")
        with autocast:
            logits = model(**inputs).logits
        return torch.stack([(logits.argmax(-1) == labels).sum().double(),
                            torch.tensor(float(len(labels)), dtype=torch.float64, device=labels.device)])

    @staticmethod
    def metric_value(totals: torch.Tensor) -> float:
        """Accuracy from the summed :meth:`score` of every batch."""
        correct, count = totals.tolist()
        return correct / count

    def summary(self) -> dict:
        """What the run's summary records about the task."""
        return {"labels": self.label_names}

    @torch.inference_mode()
    def predict(self, model, texts: list[str], batch_size: int = 32) -> list[dict[str, float]]:
        """Class probabilities of each text, ``{label: probability}`` (summing to 1)."""
        model.eval()
        device = next(model.parameters()).device
        out = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(texts[start:start + batch_size], truncation=True, max_length=self.config.max_length,
                                   padding=True, return_tensors="pt").to(device)
            probs = torch.softmax(model(**batch).logits.double(), dim=-1).cpu().tolist()
            out += [dict(zip(self.label_names, p)) for p in probs]
        return out


def task_for(config: FinetuneConfig, label_names: list[str] | None = None) -> TextClassification:
    """The task ``config`` trains (text classification: the only one so far); see
    :class:`TextClassification` for ``label_names``."""
    return TextClassification(config, label_names)
