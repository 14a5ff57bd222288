"""Adapters on tiny BERT, GPT-2 (Conv1D) and ViT models built from configs (random weights, CPU)."""
import copy
import json

import pytest
import safetensors
import torch
import torch.nn.functional as F
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    ViTConfig,
    ViTForImageClassification,
)
from transformers.pytorch_utils import Conv1D

import surm_core
from surm_core import AdapterConfig, inject, load_adapter, merge, save_adapter, trainable_report, unmerge
from surm_core.adapters.model import adapted_layers
from surm_core.models import default_targets, head_names

NUM_LABELS = 3


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def tiny_bert(num_labels=NUM_LABELS, hidden=64):
    torch.manual_seed(0)
    config = BertConfig(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4, intermediate_size=4 * hidden,
                        vocab_size=100, max_position_embeddings=32, num_labels=num_labels)
    return BertForSequenceClassification(config).eval()


def tiny_gpt2():
    torch.manual_seed(0)
    config = GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=100, n_positions=32, bos_token_id=1,
                        eos_token_id=1, pad_token_id=0, num_labels=NUM_LABELS)
    return GPT2ForSequenceClassification(config).eval()


def tiny_vit():
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                       image_size=16, patch_size=8, num_labels=NUM_LABELS)
    return ViTForImageClassification(config).eval()


# kind -> (builder, attention targets, FFN targets (64→256 and 256→64), head)
MODELS = {
    "bert": (tiny_bert, ["query", "value"], ["intermediate.dense", "output.dense"], "classifier"),
    "gpt2": (tiny_gpt2, ["c_attn"], ["c_fc", "c_proj"], "score"),
    "vit": (tiny_vit, ["q_proj", "v_proj"], ["fc1", "fc2"], "classifier"),
}
KINDS = list(MODELS)


def inputs(kind):
    gen = torch.Generator().manual_seed(1)
    if kind == "vit":
        return {"pixel_values": torch.randn(2, 3, 16, 16, generator=gen)}
    return {"input_ids": torch.randint(2, 100, (2, 12), generator=gen)}


def logits(model, kind):
    with torch.no_grad():
        return model(**inputs(kind)).logits


def perturb(model, std=0.05):
    """Give every adapter tensor a random value, so that adapters change the outputs."""
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for layer in adapted_layers(model).values():
            for p in layer.adapter_parameters().values():
                p.copy_(torch.randn(p.shape, generator=gen) * std)


def adapted(kind, placement="delta", family="circulant", **kw):
    build, attention, _, head = MODELS[kind]
    base = build()
    config = AdapterConfig(family, kw.pop("target_modules", attention), placement=placement,
                           modules_to_save=[head], **kw)
    return base, inject(copy.deepcopy(base), config)


# -- config -------------------------------------------------------------------------------------
def test_config_json_round_trip_keeps_tuples_equal():
    config = AdapterConfig("kronecker", ["query"], hparams={"a_shape": (8, 8)}, placement="adapter",
                           scale=2, dropout=0.1, modules_to_save=["classifier"])
    back = AdapterConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert back == config and back.hparams["a_shape"] == (8, 8)
    assert AdapterConfig.from_dict(json.loads(json.dumps(AdapterConfig("ldr", "all-linear", budget=99).to_dict()))) \
        == AdapterConfig("ldr", "all-linear", budget=99)


@pytest.mark.parametrize("kwargs, message", [
    ({"family": "full"}, "known families: dense, lowrank, circulant"),
    ({"family": "circulant", "budget": 10, "hparams": {"block": 2}}, "either budget or hparams"),
    ({"family": "circulant", "placement": "after"}, "placement must be one of"),
    ({"family": "circulant", "dropout": 1.0}, "dropout must be a probability"),
    ({"family": "circulant", "scale": float("nan")}, "scale must be a finite number"),
    ({"family": "circulant", "budget": 0}, "budget must be a positive integer"),
    ({"family": "circulant", "hparams": [4]}, "hparams must be a dict"),
    ({"family": "circulant", "target_modules": []}, "non-empty list"),
    ({"family": "circulant", "target_modules": "query("}, "not a valid regular expression"),
    ({"family": "circulant", "modules_to_save": "classifier"}, "modules_to_save must be a list"),
])
def test_config_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdapterConfig(**kwargs)


def test_config_from_dict_rejects_unknown_or_missing_keys():
    with pytest.raises(ValueError, match=r"unknown adapter config key\(s\) \['rank'\]"):
        AdapterConfig.from_dict({"family": "circulant", "rank": 4})
    with pytest.raises(ValueError, match="needs a 'family'"):
        AdapterConfig.from_dict({"budget": 4})


