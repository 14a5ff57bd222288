"""Causal language models: data, the completion-only loss, generation, loading, adapters of every
family, and a few optimizer steps — on a tiny GPT-2 and a tiny Llama built from configs (random
weights, word-level tokenizers made here, nothing downloaded)."""
import copy
import json
import math
import random

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

import surm_core
from surm_core import AdapterConfig, inject, load_adapter, merge, save_adapter
from surm_core.adapters.model import adapted_layers
from surm_core.finetune.causal import (
    IGNORE,
    CausalCollator,
    completion_loss,
    encode,
    from_pairs,
    generate,
    load_causal_dataset,
    prompt_ids,
    split,
)
from surm_core.finetune import FinetuneConfig, predict, resume, run, task_for
from surm_core.finetune.__main__ import main
from surm_core.finetune.data import DatasetError
from surm_core.models import DEFAULT_MODEL, infer_task, load_causal_lm

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

POSITIVE, NEGATIVE, NEUTRAL = "good great fun lovely".split(), "bad awful dull boring".split(), "the film plot cast".split()
WORDS = ["review", "sentiment", ":", "positive", "negative", *POSITIVE, *NEGATIVE, *NEUTRAL]


def word_tokenizer(style: str) -> PreTrainedTokenizerFast:
    """A word-level tokenizer in GPT-2's manner (one end-of-text token, nothing added, no padding
    token) or Llama's (``<s>`` put before every text, ``</s>`` to end, no padding token)."""
    specials = ["<|endoftext|>"] if style == "gpt2" else ["<unk>", "<s>", "</s>"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=specials[0]))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if style == "gpt2":
        return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=specials[0], eos_token=specials[0], unk_token=specials[0])
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def make_tiny_lm(directory, arch: str) -> str:
    """A 2-layer GPT-2 or Llama (hidden 32, no dropout) saved with its tokenizer."""
    tokenizer = word_tokenizer(arch)
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    if arch == "gpt2":
        config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64, initializer_range=0.2,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        model = GPT2LMHeadModel(config)
    else:
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.2,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        model = LlamaForCausalLM(config)
    model.save_pretrained(directory, safe_serialization=True)
    return str(directory)


def write_reviews(path, rows=120) -> str:
    """Prompt/completion JSONL: a review of 4 words, 2 of them carrying its sentiment."""
    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            label, words = ("positive", POSITIVE) if i % 2 else ("negative", NEGATIVE)
            review = rng.sample(words, 2) + rng.sample(NEUTRAL, 2)
            rng.shuffle(review)
            f.write(json.dumps({"prompt": f"review : {' '.join(review)} sentiment :", "completion": f" {label}"}) + "\n")
    return str(path)


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("causal")
    return {
        "gpt2": make_tiny_lm(root / "gpt2", "gpt2"),
        "llama": make_tiny_lm(root / "llama", "llama"),
        "reviews": write_reviews(root / "reviews.jsonl"),
    }


ARCHS = ["gpt2", "llama"]


# -- data -------------------------------------------------------------------------------------------
def test_prompt_completion_rows_are_label_like_and_split_by_completion(tiny):
    data = load_causal_dataset(tiny["reviews"])
    assert (data.kind, len(data), data.short_labels, data.label_names) == ("prompt-completion", 120, True, ["negative", "positive"])
    assert data.prompts[1].startswith("review : ") and data.completions[1] == " positive"
    train, test = split(data)
    assert (len(train), len(test)) == (96, 24)
    assert sorted(test.completions) == [" negative"] * 12 + [" positive"] * 12  # stratified
    assert split(data)[1].prompts == test.prompts  # fixed


def test_text_rows_and_free_completions_have_one_stratum(tmp_path):
    texts = load_causal_dataset(write_jsonl(tmp_path / "t.jsonl", [{"text": f"line {i}", "source": "x"} for i in range(10)]))
    assert (texts.kind, texts.prompts[0], texts.completions[3], texts.short_labels) == ("text", "", "line 3", False)
    free = load_causal_dataset(write_jsonl(tmp_path / "f.jsonl", [{"prompt": "q", "completion": f"answer number {i}"} for i in range(6)]))
    assert (free.kind, free.short_labels, set(free.labels)) == ("prompt-completion", False, {0})
    assert [len(s) for s in split(free)] == [5, 1]


