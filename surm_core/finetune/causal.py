"""Causal language-model data for fine-tuning: prompts with completions, or plain texts; the loss
on completion tokens only, and generation (the task itself, with perplexity and exact match, is
:class:`surm_core.finetune.task.CausalLM`).

A row is ``{"prompt": ..., "completion": ...}`` (the model learns to continue the prompt with the
completion; the prompt's tokens carry no loss) or ``{"text": ...}`` (every token carries loss).
A classification dataset (BBC News, a CSV of texts and labels) is phrased as prompts and
completions (``"<article>\\nTopic:"`` → ``" business"``), so that a classification task can be
compared with the classifier path.

>>> data = load_causal_dataset("bbc_news")
>>> data.kind, data.short_labels, data.completions[0]
('prompt-completion', True, ' business')
>>> train, test = split(data)      # stratified by completion when completions are labels
>>> rows = encode(train, tokenizer, max_length=128)  # doctest: +SKIP
>>> rows[0]["labels"][:3]          # the prompt's tokens are -100  # doctest: +SKIP
[-100, -100, -100]
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .data import (
    BBC_NEWS,
    LABEL_COLUMNS,
    DatasetError,
    TextDataset,
    load_dataset,
    read_csv_rows,
    read_jsonl_rows,
    split,
)

#: Label value that ``cross_entropy`` ignores: prompt and padding positions.
IGNORE = -100
#: Completions are "short labels" (and exact match is measured) when each has at most this many
#: words and there are at most half as many distinct completions as rows.
MAX_LABEL_WORDS = 4


@dataclass
class CausalDataset:
    """Prompts with completions (``kind="prompt-completion"``), or texts (``kind="text"``: each
    text is a completion with an empty prompt).

    When the completions are short labels (``short_labels``), ``label_names`` are the distinct
    completions and ``labels[i]`` indexes them, so the split is stratified by completion as a
    classification split would be; otherwise there is one stratum.
    """

    name: str
    kind: str
    prompts: list[str]
    completions: list[str]
    labels: list[int]
    label_names: list[str]
    short_labels: bool

    def __len__(self) -> int:
        return len(self.completions)

    def subset(self, indices) -> "CausalDataset":
        return CausalDataset(
            self.name, self.kind,
            [self.prompts[i] for i in indices],
            [self.completions[i] for i in indices],
            [self.labels[i] for i in indices],
            self.label_names, self.short_labels,
        )


def load_causal_dataset(name_or_path: str, text_column: str | None = None, label_column: str | None = None) -> CausalDataset:
    """Load a ``.jsonl`` / ``.csv`` file with ``prompt`` and ``completion`` columns, or a
    classification dataset phrased as text, or a file of plain texts.

    * ``prompt`` and ``completion`` columns: as they are.
    * A label column (named, or one of ``data.LABEL_COLUMNS``), and ``"bbc_news"``: the
      classification dataset as :func:`surm_core.finetune.load_dataset` reads it (checked the
      same way), each row phrased as ``"<text>\nLabel:"`` → ``" <label>"`` (``Topic`` for BBC
      News), so that a classification task can be compared with the classifier path.
    * Otherwise the ``text`` column (or ``text_column``): plain texts.

    Raises :class:`DatasetError` for a missing or malformed file, none of these columns, a row
    with a non-string prompt or an empty completion / text (row named), and fewer than 2 rows.
    """
    if name_or_path == BBC_NEWS:
        return phrase(load_dataset(BBC_NEWS), "Topic")
    path = Path(name_or_path)
    if not path.is_file():
        raise DatasetError(f"no dataset file at {str(path)!r} (and it is not the built-in {BBC_NEWS!r})")
    readers = {".csv": read_csv_rows, ".jsonl": read_jsonl_rows}
    if path.suffix.lower() not in readers:
        raise DatasetError(f"unsupported file type {path.suffix!r} for {path.name}: use .jsonl or .csv")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DatasetError(f"{path.name} is not UTF-8 text; save the file as UTF-8") from None
    columns, rows = readers[path.suffix.lower()](text, path.name)
    for given, role in ((text_column, "text"), (label_column, "label")):
        if given is not None and given not in columns:
            raise DatasetError(f"{path.name} has no {role} column {given!r}; its columns are {columns}")
    if {"prompt", "completion"} <= set(columns):
        kind, prompt_key, completion_key = "prompt-completion", "prompt", "completion"
    elif label_column is not None or any(c.strip().lower() in LABEL_COLUMNS for c in columns):
        return phrase(load_dataset(str(path), text_column, label_column), "Label")
    elif (text_column or "text") in columns:
        kind, prompt_key, completion_key = "text", None, text_column or "text"
    else:
        raise DatasetError(
            f"{path.name} needs 'prompt' and 'completion' columns, a 'text' column, or text and label columns; "
            f"its columns are {columns}"
        )
    prompts, completions = [], []
    for row_num, row in enumerate(rows, start=1):
        prompt = row.get(prompt_key, "") if prompt_key else ""
        completion = row.get(completion_key)
        if not isinstance(prompt, str):
            raise DatasetError(f"{path.name}: row {row_num} has a {type(prompt).__name__} prompt; prompts must be strings")
        if not isinstance(completion, str) or not completion.strip():
            raise DatasetError(f"{path.name}: row {row_num} has no {completion_key} (an empty or non-string value)")
        prompts.append(prompt)
        completions.append(completion)
    if len(rows) < 2:
        raise DatasetError(f"{path.name} has {len(rows)} row(s); need at least 2 (one to train on, one to test on)")
    return from_pairs(path.name, kind, prompts, completions)


def phrase(data: TextDataset, cue: str) -> CausalDataset:
    """A classification dataset as prompts ``"<text>\n<cue>:"`` and completions ``" <label>"``."""
    prompts = [f"{text}\n{cue}:" for text in data.texts]
    return from_pairs(data.name, "prompt-completion", prompts, [f" {data.label_names[y]}" for y in data.labels])


def from_pairs(name: str, kind: str, prompts: list[str], completions: list[str]) -> CausalDataset:
    distinct = sorted(set(c.strip() for c in completions))
    short = kind == "prompt-completion" and len(distinct) <= len(completions) / 2 and all(
        len(c.split()) <= MAX_LABEL_WORDS for c in distinct
    )
    if not short:
        return CausalDataset(name, kind, prompts, completions, [0] * len(completions), [kind], False)
    index = {c: i for i, c in enumerate(distinct)}
    return CausalDataset(name, kind, prompts, completions, [index[c.strip()] for c in completions], distinct, True)


# -- tokens -----------------------------------------------------------------------------------------
def leading_special_ids(tokenizer) -> list[int]:
    """The special tokens the tokenizer puts before any text: Llama's ``<s>``, BERT's ``[CLS]``,
    none for GPT-2 (found by encoding a probe text with and without them)."""
    bare = tokenizer("x", add_special_tokens=False).input_ids
    full = tokenizer("x").input_ids
    start = next(i for i in range(len(full) - len(bare) + 1) if full[i:i + len(bare)] == bare)
    return full[:start]


def prompt_ids(tokenizer, prompt: str, chat_template: bool = False) -> list[int]:
    """The tokens a completion follows: the tokenizer's leading special tokens and the prompt, or
    the prompt as a user turn of the tokenizer's chat template, with the assistant turn opened."""
    if chat_template:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("this tokenizer has no chat template; train without chat_template")
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return tokenizer(text, add_special_tokens=False).input_ids
    return leading_special_ids(tokenizer) + tokenizer(prompt, add_special_tokens=False).input_ids