# -- inject: identity at init, what trains --------------------------------------------------------
@pytest.mark.parametrize("placement", ["delta", "adapter"])
@pytest.mark.parametrize("kind", KINDS)
def test_zero_init_keeps_logits(kind, placement):
    base, model = adapted(kind, placement)
    assert len(adapted_layers(model)) == 2 * len(MODELS[kind][1])
    assert (logits(model, kind) - logits(base, kind)).abs().max() <= 1e-6
    perturb(model)
    assert (logits(model, kind) - logits(base, kind)).abs().max() > 1e-5  # the adapters are in the path


@pytest.mark.parametrize("placement", ["delta", "adapter"])
@pytest.mark.parametrize("kind", KINDS)
def test_one_step_changes_only_adapters_and_head(kind, placement):
    _, model = adapted(kind, placement, family="lowrank")
    head = MODELS[kind][3]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters()
                         if ".adapter" in n or n.startswith(head + ".")}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    F.cross_entropy(model(**inputs(kind)).logits, torch.tensor([0, 2])).backward()
    opt.step()
    for n, p in model.named_parameters():
        if n not in trainable:
            assert torch.equal(p, before[n]), n  # base weights bit-identical
    for name, layer in adapted_layers(model).items():
        changed = [k for k, p in layer.adapter_parameters().items() if not torch.equal(p, before[f"{name}.{k}"])]
        assert changed, f"no adapter tensor of {name} moved"
    assert not torch.equal(model.get_parameter(f"{head}.weight"), before[f"{head}.weight"])


def test_adapters_follow_the_layers_dtype():
    base = tiny_bert().double()
    model = inject(copy.deepcopy(base), AdapterConfig("ldr", ["query", "value"]))
    assert {p.dtype for layer in adapted_layers(model).values() for p in layer.adapter_parameters().values()} \
        == {torch.float64}
    assert torch.equal(logits(model, "bert"), logits(base, "bert"))
    model = inject(tiny_bert().to(torch.bfloat16), AdapterConfig("circulant", ["query"], placement="adapter"))
    perturb(model)
    assert logits(model, "bert").dtype == torch.bfloat16


def test_dropout_acts_on_the_adapter_in_training_only():
    _, model = adapted("bert", dropout=0.5)
    reference = copy.deepcopy(model)
    for layer in adapted_layers(reference).values():
        layer.dropout.p = 0.0
    perturb(model), perturb(reference)
    assert torch.equal(logits(model, "bert"), logits(reference, "bert"))  # eval: no dropout
    layer = model.get_submodule("bert.encoder.layer.0.attention.self.query")
    layer.train()
    x = torch.randn(4, 64)
    torch.manual_seed(0)
    assert not torch.allclose(layer(x), layer.base_layer(x) + layer.adapter(x))


# -- every family, rectangular layers, both weight layouts ----------------------------------------
@pytest.mark.parametrize("family", list(surm_core.FAMILIES))
@pytest.mark.parametrize("kind", KINDS)
def test_rectangular_targets_every_family(kind, family):
    build, _, ffn, head = MODELS[kind]
    base = build()
    model = inject(copy.deepcopy(base), AdapterConfig(family, ffn, scale=0.5, modules_to_save=[head]))
    shapes = {tuple(r["shape"]) for r in trainable_report(model)["layers"]}
    assert {(256, 64), (64, 256)} <= shapes
    perturb(model)
    gen = torch.Generator().manual_seed(3)
    for name, layer in adapted_layers(model).items():
        # Reference from to_dense and the weight in (d_out, d_in) layout: W0 x + b0 + 0.5·ΔW x.
        w = layer.base_layer.weight
        w = w.T if isinstance(layer.base_layer, Conv1D) else w
        x = torch.randn(5, w.shape[1], generator=gen)
        expected = F.linear(x, w + 0.5 * layer.adapter.to_dense(), layer.base_layer.bias)
        torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5, msg=name)
    y = logits(model, kind)
    merge(model)
    torch.testing.assert_close(logits(model, kind), y, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_residual_adapter_matches_its_formula(kind):
    _, model = adapted(kind, "adapter", family="toeplitz", scale=0.5, target_modules=MODELS[kind][2])
    perturb(model)
    for name, layer in adapted_layers(model).items():
        x = torch.randn(5, layer.base_layer.weight.shape[0 if isinstance(layer.base_layer, Conv1D) else 1])
        h = layer.base_layer(x)
        S = layer.adapter.to_dense()
        assert S.shape == (h.shape[-1], h.shape[-1])
        expected = h + 0.5 * F.gelu(h @ S.T) + layer.adapter_bias
        torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5, msg=name)


