"""PEFT's conveniences on tiny BERT, GPT-2 (Conv1D) and ViT models built from configs: merge_and_unload,
unload, disable_adapter, named adapters, per-layer patterns, task_type, Trainer, save_pretrained's guard."""
import copy
import io
import json
import re
from pathlib import Path

import pytest
import safetensors
import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForTokenClassification,
)

import surm_core
from surm_core import (
    AdapterConfig,
    disable_adapter,
    inject,
    load_adapter,
    merge,
    merge_and_unload,
    print_trainable_parameters,
    save_adapter,
    set_adapter,
    trainable_report,
    unload,
    unmerge,
)
from surm_core.adapters.layer import AdaptedLayer
from surm_core.adapters.model import adapted_layers
from test_adapters import MODELS, inputs, logits, perturb, tiny_bert, tiny_gpt2

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

KINDS = list(MODELS)
TASK = {"bert": "SEQ_CLS", "gpt2": "SEQ_CLS", "vit": "IMAGE_CLS"}
AUTO = {"bert": AutoModelForSequenceClassification, "gpt2": AutoModelForSequenceClassification,
        "vit": AutoModelForImageClassification}
DATA = Path(__file__).parent / "data"


def shift_head(model, kind, by=0.5):
    """Move the trained head away from its initial value, as training would."""
    with torch.no_grad():
        model.get_parameter(f"{MODELS[kind][3]}.weight").add_(by)


def trained(kind, family="circulant", **kw):
    """(base logits, adapted model with random adapters and a moved head, its logits)."""
    build = MODELS[kind][0]
    base = build()
    model = inject(copy.deepcopy(base), AdapterConfig(family, task_type=TASK[kind], **kw))
    perturb(model)
    shift_head(model, kind)
    return logits(base, kind), model, logits(model, kind)


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# -- merge_and_unload / unload --------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_merge_and_unload_then_save_pretrained_and_from_pretrained_gives_the_same_logits(kind, tmp_path):
    build = MODELS[kind][0]
    _, model, y = trained(kind, family="kronecker")
    plain = merge_and_unload(model)
    assert plain is model and type(plain) is type(build())
    assert not [n for n, m in plain.named_modules() if isinstance(m, AdaptedLayer)]
    assert not [a for a in vars(plain) if a.startswith("surm") or a == "save_pretrained"]
    assert set(plain.state_dict()) == set(build().state_dict())  # the model's own names, no wrappers
    torch.testing.assert_close(logits(plain, kind), y, atol=1e-5, rtol=0)
    plain.save_pretrained(tmp_path)
    reloaded, info = AUTO[kind].from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    torch.testing.assert_close(logits(reloaded.eval(), kind), y, atol=1e-5, rtol=0)


def test_merge_and_unload_of_a_merged_model_and_of_the_residual_placement():
    _, model, y = trained("bert")
    merge(model)
    torch.testing.assert_close(logits(merge_and_unload(model), "bert"), y, atol=1e-5, rtol=0)
    _, model, _ = trained("bert", placement="adapter")
    with pytest.raises(ValueError, match="'adapter' placement cannot be merged"):
        merge_and_unload(model)
    assert adapted_layers(model)  # nothing was taken out


@pytest.mark.parametrize("kind", KINDS)
def test_unload_gives_the_base_model_back_bit_for_bit(kind):
    build = MODELS[kind][0]
    base = build()
    before = state(base)
    y_base = logits(base, kind)
    model = inject(base, AdapterConfig("lowrank", task_type=TASK[kind]))
    perturb(model)
    shift_head(model, kind)
    assert not torch.equal(logits(model, kind), y_base)
    plain = unload(model)
    assert not adapted_layers(plain) and not hasattr(plain, "surm_adapters")
    after = state(plain)
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)  # head restored too
    assert torch.equal(logits(plain, kind), y_base)
    merge(inject(plain, AdapterConfig("circulant", ["query"] if kind == "bert" else None)))
    with pytest.raises(ValueError, match=r"merged into the weights; unmerge\(model\) before unload"):
        unload(plain)