def encode(data: CausalDataset, tokenizer, max_length: int, chat_template: bool = False) -> list[dict]:
    """One row per example: ``input_ids`` = prompt tokens + completion tokens + end token, and
    ``labels`` = the same with every prompt token set to ``IGNORE`` (-100), so that only the
    completion (and the end token, which teaches the model to stop) carries loss.

    Rows longer than ``max_length`` lose the start of the prompt first (the end of a prompt,
    where the question usually is, matters most), then the end of the completion. Prompt and
    completion are tokenized separately, exactly as :func:`generate` sees a prompt.
    """
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 for a causal language model, got {max_length}")
    use_template = chat_template and data.kind == "prompt-completion"
    rows = []
    for prompt, completion in zip(data.prompts, data.completions):
        if data.kind == "text":
            head = leading_special_ids(tokenizer)
        else:
            head = prompt_ids(tokenizer, prompt, use_template)
        tail = tokenizer(completion, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        tail = tail[: max_length - 1]  # at least one token of context before the first target
        head = head[len(head) - (max_length - len(tail)):] if len(head) + len(tail) > max_length else head
        rows.append({"input_ids": head + tail, "labels": [IGNORE] * len(head) + tail})
    return rows


class CausalCollator:
    """Rows from :func:`encode` to a right-padded batch ``{"input_ids", "attention_mask", "labels"}``;
    padding has label ``IGNORE``."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict]) -> dict:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id)
        labels = torch.full((len(rows), width), IGNORE)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            ids[i, :n] = torch.tensor(row["input_ids"])
            labels[i, :n] = torch.tensor(row["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# -- loss and metrics -------------------------------------------------------------------------------
def completion_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum of token losses, number of target tokens)``: position t predicts token t+1, and
    positions whose target is ``IGNORE`` (prompt, padding) count for nothing.

    loss = −Σ_t log p(x_{t+1} | x_{≤t}) over targets x_{t+1} ≠ −100
    """
    targets = labels[:, 1:]
    total = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
        ignore_index=IGNORE, reduction="sum",
    )
    return total, (targets != IGNORE).sum()