def test_bbc_news_phrased_as_prompt_and_topic():
    data = load_causal_dataset("bbc_news")
    assert len(data) == 2225 and data.short_labels
    assert data.label_names == ["business", "entertainment", "politics", "sports", "tech"]
    assert data.prompts[0].endswith("\nTopic:") and data.completions[0] == " business"


@pytest.mark.parametrize("rows, message", [
    ([{"question": "a", "answer": "b"}] * 2, r"needs 'prompt' and 'completion' columns, a 'text' column, or text and label "
                                             r"columns; its columns are \['question', 'answer'\]"),
    ([{"prompt": "a", "completion": "b"}, {"prompt": "a", "completion": "  "}], "row 2 has no completion"),
    ([{"prompt": "a", "completion": "b"}, {"prompt": 3, "completion": "c"}], "row 2 has a int prompt; prompts must be strings"),
    ([{"text": "a"}, {"text": None}], "row 2 has no text"),
    ([{"prompt": "a", "completion": "b"}], r"has 1 row\(s\); need at least 2"),
])
def test_bad_files_are_refused_with_the_reason(tmp_path, rows, message):
    with pytest.raises(DatasetError, match=message):
        load_causal_dataset(write_jsonl(tmp_path / "bad.jsonl", rows))


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(DatasetError, match="no dataset file at"):
        load_causal_dataset(str(tmp_path / "none.jsonl"))
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DatasetError, match=r"unsupported file type '.txt' for x.txt: use .jsonl or .csv"):
        load_causal_dataset(str(tmp_path / "x.txt"))
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(DatasetError, match="line 2 is not valid JSON"):
        load_causal_dataset(str(tmp_path / "bad.jsonl"))


# -- tokens: the prompt carries no loss -------------------------------------------------------------
@pytest.mark.parametrize("style", ["gpt2", "llama", "bert"])
def test_encode_masks_the_prompt_and_ends_with_the_end_token(style, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_MODEL) if style == "bert" else word_tokenizer(style)
    if tokenizer.eos_token is None:  # as load_causal_lm does for BERT's tokenizer
        tokenizer.eos_token = tokenizer.sep_token
    data = load_causal_dataset(write_jsonl(tmp_path / "d.jsonl", [
        {"prompt": "review : good film sentiment :", "completion": " positive"},
        {"prompt": "review : dull plot sentiment :", "completion": " negative"},
    ]))
    row = encode(data, tokenizer, max_length=64)[0]
    lead = {"gpt2": [], "llama": [tokenizer.bos_token_id], "bert": [tokenizer.cls_token_id]}[style]
    prompt = tokenizer("review : good film sentiment :", add_special_tokens=False).input_ids
    completion = tokenizer(" positive", add_special_tokens=False).input_ids
    assert row["input_ids"] == lead + prompt + completion + [tokenizer.eos_token_id]
    assert row["labels"] == [IGNORE] * len(lead + prompt) + completion + [tokenizer.eos_token_id]
    assert prompt_ids(tokenizer, "review : good film sentiment :") == lead + prompt  # what generation sees


def test_long_rows_lose_the_start_of_the_prompt_first():
    tokenizer = word_tokenizer("llama")
    data = from_pairs("x", "prompt-completion", ["review good great fun lovely sentiment :"] * 2, [" positive"] * 2)
    row = encode(data, tokenizer, max_length=5)[0]
    ids = tokenizer.convert_tokens_to_ids
    assert row["input_ids"] == ids(["lovely", "sentiment", ":", "positive", "</s>"])
    assert row["labels"] == [IGNORE] * 3 + ids(["positive", "</s>"])
    row = encode(data, tokenizer, max_length=2)[0]
    assert row["input_ids"] == ids([":", "positive"]) and row["labels"] == [IGNORE, ids("positive")]
    with pytest.raises(ValueError, match="max_length must be at least 2"):
        encode(data, tokenizer, max_length=1)


