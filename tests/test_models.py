"""The packaged default model (all-MiniLM-L6-v2, offline) and load_model on local directories."""
import copy
import os
import re

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may touch the network

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import GPT2Config, GPT2ForSequenceClassification, PreTrainedTokenizerFast  # noqa: E402

from surm_core import (  # noqa: E402
    DEFAULT_MODEL,
    AdapterConfig,
    default_targets,
    format_report,
    inject,
    load_model,
    trainable_report,
)

MINILM_PARAMS = 22_713_216  # BertModel of all-MiniLM-L6-v2 (its model card says 22.7M)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def minilm():
    return load_model(num_labels=5)


def test_default_model_is_the_packaged_minilm(minilm):
    model, tokenizer = minilm
    assert (Path(DEFAULT_MODEL) / "model.safetensors").is_file()
    assert type(model).__name__ == "BertForSequenceClassification" and not model.training
    assert (model.config.num_hidden_layers, model.config.hidden_size, model.config.num_labels) == (6, 384, 5)
    assert sum(p.numel() for p in model.bert.parameters()) == MINILM_PARAMS
    assert tokenizer("structured matrices")["input_ids"][0] == tokenizer.cls_token_id
    assert default_targets(model) == ["query", "value"]


def test_minilm_takes_circulant_adapters_on_query_value(minilm):
    model, tokenizer = copy.deepcopy(minilm[0]), minilm[1]
    batch = tokenizer(["a short text", "a somewhat longer text about business"], padding=True, return_tensors="pt")
    with torch.no_grad():
        before = model(**batch).logits
    inject(model, AdapterConfig("circulant", budget=384, modules_to_save=["classifier"]))
    with torch.no_grad():
        assert (model(**batch).logits - before).abs().max() <= 1e-6
    report = trainable_report(model)
    # 6 layers × (query, value), each 384×384: one 384-parameter circulant; head 384·5 + 5.
    assert len(report["layers"]) == 12
    assert all(r["shape"] == [384, 384] and r["params"] == 384 for r in report["layers"])
    assert report["adapter_params"] == 12 * 384
    assert report["trainable_params"] == 12 * 384 + 384 * 5 + 5
    assert report["base_params"] == MINILM_PARAMS + 384 * 5 + 5
    assert "bert.encoder.layer.5.attention.self.value" in format_report(report)


def tiny_gpt2_dir(path):
    """A local GPT-2 classifier whose tokenizer, like GPT-2's, has an end token but no pad token."""
    vocab = {w: i for i, w in enumerate(["<|endoftext|>", "a", "b", "c", "d"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>").save_pretrained(path)
    torch.manual_seed(0)
    config = GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=5, n_positions=16, bos_token_id=0, eos_token_id=0)
    GPT2ForSequenceClassification(config).save_pretrained(path)
    return path


def test_load_model_from_a_local_directory_sets_up_padding(tmp_path):
    model, tokenizer = load_model(tiny_gpt2_dir(tmp_path), num_labels=3)
    assert tokenizer.pad_token == "<|endoftext|>" and model.config.pad_token_id == tokenizer.pad_token_id == 0
    batch = tokenizer(["a b c", "d"], padding=True, return_tensors="pt")
    assert model(**batch).logits.shape == (2, 3)  # batches > 1 need the pad token id
    assert default_targets(model) == ["c_attn"]


NOT_A_MODEL = ": give a model directory (config.json, safetensors weights and a tokenizer) or a Hugging Face hub id"
NOT_A_MODEL_RE = re.escape(NOT_A_MODEL)


@pytest.mark.parametrize("name, num_labels, message", [
    ("/nonexistent/model-dir", 2, "could not load model '/nonexistent/model-dir'" + NOT_A_MODEL_RE),
    (None, 1, "num_labels must be at least 2"),
    (None, 0, "num_labels must be a positive integer"),
    ("x" * 100_000, 2, "the model name is 100,000 characters long; a model directory or hub id has at most 4,096"),
    ("/" + "x" * 300, 2, "could not load model '/x{300}'" + NOT_A_MODEL_RE),  # a name too long for a file
    ("x" * 300, 2, "could not load model 'x{300}'" + NOT_A_MODEL_RE),
    ("", 2, "the model name is empty: give a model directory or a Hugging Face hub id"),
    ("a\x00b", 2, "the model name contains control characters"),
    (123, 2, "a model name must be a string \\(a directory or a hub id\\), got int"),
])
def test_load_model_errors(name, num_labels, message):
    with pytest.raises(ValueError, match=message):
        load_model(name, num_labels=num_labels)


def test_load_model_does_not_tell_which_directories_exist(tmp_path):
    # on a server, "no such directory" versus "no model in it" would map its directories
    (tmp_path / "config.json").write_text("{}")
    messages = []
    for name in [tmp_path, tmp_path / "missing", "/etc", "/etc/passwd", tmp_path / "config.json"]:
        with pytest.raises(ValueError) as info:
            load_model(name)
        messages.append(str(info.value).replace(repr(str(name)), "NAME"))
    assert messages == ["could not load model NAME" + NOT_A_MODEL] * 5