# -- generation -------------------------------------------------------------------------------------
@torch.no_grad()
def generate(model, tokenizer, prompts, max_new_tokens: int = 32, chat_template: bool = False, max_length: int | None = None):
    """Greedy completions of ``prompts`` (a string or a list of them), up to ``max_new_tokens``
    tokens each, stopping at the end token; the prompt is encoded as in training.

    ``max_length`` (default: the model's context length, if it says) keeps the end of long
    prompts. Returns a string for a string, else a list.

    >>> generate(model, tokenizer, "The film was great fun. Sentiment:", max_new_tokens=4)  # doctest: +SKIP
    ' positive'
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    single = isinstance(prompts, str)
    prompts = [prompts] if single else list(prompts)
    if not prompts:
        return []
    context = max_length or getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    encoded = [prompt_ids(tokenizer, p, chat_template) for p in prompts]
    if context is not None:
        keep = max(1, context - max_new_tokens)
        encoded = [ids[-keep:] for ids in encoded]
    # Left padding: every row's last prompt token sits in the last column, where generation starts.
    width = max(len(ids) for ids in encoded)
    device = next(model.parameters()).device
    ids = torch.full((len(encoded), width), tokenizer.pad_token_id, device=device)
    mask = torch.zeros((len(encoded), width), dtype=torch.long, device=device)
    for i, row in enumerate(encoded):
        ids[i, width - len(row):] = torch.tensor(row, device=device)
        mask[i, width - len(row):] = 1
    eos = model.generation_config.eos_token_id
    eos = sorted({*(eos if isinstance(eos, list) else [eos] if eos is not None else []), tokenizer.eos_token_id})
    was_training = model.training
    model.eval()
    out = model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
        eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
    )
    model.train(was_training)
    texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    return texts[0] if single else texts


__all__ = [
    "IGNORE",
    "CausalCollator",
    "CausalDataset",
    "completion_loss",
    "encode",
    "generate",
    "load_causal_dataset",
    "prompt_ids",
    "split",
]