@pytest.mark.parametrize("arch", ARCHS)
def test_prompt_and_padding_positions_carry_no_loss(tiny, arch):
    model, tokenizer = load_causal_lm(tiny[arch])
    data = load_causal_dataset(tiny["reviews"]).subset(range(6))
    rows = encode(data, tokenizer, max_length=64)
    rows[0] = {"input_ids": rows[0]["input_ids"] + rows[1]["input_ids"], "labels": rows[0]["labels"] + rows[1]["labels"]}
    batch = CausalCollator(tokenizer.pad_token_id)(rows)
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.detach().requires_grad_()
    total, count = completion_loss(logits, batch["labels"])
    total.backward()
    # Gradient reaches exactly the positions that predict a completion token (or the end token).
    predicts_target = torch.zeros_like(batch["labels"], dtype=torch.bool)
    predicts_target[:, :-1] = batch["labels"][:, 1:] != IGNORE
    touched = logits.grad.abs().sum(-1) > 0
    assert torch.equal(touched, predicts_target)
    assert count == sum(sum(1 for y in r["labels"][1:] if y != IGNORE) for r in rows) == 6 * 2 + 2
    # The same as scoring the completion tokens one row at a time, without padding.
    expected = 0.0
    for row in rows:
        ids = torch.tensor([row["input_ids"]])
        log_probs = model(input_ids=ids).logits[0].log_softmax(-1)
        expected -= sum(log_probs[t - 1, y].item() for t, y in enumerate(row["labels"]) if y != IGNORE)
    assert total.item() == pytest.approx(expected, rel=1e-4)


def test_chat_template_wraps_the_prompt_when_asked(tmp_path):
    tokenizer = word_tokenizer("llama")
    data = load_causal_dataset(write_jsonl(tmp_path / "d.jsonl", [{"prompt": "good film", "completion": " positive"}] * 2))
    with pytest.raises(ValueError, match="has no chat template"):
        encode(data, tokenizer, 64, chat_template=True)
    tokenizer.chat_template = "{{ bos_token }}{% for m in messages %}review : {{ m['content'] }}{% endfor %}{% if add_generation_prompt %} sentiment :{% endif %}"
    row = encode(data, tokenizer, 64, chat_template=True)[0]
    ids = tokenizer.convert_tokens_to_ids
    assert row["input_ids"] == ids(["<s>", "review", ":", "good", "film", "sentiment", ":", "positive", "</s>"])
    assert row["labels"][:7] == [IGNORE] * 7


# -- models -----------------------------------------------------------------------------------------
def test_load_causal_lm_sets_padding_and_end_tokens(tiny, tmp_path):
    for arch in ARCHS:
        model, tokenizer = load_causal_lm(tiny[arch])
        assert infer_task(tiny[arch]) == "causal-lm"
        assert tokenizer.pad_token_id == tokenizer.eos_token_id == model.generation_config.pad_token_id
    # BERT's tokenizer has no end token: its [SEP] ends completions.
    AutoTokenizer.from_pretrained(DEFAULT_MODEL).save_pretrained(tmp_path / "g")
    GPT2LMHeadModel(GPT2Config(vocab_size=30522, n_embd=8, n_layer=1, n_head=2, n_positions=16)).save_pretrained(tmp_path / "g")
    model, tokenizer = load_causal_lm(tmp_path / "g")
    assert tokenizer.eos_token == "[SEP]" and tokenizer.pad_token == "[PAD]"
    assert model.generation_config.eos_token_id == tokenizer.sep_token_id  # 50256 is not in this vocabulary


def test_load_causal_lm_refuses_classifiers_and_encoders(tmp_path):
    BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=16)).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match=r"is not a causal language model: it is BertForSequenceClassification \(bert\), for text-classification"):
        load_causal_lm(tmp_path / "bert")
    with pytest.raises(ValueError, match="is not a causal language model: it is BertModel"):
        load_causal_lm(DEFAULT_MODEL)
    with pytest.raises(ValueError, match=r"could not load model .*nowhere.: give a model directory"):
        load_causal_lm(tmp_path / "nowhere")