# -- merge / unmerge ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_merge_unmerge_keeps_logits_and_never_double_adds(kind, tmp_path):
    base, model = adapted(kind, family="monarch")
    perturb(model)
    y = logits(model, kind)
    weights = {n: layer.base_layer.weight.detach().clone() for n, layer in adapted_layers(model).items()}
    merge(model)
    torch.testing.assert_close(logits(model, kind), y, atol=1e-5, rtol=0)
    assert all(not torch.equal(layer.base_layer.weight, weights[n]) for n, layer in adapted_layers(model).items())
    with pytest.raises(ValueError, match="already merged"):
        merge(model)
    torch.testing.assert_close(logits(model, kind), y, atol=1e-5, rtol=0)
    # A merged model saves the adapter tensors only, so what it saves is what the unmerged one would.
    save_adapter(model, tmp_path)
    fresh = load_adapter(MODELS[kind][0](), tmp_path)
    torch.testing.assert_close(logits(fresh, kind), y, atol=1e-5, rtol=0)
    unmerge(model)
    torch.testing.assert_close(logits(model, kind), y, atol=1e-5, rtol=0)
    for n, layer in adapted_layers(model).items():
        torch.testing.assert_close(layer.base_layer.weight, weights[n], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="not merged"):
        unmerge(model)


def test_residual_placement_refuses_to_merge():
    _, model = adapted("bert", "adapter")
    with pytest.raises(ValueError, match="cannot be merged: h \\+ scale·gelu\\(S h\\) \\+ b is not linear"):
        merge(model)


