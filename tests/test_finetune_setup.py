"""Setting a run up as PEFT users do, on a tiny BERT (hidden 32, 2 layers, 4 labels): LoRA's rank and
alpha, target-module presets and custom targets, and preview() — the matched layers and
trainable counts before training — agreeing with what a run trains."""
import json

import pytest

from surm_core.finetune import FinetuneConfig, estimate_time, preview, run
from surm_core.finetune.__main__ import main
from surm_core.finetune.prepare import resolve_targets
from test_finetune import HIDDEN, LAYERS, config_for, make_tiny_model, write_topics_csv
from test_models import tiny_gpt2_dir

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

LABELS = ["money", "music", "politics", "sport"]
HEAD = HIDDEN * 4 + 4  # the 4-way classifier
INTERMEDIATE = 64


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"model": make_tiny_model(root / "model"), "dataset": write_topics_csv(root / "topics.csv")}


def layer_names(plan):
    return [layer["name"] for layer in plan["layers"]]


def lora(r, d_out, d_in):
    return r * (d_in + d_out)


def test_lora_rank_and_alpha(tiny):
    plan = preview(config_for(tiny, hparams={"r": 4, "alpha": 16}))
    assert layer_names(plan) == [f"bert.encoder.layer.{i}.attention.self.{p}" for i in range(LAYERS) for p in ("query", "value")]
    assert all(layer["family"] == "lowrank" and layer["hparams"] == {"r": 4, "alpha": 16.0} for layer in plan["layers"])
    assert all(layer["params"] == lora(4, HIDDEN, HIDDEN) for layer in plan["layers"])
    assert plan["adapter_params"] == 2 * LAYERS * lora(4, HIDDEN, HIDDEN)
    assert plan["head"] == [{"name": "classifier", "params": HEAD}]
    assert plan["trainable_params"] == plan["adapter_params"] + HEAD
    assert plan["percent"] == pytest.approx(100 * plan["trainable_params"] / plan["base_params"])


@pytest.mark.parametrize("targets, per_layer", [
    (None, {"attention.self.query": (HIDDEN, HIDDEN), "attention.self.value": (HIDDEN, HIDDEN)}),
    ("attention-qv", {"attention.self.query": (HIDDEN, HIDDEN), "attention.self.value": (HIDDEN, HIDDEN)}),
    ("attention-all", {"attention.self.query": (HIDDEN, HIDDEN), "attention.self.key": (HIDDEN, HIDDEN),
                       "attention.self.value": (HIDDEN, HIDDEN), "attention.output.dense": (HIDDEN, HIDDEN)}),
    ("all-linear", {"attention.self.query": (HIDDEN, HIDDEN), "attention.self.key": (HIDDEN, HIDDEN),
                    "attention.self.value": (HIDDEN, HIDDEN), "attention.output.dense": (HIDDEN, HIDDEN),
                    "intermediate.dense": (INTERMEDIATE, HIDDEN), "output.dense": (HIDDEN, INTERMEDIATE)}),
    (["key"], {"attention.self.key": (HIDDEN, HIDDEN)}),
    (r"bert\.encoder\.layer\.\d\.(intermediate|output)\.dense", {"intermediate.dense": (INTERMEDIATE, HIDDEN),
                                                                   "output.dense": (HIDDEN, INTERMEDIATE)}),
])
def test_target_presets_and_custom_targets(tiny, targets, per_layer):
    plan = preview(config_for(tiny, hparams={"r": 2}, target_modules=targets))
    expected = {f"bert.encoder.layer.{i}.{suffix}": shape for i in range(LAYERS) for suffix, shape in per_layer.items()}
    if targets == "all-linear":
        expected["bert.pooler.dense"] = (HIDDEN, HIDDEN)  # part of the base model, outside the head
    assert sorted(layer_names(plan)) == sorted(expected)
    assert all(tuple(layer["shape"]) == expected[layer["name"]] for layer in plan["layers"])
    assert plan["adapter_params"] == sum(lora(2, *shape) for shape in expected.values())
    assert plan["trainable_params"] == plan["adapter_params"] + HEAD


def test_preview_is_what_a_run_trains(tiny):
    for overrides in [dict(method="circulant", hparams=None, budget=48, target_modules="attention-all"),
                      dict(method="monarch", hparams=None, target_modules="all-linear"),
                      dict(method="head-only", hparams=None), dict(method="full", hparams=None)]:
        config = config_for(tiny, steps=1, **overrides)
        plan = preview(config)
        summary = run(config)
        assert (plan["trainable_params"], plan["adapter_params"]) == (summary["trainable_params"], summary["adapter_params"])
    assert preview(config_for(tiny, method="head-only", hparams=None))["layers"] == []