# -- generation -------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_batched_generation_equals_one_prompt_at_a_time(tiny, arch):
    model, tokenizer = load_causal_lm(tiny[arch])
    model.train()
    prompts = ["review : good", "review : the film was dull and boring sentiment :", "fun"]
    batched = generate(model, tokenizer, prompts, max_new_tokens=5)
    assert batched == [generate(model, tokenizer, p, max_new_tokens=5) for p in prompts]
    assert all(isinstance(t, str) and len(tokenizer(t, add_special_tokens=False).input_ids) <= 5 for t in batched)
    assert model.training  # the mode is restored
    with pytest.raises(ValueError, match="max_new_tokens must be a positive integer"):
        generate(model, tokenizer, "x", max_new_tokens=0)


# -- adapters of every family -----------------------------------------------------------------------
def perturb(model):
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for layer in adapted_layers(model).values():
            for p in layer.adapter_parameters().values():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)


@pytest.mark.parametrize("family", list(surm_core.FAMILIES))
@pytest.mark.parametrize("arch", ARCHS)
def test_adapters_of_every_family_save_load_and_merge(tiny, arch, family, tmp_path):
    base, _ = load_causal_lm(tiny[arch])
    ids = torch.tensor([[3, 5, 7, 9, 11, 4]])
    with torch.no_grad():
        before = base(input_ids=ids).logits
    model = inject(copy.deepcopy(base), AdapterConfig(family))  # default targets: c_attn / q_proj, v_proj
    assert model.surm_adapter_config.target_modules == (["c_attn"] if arch == "gpt2" else ["q_proj", "v_proj"])
    perturb(model)
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
    assert (adapted - before).abs().max() > 1e-5
    save_adapter(model, tmp_path / "adapter")
    fresh, _ = load_causal_lm(tiny[arch])
    load_adapter(fresh, tmp_path / "adapter")
    with torch.no_grad():
        assert torch.equal(fresh(input_ids=ids).logits, adapted)
        merge(fresh)
        torch.testing.assert_close(fresh(input_ids=ids).logits, adapted, atol=1e-5, rtol=0)


# -- a few optimizer steps --------------------------------------------------------------------------
def eval_loss(model, rows, collate) -> float:
    with torch.no_grad():
        batch = collate(rows)
        labels = batch.pop("labels")
        total, count = completion_loss(model(**batch).logits, labels)
    return (total / count).item()


@pytest.mark.parametrize("arch", ARCHS)
def test_a_few_steps_lower_the_completion_loss(tiny, arch):
    torch.manual_seed(0)
    model, tokenizer = load_causal_lm(tiny[arch])
    inject(model, AdapterConfig("lowrank", hparams={"r": 4, "alpha": 8}))
    train, test = split(load_causal_dataset(tiny["reviews"]))
    rows, eval_rows = encode(train, tokenizer, 32), encode(test, tokenizer, 32)
    collate = CausalCollator(tokenizer.pad_token_id)
    before = eval_loss(model, eval_rows, collate)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    model.train()
    for step in range(40):
        start = (step * 16) % (len(rows) - 16)
        batch = collate(rows[start:start + 16])
        labels = batch.pop("labels")
        total, count = completion_loss(model(**batch).logits, labels)
        (total / count).backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    assert eval_loss(model, eval_rows, collate) < 0.5 * before
    completions = generate(model, tokenizer, test.prompts, max_new_tokens=3)
    assert sum(c.strip() == t.strip() for c, t in zip(completions, test.completions)) / len(test) > 0.75  # chance: 0.5