# -- disable_adapter ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_disable_adapter_gives_the_base_logits_exactly(kind):
    y_base, model, y = trained(kind, family="monarch")
    assert not torch.allclose(y, y_base, atol=1e-4)
    with disable_adapter(model) as inside:
        assert inside is model
        assert torch.equal(logits(model, kind), y_base)
    assert torch.equal(logits(model, kind), y)
    with pytest.raises(RuntimeError, match="boom"), disable_adapter(model):
        raise RuntimeError("boom")
    assert torch.equal(logits(model, kind), y)  # restored after an error too


def test_disable_adapter_refuses_what_would_mix_up_the_tensors():
    _, model, _ = trained("bert")
    with disable_adapter(model):
        for op, message in [(disable_adapter, "disable the adapters again"), (merge, "merge"),
                            (lambda m: set_adapter(m, "default"), "switch adapters"), (unload, "unload"),
                            (lambda m: inject(m, AdapterConfig("circulant", ["key"]), adapter_name="x"),
                             "add an adapter")]:
            with pytest.raises(ValueError, match=f"cannot {message} inside disable_adapter"):
                op(model)
    merge(model)
    with pytest.raises(ValueError, match=r"merged into the weights; unmerge\(model\) before disable_adapter"):
        disable_adapter(model)
    with pytest.raises(ValueError, match="has no adapters"):
        disable_adapter(tiny_bert())