def test_preview_takes_label_names_without_reading_the_dataset(tiny):
    config = config_for(tiny, dataset="no-such-file.csv")
    assert preview(config, label_names=LABELS)["trainable_params"] == 2 * LAYERS * lora(2, HIDDEN, HIDDEN) + HEAD
    assert preview(config, label_names=["a", "b"])["head"] == [{"name": "classifier", "params": HIDDEN * 2 + 2}]


def test_attention_all_follows_the_architecture(tmp_path):
    plan = preview(FinetuneConfig(model=str(tiny_gpt2_dir(tmp_path)), method="lowrank", hparams={"r": 1},
                                  target_modules="attention-all"), label_names=["a", "b"])
    assert layer_names(plan) == ["transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj"]  # not mlp.c_proj
    assert [layer["shape"] for layer in plan["layers"]] == [[96, 32], [32, 32]]


@pytest.mark.parametrize("targets, message", [
    (["kee"], r"target module 'kee' matches no module; layers here include: query, key, value"),
    ("nothing.*here", r"target_modules 'nothing.\*here' matches no module"),
])
def test_targets_that_match_nothing_are_refused(tiny, targets, message):
    with pytest.raises(ValueError, match=message):
        preview(config_for(tiny, target_modules=targets))


@pytest.mark.parametrize("targets, message", [
    ("attention-(", r"target_modules 'attention-\(' is not a preset \('attention-qv', 'attention-all', 'all-linear'\) "
                    r"nor a valid regular expression"),
    ([], r"target_modules must be a preset .*, a regular expression or a non-empty list of module-name suffixes, got \[\]"),
    (["query", ""], r"got \['query', ''\]"),
])
def test_bad_targets_are_refused_in_the_config(tiny, targets, message):
    with pytest.raises(ValueError, match=message):
        config_for(tiny, target_modules=targets)


def test_unknown_architecture_has_no_attention_preset():
    import torch

    with pytest.raises(ValueError, match="found no known attention projections in Sequential for 'attention-all'"):
        resolve_targets(torch.nn.Sequential(torch.nn.Linear(2, 2)), "attention-all")


def test_cli_lora_flags_presets_and_regex(tiny, tmp_path, capsys):
    common = ["--model", tiny["model"], "--dataset", tiny["dataset"], "--steps", "1", "--batch-size", "16"]
    out = tmp_path / "lora"
    assert main([*common, "--family", "lowrank", "--lora-r", "4", "--lora-alpha", "8", "--target-modules", "attention-all",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["hparams"] == {"r": 4, "alpha": 8.0} and summary["config"]["target_modules"] == "attention-all"
    assert summary["adapter_params"] == 4 * LAYERS * lora(4, HIDDEN, HIDDEN)
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["target_modules"] == ["query", "key", "value", "attention.output.dense"]

    out = tmp_path / "regex"
    assert main([*common, "--family", "lowrank", "--lora-r", "2", "--target-regex", r".*layer\.0\.attention\.self\.key",
                 "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["adapter_params"] == lora(2, HIDDEN, HIDDEN)
    capsys.readouterr()

    assert main([*common, "--family", "circulant", "--lora-r", "4", "--out", str(tmp_path / "x")]) == 2
    assert "error: --lora-r/--lora-alpha are LoRA's (--family lowrank), not 'circulant''s; use --hparams" in capsys.readouterr().err
    assert main([*common, "--family", "lowrank", "--lora-r", "4", "--hparams", "r=2", "--out", str(tmp_path / "x")]) == 2
    assert "error: --lora-r/--lora-alpha set LoRA's hparams: give them without --hparams or --budget" in capsys.readouterr().err


# -- time estimate ------------------------------------------------------------------------------
def test_the_time_estimate_is_within_a_factor_of_2_of_the_run(tiny):
    config = config_for(tiny, steps=80, eval_every=20, eval_size=None)
    estimate = estimate_time(config)
    assert not estimate["cached"] and estimate["steps"] == 80 and estimate["evals"] == 4
    assert estimate["total_s"] == pytest.approx(estimate["load_s"] + estimate["train_s"] + estimate["eval_s"])
    summary = run(config)
    assert 0.5 <= summary["wall_time_s"] / estimate["total_s"] <= 2, (summary, estimate)

    # only steps and evaluations changed: the measurement is reused
    again = estimate_time(config_for(tiny, steps=160, eval_every=50, eval_size=10))
    assert again["cached"] and again["step_s"] == estimate["step_s"] and again["evals"] == 4
    assert again["eval_each_s"] < estimate["eval_each_s"]  # 10 rows, not 40
    assert estimate_time(config_for(tiny, steps=160, batch_size=8))["cached"] is False


def test_cli_estimate_prints_json_and_trains_nothing(tiny, tmp_path, capsys):
    assert main(["--model", tiny["model"], "--dataset", tiny["dataset"], "--steps", "10", "--batch-size", "16",
                 "--estimate"]) == 0
    estimate = json.loads(capsys.readouterr().out)
    assert estimate["steps"] == 10 and estimate["total_s"] > 0