# -- through the engine and the CLI -----------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_cli_trains_a_causal_lm_and_reports_perplexity(tiny, arch, tmp_path, capsys):
    out = tmp_path / arch
    code = main(["--model", tiny[arch], "--dataset", tiny["reviews"], "--family", "lowrank", "--hparams", "r=4", "alpha=8",
                 "--steps", "30", "--batch-size", "16", "--lr", "2e-2", "--eval-every", "10", "--max-length", "32",
                 "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "causal-lm" and summary["labels"] == ["negative", "positive"]
    assert summary["config"]["task"] is None  # inferred from the model's config
    evals = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["event"] == "eval"]
    assert [e["step"] for e in evals] == [10, 20, 30]
    assert evals[-1]["eval_loss"] < 0.5 * evals[0]["eval_loss"]
    assert all(e["perplexity"] == pytest.approx(math.exp(e["eval_loss"])) for e in evals)
    assert summary["final_eval_loss"] == evals[-1]["eval_loss"] and summary["final_perplexity"] == evals[-1]["perplexity"]
    assert summary["best_eval_loss"] == min(e["eval_loss"] for e in evals)
    assert "step 30/30: eval loss" in printed and "perplexity" in printed
    assert f"completed: 30 steps, eval loss {summary['final_eval_loss']:.4f}" in printed

    # The saved adapter, on a fresh model, generates: its greedy completions match the expected
    # ones exactly as often as the run's teacher-forced exact match said.
    config = FinetuneConfig.from_dict({**summary["config"], "out_dir": None})
    task = task_for(config, summary["labels"])
    model, tokenizer = task.load_model()
    load_adapter(model, out / "adapter")
    _, test = split(load_causal_dataset(tiny["reviews"]))
    completions = task.predict(model, test.prompts, max_new_tokens=3)
    generated = sum(c.strip() == t.strip() for c, t in zip(completions, test.completions)) / len(test)
    assert summary["final_eval_acc"] == pytest.approx(generated) and generated > 0.6  # chance: 0.5
    # The run directory answers too, with the default number of new tokens (generation stops at the end token).
    assert predict(out, test.prompts[:4]) == completions[:4]


def test_a_classification_dataset_is_phrased_as_prompts_and_completions(tiny, tmp_path):
    data = load_causal_dataset(tiny["reviews"])
    reviews = [p.removeprefix("review : ").removesuffix(" sentiment :") for p in data.prompts]
    rows = "".join(f"{r},{c.strip()}\n" for r, c in zip(reviews, data.completions))
    (tmp_path / "named.csv").write_text("review,sentiment\n" + rows)
    (tmp_path / "detected.csv").write_text("text,label\n" + rows)
    for phrased in (load_causal_dataset(str(tmp_path / "named.csv"), "review", "sentiment"),
                    load_causal_dataset(str(tmp_path / "detected.csv"))):
        assert phrased.prompts[0] == reviews[0] + "\nLabel:" and phrased.completions == data.completions
        assert phrased.label_names == ["negative", "positive"] and phrased.short_labels
    with pytest.raises(DatasetError, match=r"has no label column 'kind'; its columns are \['review', 'sentiment'\]"):
        load_causal_dataset(str(tmp_path / "named.csv"), label_column="kind")


def test_a_stopped_causal_run_resumes_to_the_uninterrupted_result(tiny, tmp_path):
    settings = dict(model=tiny["llama"], dataset=tiny["reviews"], method="lowrank", hparams={"r": 2}, steps=6,
                    batch_size=16, eval_every=3, eval_size=32, max_length=32)
    whole = run(FinetuneConfig(**settings, out_dir=str(tmp_path / "whole")))
    asked = iter(range(100))
    stopped = run(FinetuneConfig(**settings, out_dir=str(tmp_path / "part")), should_stop=lambda: next(asked) >= 4)
    assert (stopped["stopped_reason"], stopped["steps_done"]) == ("stopped", 4)
    resumed = resume(tmp_path / "part")
    assert resumed["weights_sha256"] == whole["weights_sha256"]
    metrics = ("final_eval_loss", "final_perplexity", "final_eval_acc", "best_eval_loss")
    assert [resumed[k] for k in metrics] == [whole[k] for k in metrics]