# -- named adapters -------------------------------------------------------------------------------
def trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_two_named_adapters_switch_train_alone_and_each_reloads(tmp_path):
    base = tiny_bert()
    y_base = logits(base, "bert")
    model = inject(copy.deepcopy(base), AdapterConfig("circulant", ["query", "value"], task_type="SEQ_CLS"))
    # A second adapter of another family and placement, on overlapping targets, waits inactive.
    inject(model, AdapterConfig("lowrank", ["query", "key"], placement="adapter", task_type="SEQ_CLS"),
           adapter_name="b")
    assert model.surm_adapters.active == "default" and list(model.surm_adapters.configs) == ["default", "b"]
    assert all(".default" in n or n.startswith("classifier.") for n in trainable_names(model))
    assert any(".b." in n for n, _ in model.named_parameters())  # b is there, frozen
    assert torch.equal(logits(model, "bert"), y_base)
    perturb(model)
    shift_head(model, "bert", 0.5)
    y_a = logits(model, "bert")
    assert model.surm_adapter_config.family == "circulant"

    set_adapter(model, "b")
    assert model.surm_adapter_config.family == "lowrank"
    assert torch.equal(logits(model, "bert"), y_base)  # b starts at zero, with the base model's head
    query = model.get_submodule("bert.encoder.layer.0.attention.self.query")
    assert set(query.adapters) == {"default", "b"} and query.active_adapter == "b"
    # Only b (and its head) trains: one optimizer step leaves adapter a and the base bit-identical.
    before = state(model)
    trainable = trainable_names(model)
    assert trainable and all(".b." in n or n.endswith(".b") or n.startswith("classifier.") for n in trainable)
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    F.cross_entropy(model(**inputs("bert")).logits, torch.tensor([0, 2])).backward()
    opt.step()
    model.eval()
    after = state(model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= {k for k in before if ".b." in k or k.endswith(".b") or k.startswith("classifier.")}
    y_b = logits(model, "bert")
    assert not torch.allclose(y_b, y_a)

    set_adapter(model, "default")
    assert torch.equal(logits(model, "bert"), y_a)  # a's head came back with it
    save_adapter(model, tmp_path / "b", adapter_name="b")  # an inactive adapter saves its own head
    save_adapter(model, tmp_path / "a")
    assert torch.equal(logits(load_adapter(tiny_bert(), tmp_path / "a"), "bert"), y_a)
    assert torch.equal(logits(load_adapter(tiny_bert(), tmp_path / "b"), "bert"), y_b)
    # Both into one fresh model: the first loaded is active, the second waits.
    both = load_adapter(load_adapter(tiny_bert(), tmp_path / "b", adapter_name="first"), tmp_path / "a",
                        adapter_name="second")
    assert torch.equal(logits(both, "bert"), y_b)
    assert torch.equal(logits(set_adapter(both, "second"), "bert"), y_a)
    with disable_adapter(both):
        assert torch.equal(logits(both, "bert"), y_base)
    assert torch.equal(logits(unload(both), "bert"), y_base)


def test_merge_acts_on_the_active_adapter_only():
    _, model, y_a = trained("gpt2")
    inject(model, AdapterConfig("toeplitz", ["c_fc"], task_type="SEQ_CLS"), adapter_name="ffn")
    merge(model)
    torch.testing.assert_close(logits(model, "gpt2"), y_a, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="'default' is merged into the weights; unmerge"):
        set_adapter(model, "ffn")
    unmerge(model)
    set_adapter(model, "ffn")
    perturb(model)
    y_ffn = logits(model, "gpt2")
    plain = merge_and_unload(model)  # the active adapter, ffn, is what stays
    torch.testing.assert_close(logits(plain, "gpt2"), y_ffn, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_adapters_saved_before_named_adapters_still_load(kind):
    # tests/data/adapter_v1_*: saved by the single-adapter code (one delta, one residual placement).
    directory = DATA / f"adapter_v1_{kind}"
    expected = torch.tensor(json.loads((directory / "expected_logits.json").read_text()))
    model = load_adapter(MODELS[kind][0](), directory)
    torch.testing.assert_close(logits(model, kind), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["", "a.b", "keys", 3, None, "with space"])
def test_bad_adapter_names(name):
    with pytest.raises(ValueError, match="adapter_name must be a non-empty string of letters"):
        inject(tiny_bert(), AdapterConfig("circulant", ["query"]), adapter_name=name)


def test_named_adapter_errors(tmp_path):
    _, model, _ = trained("bert")
    for op in (lambda: set_adapter(model, "other"), lambda: save_adapter(model, tmp_path, adapter_name="other")):
        with pytest.raises(ValueError, match=r"no adapter named 'other'; it has \['default'\]"):
            op()
    save_adapter(model, tmp_path / "a")
    with pytest.raises(ValueError, match=r"already has adapters named \['default'\]; give another adapter_name"):
        load_adapter(model, tmp_path / "a")
    with pytest.raises(ValueError, match="has no adapters"):
        set_adapter(tiny_bert(), "default")
    with pytest.raises(ValueError, match="'bert.encoder.layer.0.attention.self.key' is both a target and inside "
                                         "modules_to_save 'bert.encoder.layer.0.attention'"):
        inject(model, AdapterConfig("circulant", ["key"], modules_to_save=["layer.0.attention"]), adapter_name="x")
    with pytest.raises(ValueError, match="module to save 'bert.encoder.layer.0.attention' holds adapted layers"):
        inject(model, AdapterConfig("circulant", ["intermediate.dense"], modules_to_save=["layer.0.attention"]),
               adapter_name="y")
    assert list(model.surm_adapters.configs) == ["default"]


# -- per-layer patterns ---------------------------------------------------------------------------
def test_patterns_give_the_expected_per_layer_sizes_and_round_trip(tmp_path):
    config = AdapterConfig("lowrank", ["query", "value"], budget=256, budget_pattern={"value": 1024},
                           hparams_pattern={r"layer\.1\.attention\.self\.query": {"r": 4}}, task_type="SEQ_CLS")
    assert AdapterConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    model = inject(tiny_bert(), config)
    # lowrank on 64×64 has 2·64·r parameters: budget 256 → r=2, 1024 → r=8, and r=4 where named.
    counts = {r["name"].removeprefix("bert.encoder.layer."): (r["hparams"]["r"], r["params"])
              for r in trainable_report(model)["layers"]}
    assert counts == {"0.attention.self.query": (2, 256), "0.attention.self.value": (8, 1024),
                      "1.attention.self.query": (4, 512), "1.attention.self.value": (8, 1024)}
    perturb(model)
    y = logits(model, "bert")
    save_adapter(model, tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert AdapterConfig.from_dict(saved) == model.surm_adapter_config
    fresh = load_adapter(tiny_bert(), tmp_path)
    assert torch.equal(logits(fresh, "bert"), y)
    # Kronecker's tuple hparams come back as tuples from JSON.
    kron = AdapterConfig("kronecker", ["query"], hparams_pattern={"query": {"a_shape": [8, 8]}})
    assert kron.hparams_pattern == {"query": {"a_shape": (8, 8)}}
    assert AdapterConfig.from_dict(json.loads(json.dumps(kron.to_dict()))) == kron


@pytest.mark.parametrize("kwargs, message", [
    ({"budget_pattern": {"value": 0}}, r"budget_pattern\['value'\] must be a positive integer"),
    ({"budget_pattern": {}}, "budget_pattern must be a non-empty dict"),
    ({"budget_pattern": ["value"]}, "budget_pattern must be a non-empty dict"),
    ({"hparams_pattern": {"value(": {"r": 2}}}, r"hparams_pattern key 'value\(' is not a valid regular expression"),
    ({"hparams_pattern": {"value": 2}}, r"hparams_pattern\['value'\] must be a dict"),
    ({"budget_pattern": {"": 4}}, "budget_pattern keys must be non-empty strings"),
    ({"task_type": "CAUSAL_LM"}, r"task_type must be one of \['SEQ_CLS', 'TOKEN_CLS', 'IMAGE_CLS'\] or None"),
])
def test_config_rejects_bad_patterns_and_task_types(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdapterConfig("lowrank", **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"budget_pattern": {"key": 512}}, "budget_pattern key 'key' matches no target; the targets are "
                                       "bert.encoder.layer.0.attention.self.query"),
    ({"budget_pattern": {"value": 512}, "hparams_pattern": {r"layer\.0\..*": {"r": 1}}},
     re.escape("target 'bert.encoder.layer.0.attention.self.value' matches both budget_pattern key 'value' and "
               "hparams_pattern key " + repr(r"layer\.0\..*") + "; make the patterns exclusive")),
    ({"budget_pattern": {"value": 10}}, r"cannot adapt 'bert.encoder.layer.0.attention.self.value' \(64×64\): "
                                        "a budget of 10"),
])
def test_patterns_that_do_not_fit_the_model_are_errors(kwargs, message):
    model = tiny_bert()
    with pytest.raises(ValueError, match=message):
        inject(model, AdapterConfig("lowrank", ["query", "value"], **kwargs))
    assert not adapted_layers(model)


# -- task_type ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_task_type_trains_and_saves_the_new_head(kind, tmp_path):
    build, _, _, head = MODELS[kind]
    model = inject(build(), AdapterConfig("circulant", task_type=TASK[kind]))
    assert model.surm_adapter_config.modules_to_save == [head]
    assert {n for n in trainable_names(model) if ".adapter" not in n} == {f"{head}.weight", f"{head}.bias"} - (
        {f"{head}.bias"} if kind == "gpt2" else set())  # GPT-2's score has no bias
    with safetensors.safe_open(str(save_adapter(model, tmp_path) / "adapter_model.safetensors"), "pt") as f:
        assert f"{head}.weight" in f.keys()
    # without task_type the head stays frozen, as before
    assert not {n for n in trainable_names(inject(build(), AdapterConfig("circulant"))) if ".adapter" not in n}


def test_task_type_for_token_classification_and_mismatches():
    torch.manual_seed(0)
    tokens = BertForTokenClassification(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                   intermediate_size=64, vocab_size=50, num_labels=5))
    inject(tokens, AdapterConfig("circulant", task_type="TOKEN_CLS", modules_to_save=["classifier"]))
    assert tokens.surm_adapter_config.modules_to_save == ["classifier"]  # named once
    with pytest.raises(ValueError, match="task_type 'IMAGE_CLS' is for \\*ForImageClassification models, not a "
                                         "BertForSequenceClassification; name the modules to train fully in "
                                         "modules_to_save instead"):
        inject(tiny_bert(), AdapterConfig("circulant", task_type="IMAGE_CLS"))
    with pytest.raises(ValueError, match="found no task head beside the base model"):
        inject(type("MyForSequenceClassification", (torch.nn.Sequential,), {})(torch.nn.Linear(4, 4)),
               AdapterConfig("circulant", ["0"], task_type="SEQ_CLS"))