# -- save / load ----------------------------------------------------------------------------------
@pytest.mark.parametrize("placement", ["delta", "adapter"])
@pytest.mark.parametrize("kind", KINDS)
def test_save_then_load_into_fresh_base_gives_identical_logits(kind, placement, tmp_path):
    build, _, _, head = MODELS[kind]
    _, model = adapted(kind, placement, family="kronecker")
    perturb(model)
    with torch.no_grad():
        model.get_parameter(f"{head}.weight").add_(1.0)  # a trained head must come back too
    y = logits(model, kind)
    save_adapter(model, tmp_path / "run")
    config = json.loads((tmp_path / "run" / "adapter_config.json").read_text())
    assert AdapterConfig.from_dict(config) == model.surm_adapter_config
    with safetensors.safe_open(str(tmp_path / "run" / "adapter_model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert keys and all(".adapter" in k or k.startswith(head + ".") for k in keys)
    assert not any("base_layer" in k for k in keys)
    fresh = load_adapter(build(), tmp_path / "run")
    assert torch.equal(logits(fresh, kind), y)
    assert {n for n, p in fresh.named_parameters() if p.requires_grad} == \
        {n for n, p in model.named_parameters() if p.requires_grad}


def saved_bert(tmp_path, **kw):
    _, model = adapted("bert", **kw)
    perturb(model)
    return save_adapter(model, tmp_path / "saved")


def edit_config(directory, **changes):
    path = directory / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_load_rejects_mismatches_before_touching_the_model(tmp_path):
    directory = saved_bert(tmp_path, hparams={"block": 32})
    fresh = tiny_bert()
    with pytest.raises(ValueError, match=r"classifier.weight: saved shape \(3, 64\), this model needs \(4, 64\)"):
        load_adapter(tiny_bert(num_labels=4), directory)
    with pytest.raises(ValueError, match=r"layer.0.attention.self.query.adapter.c: saved shape \(2, 2, 32\)"):
        load_adapter(tiny_bert(hidden=32), directory)
    edit_config(directory, hparams={"block": 64})
    with pytest.raises(ValueError, match=r"adapter.c: saved shape \(2, 2, 32\), this model needs \(1, 1, 64\)"):
        load_adapter(fresh, directory)
    edit_config(directory, hparams={"block": 32}, target_modules=["query", "key"])
    with pytest.raises(ValueError, match=r"does not fit this model's targets: missing \['bert.encoder.layer.0.attention"
                                         r".self.key.adapter.c'.*unexpected \['bert.encoder.layer.0.attention.self"
                                         r".value.adapter.c'"):
        load_adapter(fresh, directory)
    edit_config(directory, family="symmetric_toeplitz")
    with pytest.raises(ValueError, match="holds family 'circulant' but adapter_config.json says 'symmetric_toeplitz'"):
        load_adapter(fresh, directory)
    assert not adapted_layers(fresh) and all(p.requires_grad for p in fresh.parameters())
    with pytest.raises(ValueError, match="no adapter_config.json in"):
        load_adapter(fresh, tmp_path / "nowhere")


def test_load_into_an_adapted_model_is_an_error(tmp_path):
    directory = saved_bert(tmp_path)
    _, model = adapted("bert")
    with pytest.raises(ValueError, match="already has adapters"):
        load_adapter(model, directory)


# -- targets and errors ---------------------------------------------------------------------------
def test_all_linear_skips_the_head_and_default_targets_resolve():
    for kind, (build, attention, _, head) in MODELS.items():
        model = build()
        assert default_targets(model) == attention
        assert head_names(model) == [head]
        names = list(adapted_layers(inject(model, AdapterConfig("dense", "all-linear"))))
        assert names and not any(n.startswith(head) for n in names)
    model = inject(tiny_gpt2(), AdapterConfig("circulant"))  # target_modules=None: the defaults
    assert model.surm_adapter_config.target_modules == ["c_attn"]
    assert list(adapted_layers(model)) == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]
    with pytest.raises(ValueError, match="no known attention projections.*layers here include: 0"):
        default_targets(torch.nn.Sequential(torch.nn.Linear(3, 3)))
    assert head_names(torch.nn.Sequential(torch.nn.Linear(3, 3))) == []


def test_regex_targets_match_full_names():
    model = inject(tiny_bert(), AdapterConfig("circulant", r"bert\.encoder\.layer\.1\..*\.(query|key)"))
    assert list(adapted_layers(model)) == ["bert.encoder.layer.1.attention.self.query",
                                           "bert.encoder.layer.1.attention.self.key"]


@pytest.mark.parametrize("config, message", [
    (AdapterConfig("circulant", ["qery"]), "'qery' matches no module; layers here include: query, key, value"),
    (AdapterConfig("circulant", "nothing.*here"), "matches no module; layers here include: query"),
    (AdapterConfig("circulant", ["LayerNorm"]), "'bert.embeddings.LayerNorm' is a LayerNorm; only nn.Linear"),
    (AdapterConfig("circulant", r".*attention\.self"), "is a BertSelfAttention"),
    (AdapterConfig("dense", ["query"], budget=10), r"cannot adapt 'bert.encoder.layer.0.attention.self.query' "
                                                   r"\(64×64\): a budget of 10 .* the smallest needs 4096"),
    (AdapterConfig("kronecker", ["query"], hparams={"a_shape": (5, 5)}), "cannot adapt .*a_shape"),
    (AdapterConfig("circulant", ["query"], modules_to_save=["head"]), "module to save 'head' matches no module"),
    (AdapterConfig("circulant", ["classifier"], modules_to_save=["classifier"]), "both a target and inside"),
])
def test_inject_errors(config, message):
    model = tiny_bert()
    with pytest.raises(ValueError, match=message):
        inject(model, config)
    assert not adapted_layers(model)


def test_inject_twice_and_no_adapter_operations_are_errors(tmp_path):
    _, model = adapted("bert")
    with pytest.raises(ValueError, match="already has adapters"):
        inject(model, AdapterConfig("circulant", ["key"]))
    for op in (merge, unmerge, lambda m: save_adapter(m, tmp_path)):
        with pytest.raises(ValueError, match="has no adapters"):
            op(tiny_bert())
    with pytest.raises(ValueError, match="must be an AdapterConfig"):
        inject(tiny_bert(), {"family": "circulant"})


# -- report ---------------------------------------------------------------------------------------
def test_trainable_report_matches_a_hand_count():
    base = tiny_bert()
    n_base = sum(p.numel() for p in base.parameters())
    model = inject(base, AdapterConfig("circulant", ["query", "value"], budget=64, modules_to_save=["classifier"]))
    report = trainable_report(model)
    assert [(r["family"], r["shape"], r["params"]) for r in report["layers"]] == [("circulant", [64, 64], 64)] * 4
    assert report["adapter_params"] == 4 * 64
    assert report["trainable_params"] == 4 * 64 + (3 * 64 + 3)
    assert report["base_params"] == n_base
    assert report["percent"] == pytest.approx(100 * (4 * 64 + 195) / n_base)
    table = surm_core.format_report(report)
    assert "bert.encoder.layer.1.attention.self.value  circulant  64×64      64" in table
    assert table.endswith(f"adapter params 256 in 4 layers; trainable 451 = {100 * 451 / n_base:.4f}% of "
                          f"{n_base:,} base params")
    # the residual placement counts S and its bias
    residual = inject(tiny_bert(), AdapterConfig("circulant", ["query"], placement="adapter", budget=64))
    assert [r["params"] for r in trainable_report(residual)["layers"]] == [64 + 64] * 2
