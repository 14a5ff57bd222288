"""The fine-tuning engine on a tiny BERT built from a config (random weights, no downloads) and a
small synthetic topic dataset: events, stopping, guards, seeds, run directories, the CLI."""
import csv
import json
import math
import random

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertModel, BertTokenizerFast

from surm_core import load_adapter, load_model
from surm_core.finetune import FinetuneConfig, load_config, run, weights_digest
from surm_core.finetune import engine, task
from surm_core.finetune.__main__ import main, parse_hparam

TOPICS = {
    "sport": "match goal team coach",
    "music": "song album band concert",
    "money": "market bank price shares",
    "politics": "vote party minister election",
}
COMMON = "the a of today news report".split()
EVENT_KEYS = {"event", "step", "total_steps", "loss", "train_acc", "eval_acc", "trainable_params", "examples_per_s", "elapsed_s", "device"}
HIDDEN, LAYERS = 32, 2


def make_tiny_model(directory, dropout=0.0) -> str:
    """A 2-layer BERT (hidden 32, no dropout unless asked) with a WordPiece vocabulary of the topic words."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + " ".join(TOPICS.values()).split() + COMMON
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(directory)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, initializer_range=0.2,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory, safe_serialization=True)
    return str(directory)


def write_topics_csv(path, rows_per_topic=50) -> str:
    rng = random.Random(0)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(rows_per_topic):
            for label, words in TOPICS.items():
                writer.writerow([" ".join(rng.choice(words.split() + COMMON) for _ in range(8)), label])
    return str(path)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"model": make_tiny_model(root / "model"), "dataset": write_topics_csv(root / "topics.csv")}


def config_for(tiny, **overrides) -> FinetuneConfig:
    settings = dict(model=tiny["model"], dataset=tiny["dataset"], method="lowrank", hparams={"r": 2, "alpha": 2},
                    steps=30, batch_size=16, lr=1e-2, eval_every=10)
    return FinetuneConfig(**{**settings, **overrides})


def read_metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def without_timing(records):
    return [{k: v for k, v in r.items() if k not in ("elapsed_s", "examples_per_s")} for r in records]


# -- a whole run --------------------------------------------------------------------------------
def test_events_summary_and_run_directory(tiny, tmp_path):
    events = []
    config = config_for(tiny, out_dir=str(tmp_path / "run"))
    summary = run(config, on_event=events.append)
    run_dir = tmp_path / "run"
    records = read_metrics(run_dir)

    assert all(set(r) == EVENT_KEYS for r in records[:-1]) and set(records[-1]) == EVENT_KEYS | {"reason"}
    assert [r["step"] for r in records[:-1]] == list(range(1, 31))
    assert [r["step"] for r in records if r["event"] == "eval"] == [10, 20, 30]
    assert all((r["eval_acc"] is None) == (r["event"] == "step") for r in records[:-1])
    assert records[-1]["event"] == "done" and records[-1]["reason"] == "completed"
    # what on_event got is a subset of the file, in order, with every evaluation and the end
    assert events == [r for r in records if r in events]
    assert [e for e in events if e["event"] != "step"] == [r for r in records if r["event"] != "step"]

    # 2 layers × (query, value) × r(d_in + d_out), plus the 4-way classifier
    assert summary["trainable_params"] == LAYERS * 2 * 2 * (HIDDEN + HIDDEN) + (HIDDEN * 4 + 4)
    assert summary["adapter_params"] == LAYERS * 2 * 2 * (HIDDEN + HIDDEN)
    assert all(r["trainable_params"] == summary["trainable_params"] and r["device"] == "cpu" for r in records)
    eval_rows = summary["eval_rows"]
    assert eval_rows == 40 and summary["train_rows"] == 160
    accs = [r["eval_acc"] for r in records if r["event"] == "eval"]
    assert all(round(a * eval_rows) == pytest.approx(a * eval_rows) for a in accs)
    assert summary["final_eval_acc"] == accs[-1] and summary["best_eval_acc"] == max(accs)
    assert summary["final_eval_acc"] > 0.5  # chance is 0.25: the run learned something
    assert records[-2]["loss"] < records[0]["loss"]
    assert summary["stopped_reason"] == "completed" and summary["steps_done"] == 30
    assert summary["labels"] == ["money", "music", "politics", "sport"]
    assert summary["config"] == config.to_dict() and summary["run_dir"] == str(run_dir)
    assert json.loads((run_dir / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert sorted(p.name for p in run_dir.iterdir()) == ["adapter", "config.json", "metrics.jsonl", "summary.json"]
    assert json.loads((run_dir / "config.json").read_text()) == config.to_dict()
    timing = [summary[k] for k in ("load_s", "train_s", "eval_s", "checkpoint_s", "wall_time_s")]
    assert all(t > 0 for t in timing) and sum(timing[:4]) <= timing[4]

    # The saved adapter, loaded into a fresh base model, is exactly what was trained.
    fresh, _ = load_model(tiny["model"], num_labels=4)
    load_adapter(fresh, run_dir / "adapter")
    assert weights_digest(fresh) == summary["weights_sha256"][0]
    untrained, _ = load_model(tiny["model"], num_labels=4)
    assert weights_digest(untrained) != summary["weights_sha256"][0]


def test_event_rate_is_bounded_but_evaluations_and_the_end_always_arrive(tmp_path, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(engine.time, "monotonic", lambda: now[0])
    received = []
    with engine.EventLog(tmp_path, received.append) as log:
        for t, kind in [(0.0, "step"), (0.05, "step"), (0.06, "eval"), (0.09, "step"), (0.16, "step"), (0.2, "step"),
                        (0.27, "step"), (0.28, "done")]:
            now[0] = t
            log.emit({"event": kind, "t": t})
    assert [e["t"] for e in received] == [0.0, 0.06, 0.16, 0.27, 0.28]
    assert len(read_metrics(tmp_path)) == 8


def test_forwarded_step_events_are_at_least_a_tenth_of_a_second_apart(tiny):
    events = []
    run(config_for(tiny, method="head-only", hparams=None, steps=40, eval_every=1000), on_event=events.append)
    times = [e["elapsed_s"] for e in events if e["event"] == "step"]
    assert all(b - a >= 1 / engine.MAX_EVENTS_PER_S - 0.005 for a, b in zip(times, times[1:]))
    assert events[-1]["event"] == "done" and events[-2]["event"] == "eval" and events[-2]["step"] == 40


# -- stopping and guards ------------------------------------------------------------------------
def test_should_stop_ends_the_run_within_one_step_and_keeps_what_it_reached(tiny, tmp_path):
    reached = []
    summary = run(
        config_for(tiny, eval_every=4, out_dir=str(tmp_path / "run")),
        on_event=lambda e: reached.append(e["step"]),
        should_stop=lambda: 4 in reached,
    )
    assert summary["stopped_reason"] == "stopped" and summary["steps_done"] == 4
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 4] and records[-1]["reason"] == "stopped"
    assert summary["final_eval_acc"] == records[3]["eval_acc"]
    fresh, _ = load_model(tiny["model"], num_labels=4)
    load_adapter(fresh, tmp_path / "run" / "adapter")
    assert weights_digest(fresh) == summary["weights_sha256"][0]


def test_stop_before_the_first_step(tiny):
    summary = run(config_for(tiny), should_stop=lambda: True)
    assert summary["stopped_reason"] == "stopped" and summary["steps_done"] == 0
    assert summary["final_eval_acc"] is None and summary["best_eval_acc"] is None


def test_non_finite_loss_stops_the_run_before_its_update(tiny, tmp_path):
    events = []
    summary = run(config_for(tiny, lr=1e30, out_dir=str(tmp_path / "run")), on_event=events.append)
    reason = summary["stopped_reason"]
    assert reason.startswith("non-finite loss at step ")
    bad_step = int(reason.rsplit(" ", 1)[1])
    assert summary["steps_done"] == bad_step - 1
    records = read_metrics(tmp_path / "run")
    assert all(math.isfinite(r["loss"]) for r in records[:-1])
    assert records[-1] == {**records[-1], "event": "done", "reason": reason, "step": bad_step - 1}
    assert events[-1]["reason"] == reason
    # broken weights are not kept, the record of the run is
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json", "metrics.jsonl", "summary.json"]
    assert summary["final_eval_acc"] is None


def test_out_of_memory_is_reported_as_such(tiny, tmp_path, monkeypatch):
    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(task.F, "cross_entropy", no_memory)
    monkeypatch.setattr(engine.torch.cuda, "empty_cache", lambda: None)
    summary = run(config_for(tiny, out_dir=str(tmp_path / "run")))
    assert summary["stopped_reason"] == "CUDA out of memory at step 1: lower the batch size or the max length"
    assert summary["steps_done"] == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["stopped_reason"] == summary["stopped_reason"]


# -- reproducibility ----------------------------------------------------------------------------
def test_same_seed_same_metrics_other_seed_other_metrics(tiny, tmp_path):
    def metrics(name, seed):
        summary = run(config_for(tiny, method="circulant", hparams=None, steps=8, eval_every=4, seed=seed,
                                 out_dir=str(tmp_path / name)))
        return without_timing(read_metrics(tmp_path / name)), summary["weights_sha256"]

    first, again, other = metrics("a", 3), metrics("b", 3), metrics("c", 4)
    assert first == again
    assert [r["loss"] for r in first[0][:-1]] != [r["loss"] for r in other[0][:-1]]
    assert first[1] != other[1]


# -- baselines ----------------------------------------------------------------------------------
def test_head_only_trains_and_saves_the_classifier_only(tiny, tmp_path):
    summary = run(config_for(tiny, method="head-only", hparams=None, steps=5, out_dir=str(tmp_path / "run")))
    assert summary["trainable_params"] == HIDDEN * 4 + 4 and summary["adapter_params"] == 0
    saved = load_file(tmp_path / "run" / "trainable.safetensors")
    assert sorted(saved) == ["classifier.bias", "classifier.weight"]
    untrained, _ = load_model(tiny["model"], num_labels=4)
    assert not torch.equal(saved["classifier.weight"], untrained.classifier.weight)


def test_full_fine_tuning_trains_and_saves_everything(tiny, tmp_path):
    summary = run(config_for(tiny, method="full", hparams=None, lr=1e-3, steps=5, out_dir=str(tmp_path / "run")))
    model, _ = load_model(tiny["model"], num_labels=4)
    assert summary["trainable_params"] == sum(p.numel() for p in model.parameters())
    saved = load_file(tmp_path / "run" / "trainable.safetensors")
    assert sorted(saved) == sorted(n for n, _ in model.named_parameters())
    assert not torch.equal(saved["bert.encoder.layer.0.attention.self.query.weight"],
                           model.bert.encoder.layer[0].attention.self.query.weight)


def test_epochs_replace_steps(tiny):
    # 160 training rows in batches of 16: 10 batches an epoch
    summary = run(config_for(tiny, epochs=0.5, eval_every=100))
    assert summary["steps_done"] == 5


def test_budget_sizes_the_adapter(tiny):
    summary = run(config_for(tiny, method="circulant", hparams=None, budget=64, steps=2))
    assert summary["adapter_params"] <= LAYERS * 2 * 64


# -- bad configurations -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"method": "fourier"}, r"method must be a family \(dense, lowrank, .*\) or one of \('full', 'head-only'\), got 'fourier'"),
        ({"method": "full", "hparams": None, "budget": 10}, r"method 'full' takes no budget, hparams or target_modules"),
        ({"steps": 0}, r"steps must be a positive integer, got 0"),
        ({"batch_size": 2.5}, r"batch_size must be a positive integer, got 2.5"),
        ({"lr": float("nan")}, r"lr must be a positive finite number, got nan"),
        ({"lr": 0}, r"lr must be a positive finite number, got 0"),
        ({"epochs": -1}, r"epochs must be a positive number, got -1"),
        ({"warmup_ratio": 1}, r"warmup_ratio must be in \[0, 1\), got 1"),
        ({"device": "tpu"}, r"device must be 'auto', 'cpu' or 'cuda', got 'tpu'"),
        ({"eval_size": 0}, r"eval_size must be a positive integer, got 0"),
    ],
)
def test_bad_configs_are_refused(tiny, overrides, message):
    with pytest.raises(ValueError, match=message):
        config_for(tiny, **overrides)


def test_bad_runs_are_refused_before_training(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"batch_size 200 is larger than the training split \(160 rows\)"):
        run(config_for(tiny, batch_size=200))
    with pytest.raises(ValueError, match=r"unknown hyperparameter"):
        run(config_for(tiny, hparams={"rank": 2}))
    run(config_for(tiny, steps=1, out_dir=str(tmp_path / "run")))
    with pytest.raises(ValueError, match=r"already holds a run; choose another output directory"):
        run(config_for(tiny, steps=1, out_dir=str(tmp_path / "run")))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"device 'cuda' was asked for but CUDA is not available"):
            run(config_for(tiny, device="cuda"))


# -- command line -------------------------------------------------------------------------------
def test_cli_runs_and_reports(tiny, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["--model", tiny["model"], "--dataset", tiny["dataset"], "--family", "lowrank", "--hparams", "r=2", "alpha=2",
                 "--steps", "4", "--batch-size", "16", "--lr", "1e-2", "--eval-every", "2", "--seed", "1", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["hparams"] == {"r": 2, "alpha": 2} and summary["config"]["seed"] == 1
    assert "step 2/4: eval accuracy" in printed and "step 4/4: eval accuracy" in printed
    assert f"completed: 4 steps, eval accuracy {summary['final_eval_acc']:.4f}" in printed
    assert f"run directory: {out}" in printed


def test_cli_errors_are_one_clear_line(tiny, tmp_path, capsys):
    assert main(["--dataset", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "x")]) == 2
    assert "error: no dataset file at" in capsys.readouterr().err
    assert main(["--method", "full", "--budget", "8", "--out", str(tmp_path / "y")]) == 2
    assert "error: method 'full' takes no budget" in capsys.readouterr().err


def test_cli_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ["--family", "--method", "--budget", "--hparams", "--target-modules", "--dataset", "--text-column",
                   "--label-column", "--model", "--device", "--seed", "--lr", "--batch-size", "--max-length",
                   "--eval-every", "--eval-size", "--steps", "--epochs", "--warmup-ratio", "--weight-decay", "--out", "torchrun",
                   "--config", "--precision"]:
        assert option in text


def test_parse_hparam():
    assert parse_hparam("r=8") == ("r", 8)
    assert parse_hparam("a_shape=(8,8)") == ("a_shape", (8, 8))
    assert parse_hparam("square=True") == ("square", True)
    with pytest.raises(Exception, match="expected KEY=VALUE"):
        parse_hparam("r8")


# -- config files -------------------------------------------------------------------------------
def test_config_round_trips_through_a_json_file(tiny, tmp_path):
    config = config_for(tiny, target_modules=["query"], eval_size=None, out_dir=str(tmp_path / "run"))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    assert load_config(path) == config
    assert FinetuneConfig.from_dict(config.to_dict()) == config
    assert load_config(path, steps=3, seed=7) == FinetuneConfig(**{**config.to_dict(), "steps": 3, "seed": 7})
    assert FinetuneConfig.from_dict({"eval_size": "all"}).eval_size is None


@pytest.mark.parametrize("text, message", [
    ('{"steps": 5, "stepz": 3}', r"unknown config field\(s\) \['stepz'\]; the fields are \['model', "),
    ('{"steps": 5,}', r"config.json is not valid JSON: .* at line 1, column 13"),
    ('[1, 2]', r"config.json must hold a JSON object of fields, not a list"),
    ('{"seed": -1}', r"seed must be an integer from 0 to 2\*\*63 - 1, got -1"),
])
def test_bad_config_files_are_refused(tmp_path, text, message):
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ValueError, match=r"cannot read the config file .*nope.json.*: No such file or directory"):
        load_config(tmp_path / "nope.json")


def test_cli_reads_a_config_file_and_flags_override_it(tiny, tmp_path, capsys):
    fields = {**config_for(tiny).to_dict(), "steps": 50, "seed": 5, "out_dir": str(tmp_path / "from-file")}
    del fields["lr"]  # a subset of the fields: lr falls back to its default, 5e-3
    path = tmp_path / "config.json"
    path.write_text(json.dumps(fields))
    out = tmp_path / "from-flags"
    assert main(["--config", str(path), "--steps", "2", "--eval-every", "1", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    expected = FinetuneConfig(**{**fields, "lr": None, "steps": 2, "eval_every": 1, "out_dir": str(out)})
    assert summary["config"] == expected.to_dict() and summary["config"]["lr"] == 5e-3
    assert not (tmp_path / "from-file").exists()

    # without --out the file's out_dir is the run directory
    assert main(["--config", str(path), "--steps", "1"]) == 0
    assert json.loads((tmp_path / "from-file" / "summary.json").read_text())["config"]["seed"] == 5
    capsys.readouterr()


def test_cli_config_errors_are_one_clear_line(tiny, tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text('{"model": "x", "optimiser": "sgd"}')
    assert main(["--config", str(path), "--out", str(tmp_path / "run")]) == 2
    assert "error: unknown config field(s) ['optimiser']" in capsys.readouterr().err
    assert main(["--steps", "3"]) == 2
    assert "error: name the run directory: --out RUN_DIR (or out_dir in the --config file)" in capsys.readouterr().err
    assert main(["--seed", "-1", "--out", str(tmp_path / "run")]) == 2
    assert "error: seed must be an integer from 0 to 2**63 - 1, got -1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# -- evaluation ---------------------------------------------------------------------------------
def test_evaluation_in_length_sorted_token_batches_matches_one_row_at_a_time(tiny, tmp_path, monkeypatch):
    rng = random.Random(1)
    path = tmp_path / "uneven.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(120):
            label, words = rng.choice(list(TOPICS.items()))
            writer.writerow([" ".join(rng.choice(words.split() + COMMON) for _ in range(rng.randint(1, 40))), label])
    config = config_for(tiny, dataset=str(path), method="head-only", hparams=None, max_length=32, eval_size=None)
    the_task = task.task_for(config)
    torch.manual_seed(0)
    model, _ = the_task.load_model()
    rows = the_task.rows("test")
    assert len({len(r["input_ids"]) for r in rows}) > 10  # lengths vary a lot
    no_autocast = torch.autocast("cpu", enabled=False)

    batches = []
    collate, score = the_task.collate, the_task.score

    def recording_collate(batch_rows):
        batches.append([len(r["input_ids"]) for r in batch_rows])
        return collate(batch_rows)

    def checked_score(*args):
        assert torch.is_inference_mode_enabled()
        return score(*args)

    monkeypatch.setattr(the_task, "collate", recording_collate)
    monkeypatch.setattr(the_task, "score", checked_score)
    budget = 96
    accuracy = engine.evaluate(model, the_task, rows, budget, torch.device("cpu"), no_autocast)
    lengths = [n for batch in batches for n in batch]
    assert sorted(lengths, reverse=True) == lengths and len(lengths) == len(rows)  # each row once, longest first
    assert all(len(b) * max(b) <= budget or len(b) == 1 for b in batches) and len(batches) < len(rows) / 2
    monkeypatch.undo()

    with torch.no_grad():  # one row at a time, no padding at all
        one_by_one = [model(**the_task.collate([r])).logits.argmax(-1).item() == r["labels"] for r in rows]
    assert accuracy == sum(one_by_one) / len(rows)


@pytest.mark.parametrize("eval_size, rows", [(10, 10), (None, 40), ("all", 40), (1000, 40)])
def test_eval_size_picks_the_evaluation_rows(tiny, eval_size, rows):
    summary = run(config_for(tiny, steps=1, eval_size=eval_size))
    assert summary["eval_rows"] == rows and round(summary["final_eval_acc"] * rows) == pytest.approx(summary["final_eval_acc"] * rows)


@pytest.mark.parametrize("method", ["lowrank", "circulant", "toeplitz", "symmetric_toeplitz", "kronecker", "ldr", "monarch", "dense"])
def test_every_family_trains_on_after_an_evaluation(tiny, method):
    # evaluation runs in inference mode: nothing it computes may leak into the next training step
    summary = run(config_for(tiny, method=method, hparams=None, steps=3, eval_every=1))
    assert summary["stopped_reason"] == "completed" and summary["steps_done"] == 3


# -- divergence ---------------------------------------------------------------------------------
def test_a_diverging_run_stops_with_a_hint_and_keeps_no_weights(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["--model", tiny["model"], "--dataset", tiny["dataset"], "--family", "lowrank", "--hparams", "r=2",
                 "--batch-size", "16", "--lr", "1e3", "--steps", "30", "--out", str(out)])
    printed = capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    reason = summary["stopped_reason"]
    assert reason.startswith("diverged at step ") and ": lower the learning rate (lr=1000)" in reason
    bad_step = int(reason.split()[3].rstrip(":"))
    assert code == 1 and f"error: {reason}" in printed.err and "failed: " in printed.out
    assert summary["steps_done"] == bad_step - 1 and summary["final_eval_acc"] is None
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "metrics.jsonl", "summary.json"]
    losses = [r["loss"] for r in read_metrics(out)[:-1]]
    # the steps recorded before the one that tripped it: the last four were already 10× the first
    assert all(math.isfinite(x) for x in losses) and all(x > 10 * losses[0] for x in losses[-engine.DIVERGENCE_STEPS + 1:])


def test_the_divergence_guard_needs_several_steps_far_above_the_start():
    progress = engine.Progress()
    assert progress.check_loss(1, 1.0, 0.1) is None
    for step, loss in enumerate([20.0, 20.0, 0.5, 20.0, 20.0, 20.0, 20.0], start=2):
        assert progress.check_loss(step, loss, 0.1) is None  # a good step in between resets the count
    assert progress.check_loss(9, 20.0, 0.1).startswith("diverged at step 9: lower the learning rate (lr=0.1)")
    assert engine.Progress().check_loss(1, math.nan, 0.1) == "non-finite loss at step 1"