# -- print_trainable_parameters -------------------------------------------------------------------
def test_print_trainable_parameters_prints_peft_s_line(capsys):
    base = tiny_bert()
    n_base = sum(p.numel() for p in base.parameters())
    model = inject(base, AdapterConfig("circulant", ["query", "value"], budget=64, task_type="SEQ_CLS"))
    print_trainable_parameters(model)
    trainable, total = 4 * 64 + (3 * 64 + 3), n_base + 4 * 64
    assert capsys.readouterr().out == (f"trainable params: {trainable:,} || all params: {total:,} || "
                                       f"trainable%: {100 * trainable / total:.4f}\n")
    assert trainable_report(model)["trainable_params"] == trainable
    with pytest.raises(ValueError, match="model must be a torch.nn.Module, got str"):
        print_trainable_parameters("bert")


# -- save_pretrained of a model that still has its wrappers ---------------------------------------
@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_save_pretrained_of_an_unmerged_model_saves_the_adapter(kind, tmp_path):
    _, model, y = trained(kind)
    model.save_pretrained(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert torch.equal(logits(load_adapter(MODELS[kind][0](), tmp_path / "out"), kind), y)
    # from_pretrained finds no whole model there: an error, never a silent reset (a KeyError where peft is
    # installed: transformers then reads adapter_config.json as PEFT's, which names its base model).
    with pytest.raises((OSError, KeyError)):
        AUTO[kind].from_pretrained(tmp_path / "out")
    model.save_pretrained(tmp_path / "not-main", is_main_process=False)  # what Trainer passes on other ranks
    assert not (tmp_path / "not-main").exists()
    # A copy saves its own adapter, not the original's.
    twin = copy.deepcopy(model)
    perturb(twin, std=0.2)
    twin.save_pretrained(tmp_path / "twin")
    assert torch.equal(logits(load_adapter(MODELS[kind][0](), tmp_path / "twin"), kind), logits(twin, kind))
    # A pickled whole model keeps its adapter's save_pretrained.
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    torch.load(buffer, weights_only=False).save_pretrained(tmp_path / "thawed")
    assert torch.equal(logits(load_adapter(MODELS[kind][0](), tmp_path / "thawed"), kind), y)


def test_save_pretrained_of_a_merged_or_inner_model_fails_clearly(tmp_path):
    _, model, _ = trained("bert")
    with pytest.raises(ValueError, match=r"takes only save_directory, is_main_process and state_dict, not "
                                         r"\['push_to_hub'\]; call surm_core.merge_and_unload"):
        model.save_pretrained(tmp_path, push_to_hub=True)
    with pytest.raises(ValueError, match=r"this BertModel is part of a model with surm adapters .*merge_and_unload"):
        model.bert.save_pretrained(tmp_path)
    merge(model)
    with pytest.raises(ValueError, match=r"merged into the weights but their wrapper layers are still in the model.*"
                                         r"call surm_core.merge_and_unload\(model\) .*or surm_core.save_adapter"):
        model.save_pretrained(tmp_path)
    assert not list(tmp_path.iterdir())
    merge_and_unload(model).save_pretrained(tmp_path)  # the class's own save_pretrained again
    assert (tmp_path / "model.safetensors").is_file()


# -- Hugging Face Trainer -------------------------------------------------------------------------
def token_rows(n=16):
    gen = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(2, 100, (12,), generator=gen), "labels": i % 3} for i in range(n)]


def training_args(out, **kw):
    from transformers import TrainingArguments

    return TrainingArguments(output_dir=str(out), per_device_train_batch_size=8, learning_rate=1e-2,
                             report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="steps", **kw)


def saved_tensors(directory):
    with safetensors.safe_open(str(Path(directory) / "adapter_model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_trainer_checkpoints_hold_only_the_adapter_reload_and_resume(tmp_path):
    from transformers import Trainer

    config = AdapterConfig("circulant", ["query", "value"], task_type="SEQ_CLS")
    model = inject(tiny_bert(), config)
    trainer = surm_core.AdapterTrainer(model=model, args=training_args(tmp_path, max_steps=2, save_steps=1),
                                       train_dataset=token_rows())
    trainer.train()
    for step in (1, 2):
        files = {p.name for p in (tmp_path / f"checkpoint-{step}").iterdir()}
        assert {"adapter_config.json", "adapter_model.safetensors"} <= files
        assert not files & {"model.safetensors", "pytorch_model.bin", "config.json"}
    model.eval()
    y = logits(model, "bert")
    assert torch.equal(logits(load_adapter(tiny_bert(), tmp_path / "checkpoint-2"), "bert"), y)
    trainer.save_model(tmp_path / "final")
    assert not (tmp_path / "final" / "model.safetensors").exists()
    assert torch.equal(logits(load_adapter(tiny_bert(), tmp_path / "final"), "bert"), y)

    # Resuming from checkpoint 1 loads its adapter, optimizer and RNG state: step 2 comes out the same.
    resumed = inject(tiny_bert(), config)
    surm_core.AdapterTrainer(model=resumed, args=training_args(tmp_path / "again", max_steps=2, save_steps=1),
                             train_dataset=token_rows()).train(resume_from_checkpoint=str(tmp_path / "checkpoint-1"))
    resumed.eval()
    torch.testing.assert_close(logits(resumed, "bert"), y, atol=1e-6, rtol=0)

    # A plain Trainer's save_model writes the adapter too, never the whole model.
    plain = Trainer(model=inject(tiny_bert(), config), args=training_args(tmp_path / "plain", max_steps=1),
                    train_dataset=token_rows())
    plain.train()
    plain.save_model(tmp_path / "plain-final")
    files = {p.name for p in (tmp_path / "plain-final").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files
    assert not (tmp_path / "plain-final" / "model.safetensors").exists()


def test_trainer_loads_the_best_checkpoint_at_the_end(tmp_path):
    model = inject(tiny_bert(), AdapterConfig("lowrank", ["query", "value"], task_type="SEQ_CLS"))
    scores = iter([1.0, 3.0, 2.0])  # the checkpoint of step 2 is the best
    args = training_args(tmp_path, max_steps=3, save_steps=1, eval_strategy="steps", eval_steps=1,
                         load_best_model_at_end=True, metric_for_best_model="score", greater_is_better=True)
    trainer = surm_core.AdapterTrainer(model=model, args=args, train_dataset=token_rows(), eval_dataset=token_rows(8),
                                       compute_metrics=lambda _: {"score": next(scores)})
    trainer.train()
    assert Path(trainer.state.best_model_checkpoint).name == "checkpoint-2"
    live = surm_core.adapters.io.adapter_tensors(model, "default")
    best, last = saved_tensors(tmp_path / "checkpoint-2"), saved_tensors(tmp_path / "checkpoint-3")
    assert set(live) == set(best) and all(torch.equal(live[k], best[k]) for k in live)
    assert not all(torch.equal(live[k], last[k]) for k in live)


def test_trainer_errors(tmp_path):
    with pytest.raises(ValueError, match="has no adapters"):
        surm_core.AdapterTrainer(model=tiny_bert(), args=training_args(tmp_path, max_steps=1))
    model = inject(tiny_bert(), AdapterConfig("circulant", ["query"]))
    save_adapter(inject(tiny_bert(), AdapterConfig("circulant", ["value"])), tmp_path / "other")
    trainer = surm_core.AdapterTrainer(model=model, args=training_args(tmp_path, max_steps=1),
                                       train_dataset=token_rows())
    with pytest.raises(ValueError, match="the adapter in .*other' was made with .*target_modules=\\['value'\\]"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "other"))


def test_importing_surm_core_does_not_import_accelerate():
    import subprocess
    import sys

    code = "import sys, surm_core; print('accelerate' in sys.modules, 'transformers.trainer' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent.parent).stdout
    assert out.split() == ["False", "False"]


# -- every new public function: bad input ---------------------------------------------------------
@pytest.mark.parametrize("op", [set_adapter, disable_adapter, merge_and_unload, unload, merge, unmerge, save_adapter])
def test_no_adapter_and_not_a_model_are_errors(op, tmp_path):
    args = {set_adapter: ("default",), save_adapter: (tmp_path,)}.get(op, ())
    with pytest.raises(ValueError, match="has no adapters"):
        op(tiny_bert(), *args)
    with pytest.raises(ValueError, match="model must be a torch.nn.Module, got list"):
        op([], *args)


def test_not_a_model_is_an_error_everywhere(tmp_path):
    directory = save_adapter(inject(tiny_bert(), AdapterConfig("circulant", ["query"])), tmp_path)
    for op in (lambda m: inject(m, AdapterConfig("circulant")), trainable_report, print_trainable_parameters,
               lambda m: load_adapter(m, directory)):
        with pytest.raises(ValueError, match="model must be a torch.nn.Module, got NoneType"):
            op(None)
