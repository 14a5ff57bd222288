"""The explorer app: ``surm_core.session`` directly, then the launched app through ``gradio_client``.

Fine-tuning uses a tiny BERT with a tiny WordPiece vocabulary, saved to a temporary directory (the
app takes any local model path), and a tiny CSV of two topics.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

import app
import visualize
from surm_core import FAMILIES, analysis, from_budget, session
from surm_core.explain import describe
from surm_core.finetune import BBC_NEWS, FinetuneConfig
from surm_core.models import DEFAULT_MODEL

TOPICS = {"sports": ["goal", "match", "team", "score", "coach"],
          "business": ["market", "shares", "profit", "bank", "trade"]}


# -- tiny model, data and a served app (shared with test_browser.py) -------------------------------
def tiny_model(path) -> str:
    """A 1-layer BERT (hidden 16) whose WordPiece vocabulary holds the topic words, saved to ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [w for ws in TOPICS.values() for w in ws]
    vocab = {w: i for i, w in enumerate(words)}
    tokenizer = BertTokenizerFast(vocab=vocab)
    assert "[UNK]" not in tokenizer.tokenize(" ".join(words[5:]))  # the topic words are whole tokens
    tokenizer.save_pretrained(path)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    BertForSequenceClassification(config).save_pretrained(path)
    return str(path)


def tiny_csv(path, rows_per_topic: int = 30) -> str:
    """Texts of six words drawn from one topic's words, labelled with that topic."""
    rng = random.Random(0)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for _ in range(rows_per_topic):
            for topic, words in TOPICS.items():
                writer.writerow([" ".join(rng.choice(words) for _ in range(6)), topic])
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served_app(runs_dir, **options):
    """The app served on 127.0.0.1 at a free port, as ``python app.py`` serves it (``options``: those of
    ``app.serve``); yields its URL."""
    port = free_port()
    demo = app.serve("127.0.0.1", port, runs_dir=runs_dir, block=False, **options)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py; the served app previews and tries tiny models in this process


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return tiny_model(root / "model"), tiny_csv(root / "topics.csv")


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def url(runs_dir):
    with served_app(runs_dir) as url:
        yield url


@pytest.fixture
def client(url, tmp_path):
    return Client(url, verbose=False, download_files=str(tmp_path))


# -- command line ----------------------------------------------------------------------------------
def test_serves_on_localhost_7860_unless_flags_or_environment_say_otherwise(monkeypatch):
    for name in ("SURM_HOST", "SURM_PORT", "SURM_SHARE"):
        monkeypatch.delenv(name, raising=False)
    args = app.parse_args([])
    assert (args.host, args.port, args.share) == ("127.0.0.1", 7860, False)
    monkeypatch.setenv("SURM_HOST", "0.0.0.0")
    monkeypatch.setenv("SURM_PORT", "8080")
    monkeypatch.setenv("SURM_SHARE", "1")
    args = app.parse_args([])
    assert (args.host, args.port, args.share) == ("0.0.0.0", 8080, True)
    args = app.parse_args(["--host", "127.0.0.2", "--port", "9000"])
    assert (args.host, args.port) == ("127.0.0.2", 9000)
    monkeypatch.setenv("SURM_PORT", "http")
    with pytest.raises(SystemExit):  # argparse prints "argument --port: invalid int value: 'http'"
        app.parse_args([])


def test_auth_shared_runs_and_limits_from_flags_or_environment(monkeypatch):
    for name in ("SURM_AUTH", "SURM_SHARED_RUNS"):
        monkeypatch.delenv(name, raising=False)
    args = app.parse_args([])
    assert (args.auth, args.shared_runs) == (None, False)
    assert (args.max_steps, args.max_classes, args.max_upload_mb) == (5000, 100, 20.0)
    args = app.parse_args(["--auth", "alice:s3:cret", "--shared-runs", "--max-steps", "50", "--max-upload-mb", "2"])
    assert (args.auth, args.shared_runs, args.max_steps, args.max_upload_mb) == (("alice", "s3:cret"), True, 50, 2.0)
    monkeypatch.setenv("SURM_AUTH", "bob:pw")
    monkeypatch.setenv("SURM_SHARED_RUNS", "1")
    args = app.parse_args([])
    assert (args.auth, args.shared_runs) == (("bob", "pw"), True)
    for bad in (["--auth", "alice"], ["--auth", ":pw"], ["--auth", "alice:"]):
        with pytest.raises(SystemExit):  # "expected USER:PASSWORD, both non-empty"
            app.parse_args(bad)


def test_the_cache_of_uploads_and_downloads_is_cleaned_on_a_schedule(tmp_path):
    assert app.build_app(tmp_path).delete_cache == (3600, app.CACHE_AGE_S)


def responds(url: str) -> bool:
    try:
        return httpx.get(f"{url}config", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_terminated_server_deletes_the_uploads_and_downloads_it_served(tmp_path):
    # `kill` or `docker stop` (SIGTERM) ends `python app.py` as Ctrl-C does: Gradio's cache goes with it
    runs, cache, tmp = tmp_path / "runs", tmp_path / "cache", tmp_path / "tmp"
    tmp.mkdir()
    run_dir = fake_run(session.workspace_dir(runs, "key"), "x", "circulant", 10, 0.5)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["config"]["max_length"] = 16  # what the download's snippet needs
    (run_dir / "summary.json").write_text(json.dumps(summary))
    url = f"http://127.0.0.1:{(port := free_port())}/"
    env = {**os.environ, "GRADIO_TEMP_DIR": str(cache), "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "server.log", "w") as log:
        server = subprocess.Popen([sys.executable, app.__file__, "--port", str(port)], cwd=tmp_path, env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: server.poll() is not None or responds(url), "the server to start", timeout=180)
        client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
        client.predict("key", api_name="/open_workspace")
        assert client.predict("x", api_name="/download")[0].endswith("x.zip")
        httpx.post(f"{url}gradio_api/upload", files={"files": ("upload.csv", b"text,label\n")}).raise_for_status()
        assert {"x.zip", "upload.csv"} <= {p.name for p in cache.rglob("*") if p.is_file()}
        assert list(tmp.glob("surm-zips-*/*/x.zip"))
        server.send_signal(signal.SIGTERM)
        assert server.wait(60) == 0, (tmp_path / "server.log").read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert not [p for p in cache.rglob("*") if p.is_file()] and not list(tmp.iterdir())


def test_a_server_reachable_from_other_machines_without_auth_warns_what_is_exposed():
    warning = app.exposure_warning("0.0.0.0", share=False, auth=None, shared_runs=False)
    for exposed in ("without --auth", "fine-tune on this machine", "upload datasets", "load any model directory",
                    "image files named in an uploaded CSV/JSONL"):
        assert exposed in warning
    assert "every run" in app.exposure_warning("0.0.0.0", False, None, shared_runs=True)
    assert "gradio.live" in app.exposure_warning("127.0.0.1", share=True, auth=None, shared_runs=False)
    assert app.exposure_warning("0.0.0.0", False, ("alice", "pw"), False) is None
    for host in ("127.0.0.1", "localhost", "::1"):
        assert app.exposure_warning(host, False, None, False) is None


# -- session: Explore ------------------------------------------------------------------------------
def test_budget_range_counts_the_smallest_member_and_the_dense_map():
    assert session.budget_range("lowrank", 64, 32) == (64 + 32, 64 * 32)  # rank 1: r·(d_out + d_in)
    assert session.budget_range("circulant", 64, 64) == (64, 4096)  # one tile: its first column
    assert session.clamp_budget("lowrank", 64, 32, 10) == 96
    assert session.clamp_budget("lowrank", 64, 32, 10**6) == 2048
    assert session.clamp_budget("lowrank", 64, 32, 500) == 500


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_explore_shows_the_member_from_budget_solves(family):
    budget = 600 if family != "dense" else 32 * 32
    result = session.explore(family, 32, 32, budget, seed=3)
    expected = from_budget(family, 32, 32, budget)
    assert result.config["hparams"] == expected.hparams
    assert result.config["num_params"] == expected.num_params <= budget
    assert result.config["dense_params"] == 32 * 32
    assert result.explanation == describe(family)
    # the spectrum overlays LoRA at the same budget (600 ≥ 64 fits rank 9)
    names = {trace.name for trace in result.spectrum.data}
    assert any("lowrank" in str(n) for n in names)
    assert result.eigenvalues is not None


def test_explore_stages_answer_a_large_map_first_with_placeholders():
    quick, estimated, complete = session.explore_stages("circulant", 512, 300, 512)
    assert quick.config == complete.config and quick.heatmap is complete.heatmap
    assert not quick.spectrum.data and not quick.displacement.data  # "computing…" placeholders
    assert estimated.estimates == ("spectrum",) and complete.estimates == ()  # a sketch, then the exact values
    assert complete.spectrum.data and complete.displacement.data
    assert not complete.eigenvalues.data and "square" in complete.eigenvalues.layout.annotations[0].text
    assert len(list(session.explore_stages("circulant", 128, 128, 128))) == 1  # small: at once


def test_explore_stages_of_a_large_square_map_bring_the_eigenvalues_last():
    quick, estimated, spectral, complete = session.explore_stages("toeplitz", 300, 300, 1200)
    assert not quick.spectrum.data and not quick.eigenvalues.data
    assert estimated.estimates == ("spectrum", "eigenvalues") and spectral.estimates == ("eigenvalues",)
    assert spectral.spectrum.data and spectral.displacement.data
    assert [quick.complete, estimated.complete, spectral.complete, complete.complete] == [False, False, False, True]
    assert spectral.heatmap is quick.heatmap and complete.spectrum is spectral.spectrum  # reused
    m = from_budget("toeplitz", 300, 300, 1200, init="random", seed=0).double()
    np.testing.assert_allclose(sorted(complete.eigenvalues.data[0].x),
                               sorted(analysis.eigenvalues(m).real.numpy()), atol=1e-9)


def test_explore_rectangular_has_no_eigenvalues():
    result = session.explore("toeplitz", 48, 16, 100)
    assert not result.eigenvalues.data and result.config["shape"] == [48, 16]


@pytest.mark.parametrize("args, message", [
    (("circulant", 0, 64, 64), "d_out must be a positive integer"),
    (("circulant", 64, 2048, 64), "d_in = 2048 is larger than the explorer shows"),
    (("lowrank", 64, 64, 10), "the smallest needs 128"),
    (("nope", 64, 64, 64), "unknown family"),
    (("circulant", 64, 64, 64, -1), "seed must be an integer from 0 to 2\\*\\*63 - 1, got -1"),
    (("circulant", 64, 64, 64, 2**64), "seed must be an integer from 0 to 2\\*\\*63 - 1"),  # the engine's rule
    (("circulant", 64, 64, 64, 0, "Z7"), "displacement operator A must be one of"),
])
def test_explore_rejects_bad_input_with_a_clear_message(args, message):
    with pytest.raises(ValueError, match=message):
        session.explore(*args)


# -- session: Compare ------------------------------------------------------------------------------
def test_compare_budgets_grow_by_four_up_to_the_dense_map():
    assert session.compare_budgets(24) == [16, 64, 256, 576]
    assert session.compare_budgets(64) == [16, 64, 256, 1024, 4096]


def test_compare_table_rows_match_independent_fits():
    n, budget = 16, 64
    result = session.compare("psd", n, budget, seed=2)
    W = visualize.target_matrix("psd", n, 2)
    rows = {row[0]: dict(zip(session.TABLE_COLUMNS, row)) for row in result.rows}
    # lowrank at 64 parameters is rank 64 / (16 + 16) = 2: Eckart–Young's error
    s = torch.linalg.svdvals(W)
    assert rows["lowrank"]["params"] == 64 and rows["lowrank"]["rank"] == 2
    assert rows["lowrank"]["relative error"] == pytest.approx(float(s[2:].norm() / s.norm()), abs=1e-4)
    # symmetric Toeplitz at 64: sixteen 4 × 4 tiles of 4 parameters; the nearest one takes the
    # mean of each |i − j| diagonal of each tile
    assert rows["symmetric_toeplitz"]["hyperparameters"] == "block=4"
    tiles = W.reshape(4, 4, 4, 4).transpose(1, 2)  # (tile row, tile col, i, j)
    idx = (torch.arange(4)[:, None] - torch.arange(4)[None, :]).abs()
    fit = torch.zeros_like(tiles)
    for k in range(4):
        fit[..., idx == k] = tiles[..., idx == k].mean(-1, keepdim=True)
    error = float((tiles - fit).norm() / W.norm())
    assert rows["symmetric_toeplitz"]["relative error"] == pytest.approx(error, abs=1e-4)
    assert "dense" not in rows  # 256 parameters do not fit in 64
    assert {t.name for t in result.curves.data} == set(FAMILIES)


def test_compare_shows_ldr_last_and_only_up_to_its_budget_limit():
    n = 64
    quick, complete = session.compare_stages("gaussian", n, 4096, seed=0)
    assert "ldr" not in {t.name for t in quick.curves.data} and quick.note == "ldr: fitting…"
    ldr = [t for t in complete.curves.data if t.name == "ldr"][0]
    assert max(ldr.customdata) <= session.LDR_BUDGET_PER_ROW * n < max(session.compare_budgets(n))
    assert "ldr" not in [row[0] for row in complete.rows]  # 4096 > 32·64: left out of the table
    assert "up to 2,048 parameters" in complete.note


# -- session: Fine-tune ----------------------------------------------------------------------------
def test_finetune_config_defaults_and_baselines():
    config = session.finetune_config("", None, "kronecker", 512, 10, 8, 1e-3, 0)
    assert (config.model, config.dataset, config.budget, config.target_modules) == (DEFAULT_MODEL, BBC_NEWS, 512, "attention-qv")
    assert session.default_run_name(config) == "kronecker-512-q,v-s0"
    full = session.finetune_config(None, "x.csv", "full", 512, 10, 8, 1e-3, 0, text_column=" body ", label_column="")
    assert (full.budget, full.dataset, full.text_column, full.label_column) == (None, "x.csv", "body", None)
    assert session.default_run_name(full) == "full-s0"
    lora = session.finetune_config("", None, "lowrank", None, 10, 8, 1e-3, 2, rank=4, alpha=8, targets="all-linear")
    assert (lora.budget, lora.hparams, lora.target_modules) == (None, {"r": 4, "alpha": 8}, "all-linear")
    assert session.default_run_name(lora) == "lowrank-r4-a8-all-linear-s2"
    custom = session.finetune_config("", None, "monarch", 768, 10, 8, 1e-3, 0, targets="custom",
                                     custom_targets="query, key ,value", eval_size="all")
    assert (custom.target_modules, custom.eval_size) == (["query", "key", "value"], None)
    assert session.default_run_name(custom) == "monarch-768-query,key,value-s0"
    regex = session.finetune_config("", None, "circulant", 64, 10, 8, 1e-3, 0, targets="custom",
                                    custom_targets=r" .*attention\.self\.(query|key) ")
    assert regex.target_modules == r".*attention\.self\.(query|key)"
    assert session.default_run_name(regex) == "circulant-64-re-s0"
    every = session.finetune_config("", None, "circulant", 64, 10, 8, 1e-3, 0, targets="attention-all")
    assert session.default_run_name(every) == "circulant-64-q,k,v,o-s0"


@pytest.mark.parametrize("args, message", [
    (("dense", 512, 10, 8, 1e-3, 0), "method must be one of"),
    (("circulant", 0, 10, 8, 1e-3, 0), "budget must be a positive integer"),
    (("circulant", 512, 0, 8, 1e-3, 0), "steps must be a positive integer"),
    (("circulant", 512, 10, 8, -1.0, 0), "learning rate must be a positive number"),
    # what an API client (or a cleared field) can send for a number: our message, not Gradio's
    (("circulant", 512, "abc", 8, 1e-3, 0), "steps must be a positive integer, got 'abc'"),
    (("circulant", 512, None, 8, 1e-3, 0), "steps must be a positive integer, got None"),
    (("circulant", float("nan"), 10, 8, 1e-3, 0), "budget must be a positive integer, got nan"),
    (("circulant", 512, 10, 8, float("nan"), 0), "learning rate must be a positive number, got nan"),
    (("circulant", 512, 10, 8, 1e-3, None), "seed must be an integer from 0 to 2\\*\\*63 - 1, got None"),
    (("circulant", 512, 10, 8, 1e-3, 2**64), "seed must be an integer from 0 to 2\\*\\*63 - 1"),
    (("circulant", 512, 10**9, 8, 1e-3, 0), "more than this server allows"),
])
def test_finetune_config_rejects_bad_settings(args, message):
    with pytest.raises(ValueError, match=message):
        session.finetune_config(None, None, *args)


@pytest.mark.parametrize("model, message", [
    ("m" * 300, "could not load a model from 'mmm"),  # a path component longer than the file system allows
    ("m" * 100_000, "the model name is 100,000 characters long"),
    ("model\x00", "control characters"),
])
def test_a_model_name_no_directory_can_have_is_a_clear_message(tiny, model, message):
    with pytest.raises(ValueError, match=message):
        session.plan(session.finetune_config(model, tiny[1], "circulant", 16), session.Limits())


def test_run_names_are_made_safe_and_unique(tmp_path):
    assert session.check_run_name("my run/../x?") == "my-run-..-x"
    with pytest.raises(ValueError, match="at least one letter"):
        session.check_run_name(" /// ")
    first, second = (session.new_run_dir(tmp_path, "circulant-384-q,v-s0") for _ in range(2))
    assert (first.name, second.name) == ("circulant-384-q,v-s0", "circulant-384-q,v-s0-2")


def test_limits_refuse_large_datasets_before_anything_starts(tiny, tmp_path):
    _, data = tiny
    config = session.finetune_config("", data, "circulant", 16, 10, 8, 1e-3, 0)
    record = session.check_dataset(config, session.Limits())
    assert record == {"name": "topics.csv", "sha256": hashlib.sha256(Path(data).read_bytes()).hexdigest()}
    with pytest.raises(ValueError, match="2 classes, more than this server allows"):
        session.check_dataset(config, session.Limits(max_classes=1))
    with pytest.raises(ValueError, match="MB, more than this server accepts"):
        session.check_dataset(config, session.Limits(max_upload_mb=1e-4))
    gone = session.finetune_config("", str(tmp_path / "cleaned" / "topics.csv"), "circulant", 16, 10, 8, 1e-3, 0)
    with pytest.raises(ValueError, match="the uploaded dataset 'topics.csv' is no longer on this server"):
        session.check_dataset(gone, session.Limits())
    with pytest.raises(ValueError, match="steps = 11 is more than this server allows"):
        session.finetune_config("", data, "circulant", 16, 11, 8, 1e-3, 0, limits=session.Limits(max_steps=10))


@pytest.mark.parametrize("targets, custom, matched", [
    ("attention-qv", "", ["query", "value"]),
    ("attention-all", "", ["query", "key", "value", "dense"]),
    ("custom", "key, value", ["key", "value"]),  # a list of module-name suffixes
    ("custom", r".*self\.(query|key)$", ["query", "key"]),  # a regular expression
])
def test_plan_counts_the_layers_and_trainable_parameters_before_start(tiny, targets, custom, matched):
    model, data = tiny
    config = session.finetune_config(model, data, "lowrank", None, 10, 8, 1e-3, 0, rank=2, alpha=4, targets=targets,
                                     custom_targets=custom)
    line, rows = session.plan(config, session.Limits())
    layers = len(matched)
    head = 16 * 2 + 2
    adapters = layers * 2 * (16 + 16)  # rank 2 on 16 × 16 layers: r·(d_in + d_out) each
    assert [row[0].rsplit(".", 1)[-1] for row in rows] == matched  # the matched layers, before anything starts
    assert all(row[1:] == ["lowrank", "16 × 16", "r=2, alpha=4.0", 64] for row in rows)
    assert line.startswith(f"{layers} layers adapted") and f"{adapters + head:,} trainable parameters" in line
    assert f"{adapters:,} in adapters + {head:,} in the head" in line
    with pytest.raises(ValueError, match="could not load a model from"):
        session.plan(session.finetune_config("/no/such/model", data, "circulant", 16, 10, 8, 1e-3, 0),
                     session.Limits())


def test_job_trains_in_its_own_process_and_stops_within_a_step(tiny, tmp_path):
    model, data = tiny
    config = session.finetune_config(model, data, "circulant", 16, 5000, 8, 1e-2, 0, eval_every=5000)
    job = session.new_run(tmp_path, config, "", session.Limits()).start()
    while not job.events() or not job.events()[-1]["step"]:
        assert not job.wait(0.1), job.error
    assert job.process.pid != os.getpid()
    # during the run: where it is, the time it has taken and the time it still needs
    assert re.fullmatch(r"Step \d+/5000 on cpu · loss [\d.]+ · batch accuracy [\d.]+ · \d+:\d\d elapsed, "
                        r"about \d+:\d\d(:\d\d)? left", job.status()), job.status()
    job.stop()
    job.stop()  # a second press must not interrupt the run at once (the CLI's second Ctrl-C)
    assert job.wait(120)
    assert job.summary["stopped_reason"] == "stopped" and 0 < job.summary["steps_done"] < 5000
    assert job.summary["final_eval_acc"] is not None  # it evaluated what it reached
    assert job.status().startswith("Done (stopped): Step")
    assert 0 < job.progress() < 1
    record = json.loads((job.run_dir / "run.json").read_text())
    assert record["dataset"]["name"] == "topics.csv" and (job.run_dir / "data" / "topics.csv").is_file()
    # no server path anywhere in what the run wrote: the dataset is the run's own copy
    for name in ("summary.json", "run.json", "config.json"):
        assert data not in (job.run_dir / name).read_text()


def test_job_failure_is_a_message_and_leaves_no_run_dir(tmp_path):
    messages = []
    for missing in (tmp_path / "missing", tmp_path):  # no such directory, and a directory without a model
        config = session.finetune_config(str(missing), None, "circulant", 16, 10, 8, 1e-3, 0)
        job = session.new_run(tmp_path / "runs", config, "x", session.Limits()).start()
        assert job.wait(120)
        assert job.summary is None and job.status() == f"Failed: {job.error}"
        assert not job.run_dir.exists()
        messages.append(job.error.replace(str(missing), "<model>"))
    # which server directories exist is not told apart
    assert messages[0] == messages[1] == ("could not load a model from '<model>': give a local model directory "
                                          "or a Hugging Face hub id")


def test_device_line_serves_in_arrival_order_and_lets_the_cancelled_go():
    line, stop = session.DeviceLine(), threading.Event()
    for who in "abc":
        line.join(who)
    assert [line.position(w) for w in "abc"] == [0, 1, 2]
    stop.set()
    assert not line.wait_turn("c", stop) and line.position("c") is None
    line.leave("a")
    assert line.wait_turn("b", threading.Event())


def test_reference_params_count_lora_r8_and_the_whole_model(tiny):
    model_dir, _ = tiny
    full = sum(p.numel() for p in BertForSequenceClassification.from_pretrained(model_dir).parameters())
    head = 16 * 2 + 2  # the two-way classifier on the 16-wide pooled output
    lora = 2 * 8 * (16 + 16)  # rank 8 on query and value of the one layer: r·(d_in + d_out) each
    assert session.reference_params(model_dir, "text-classification", ("a", "b")) == {"LoRA r=8": lora + head,
                                                                                     "full fine-tuning": full}


def fake_run(workspace, name, method, params, acc, budget=None, model="m", dataset="d.csv", started="2025-01-01",
             reason="completed"):
    run_dir = Path(workspace) / name
    (run_dir / "adapter").mkdir(parents=True)
    (run_dir / "adapter" / "adapter.safetensors").write_bytes(b"weights")
    (run_dir / "metrics.jsonl").write_text("{}\n")
    (run_dir / "process.log").write_text("not for download\n")
    (run_dir / "run.json").write_text(json.dumps({"name": name, "started": started, "dataset": {"name": dataset}}))
    summary = {"trainable_params": params, "final_eval_acc": acc, "best_eval_acc": acc, "steps_done": 5,
               "examples_per_s": 12.345, "wall_time_s": 3.21, "device": "cpu", "stopped_reason": reason,
               "labels": ["a", "b"], "run_dir": ".",
               "config": {"method": method, "budget": budget, "model": model, "dataset": "data/" + dataset}}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "config.json").write_text(json.dumps(summary["config"]))
    return run_dir


def test_runs_table_reads_summaries_in_start_order(tmp_path):
    fake_run(tmp_path, "lowrank-r8-q,v-s0", "lowrank", 200, 0.75, model=DEFAULT_MODEL, dataset="other.csv",
             started="2025-01-02 00:00:00")
    fake_run(tmp_path, "full-s0", "full", 9000, 0.875, model="/srv/models/tiny-bert", started="2025-01-01 00:00:00")
    running = tmp_path / "circulant-384-q,v-s0"
    running.mkdir()
    (running / "run.json").write_text(json.dumps({"name": "c", "started": "2025-01-03", "dataset": {"name": "d"}}))
    (running / "config.json").write_text(json.dumps(FinetuneConfig(method="circulant", budget=384).to_dict()))
    runs, notes = session.load_runs(tmp_path, active={running: "running"})
    assert [r["name"] for r in runs] == ["full-s0", "lowrank-r8-q,v-s0", "circulant-384-q,v-s0"] and not notes
    rows = session.runs_rows(runs)
    assert rows[1] == ["lowrank-r8-q,v-s0", "lowrank", "completed", 200, 0.75, 0.75, 5, 3.2, "all-MiniLM-L6-v2",
                       "other.csv"]
    assert rows[0][8] == "tiny-bert"  # a readable model name, not a path
    assert rows[2][:3] == ["circulant-384-q,v-s0", "circulant", "running"]
    assert all(len(row) == len(session.RUN_COLUMNS) for row in rows)
    assert session.comparable(runs, runs[0]) == [runs[0]]
    assert [r["name"] for r in session.filter_runs(runs, "LOWRANK other")] == ["lowrank-r8-q,v-s0"]
    # a run whose process ended without a summary (killed before its first step) can start again
    (running / "metrics.jsonl").write_text("")
    assert session.load_runs(tmp_path)[0][2]["status"] == "interrupted, resumable"


def test_runs_view_charts_the_runs_comparable_with_the_selected_one(tmp_path):
    fake_run(tmp_path, "a", "circulant", 50, 0.5, model="gone", dataset="x.csv", started="2025-01-01")
    fake_run(tmp_path, "b", "lowrank", 80, 0.6, model="gone", dataset="y.csv", started="2025-01-02")
    fake_run(tmp_path, "c", "monarch", 90, 0.7, model="gone", dataset="x.csv", started="2025-01-03")
    latest = session.runs_view(tmp_path)
    assert [r["name"] for r in latest.charted] == ["a", "c"] and latest.names == ["a", "b", "c"]
    assert latest.references == {}  # the model does not load (any more): the runs alone
    assert [r["name"] for r in session.runs_view(tmp_path, selected="b").charted] == ["b"]
    filtered = session.runs_view(tmp_path, query="monarch", selected="a")
    assert [row[0] for row in filtered.rows] == ["c"] and [r["name"] for r in filtered.charted] == ["c"]


@pytest.mark.parametrize("damage, note", [
    (lambda d: (d / "summary.json").write_text(json.dumps({"final_eval_acc": 0.5})), "summary.json lacks"),
    (lambda d: (d / "summary.json").write_text("{not json"), "cannot read summary.json"),
    (lambda d: (d / "summary.json").write_text("[1, 2]"), "summary.json is not a JSON object"),
    (lambda d: (d / "run.json").unlink(), "cannot read run.json"),
])
def test_runs_table_skips_a_malformed_run_with_a_note(tmp_path, damage, note):
    fake_run(tmp_path, "good", "circulant", 50, 0.5)
    damage(fake_run(tmp_path, "bad", "circulant", 50, 0.5))
    runs, notes = session.load_runs(tmp_path)
    assert [r["name"] for r in runs] == ["good"]
    assert len(notes) == 1 and notes[0].startswith("skipped bad: " + note)


def test_delete_run_removes_a_finished_run_but_not_a_running_one(tmp_path):
    fake_run(tmp_path, "done", "circulant", 50, 0.5)
    fake_run(tmp_path, "going", "circulant", 50, 0.5)
    runs, _ = session.load_runs(tmp_path, active={tmp_path / "going": "running"})
    with pytest.raises(ValueError, match="run 'going' is running; stop it before deleting it"):
        session.delete_run(session.find_run(runs, "going"))
    session.delete_run(session.find_run(runs, "done"))
    assert [r["name"] for r in session.load_runs(tmp_path)[0]] == ["going"]
    with pytest.raises(ValueError, match="no run named 'done' in your workspace"):
        session.find_run(session.load_runs(tmp_path)[0], "done")


def test_package_run_zips_weights_summary_and_metrics(tmp_path):
    fake_run(tmp_path, "circulant-16-q,v-s0", "circulant", 50, 0.5, 16)
    (run,), _ = session.load_runs(tmp_path)
    path = session.package_run(run)
    assert not path.is_relative_to(tmp_path)  # zips are not written into the runs directory
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["adapter/adapter.safetensors", "metrics.jsonl", "run.json", "summary.json"]
        assert zf.read("adapter/adapter.safetensors") == b"weights"


def test_workspaces_are_separate_directories_named_by_digest(tmp_path):
    a, b = session.new_workspace_key(), session.new_workspace_key()
    assert a != b and len(a) >= 16
    assert session.workspace_dir(tmp_path, a) != session.workspace_dir(tmp_path, b)
    assert session.workspace_dir(tmp_path, a) == session.workspace_dir(tmp_path, f" {a} ")
    assert a not in str(session.workspace_dir(tmp_path, a))
    assert session.workspace_dir(tmp_path, "../../etc").parent == tmp_path  # any key is a safe name
    assert session.workspace_dir(tmp_path, None) == tmp_path / "shared"
    with pytest.raises(ValueError, match="1 to 100 characters"):
        session.workspace_dir(tmp_path, "  ")


# -- the served app --------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [64, 200])  # 200 × 200 answers in stages, resending only new figures
def test_api_explore_returns_the_solved_member_and_its_figures(client, n):
    config, heatmap, spectrum, eigen, displacement, explanation = client.predict(
        "kronecker", n, n, 500, 1, "Z1", "Z-1", api_name="/explore")
    expected = from_budget("kronecker", n, n, 500)
    assert config["num_params"] == expected.num_params and config["hparams"] == json.loads(json.dumps(expected.hparams))
    for fig in (heatmap, spectrum, eigen, displacement):
        assert fig["type"] == "plotly" and json.loads(fig["plot"])["data"]
    assert explanation == describe("kronecker")


@pytest.mark.parametrize("args, message", [
    (("lowrank", 64, 64, 10, 0, "Z1", "Z-1"), "the smallest needs 128"),
    (("circulant", 5000, 64, 64, 0, "Z1", "Z-1"), "larger than the explorer shows"),
    (("circulant", 64, 64, 64, 0, "Z1", "nope"), "not in the list of choices"),
    (("circulant", 64, 64, "abc", 0, "Z1", "Z-1"), "budget must be a positive integer, got 'abc'"),
    (("circulant", 64.5, 64, 64, 0, "Z1", "Z-1"), "d_out must be a positive integer, got 64.5"),
    (("circulant", 64, 64, 64, None, "Z1", "Z-1"), "seed must be an integer"),
])
def test_api_explore_bad_input_is_a_message_and_the_app_keeps_serving(client, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/explore")
    assert client.predict("circulant", 8, 8, 8, 0, "Z1", "Z-1", api_name="/explore")[0]["num_params"] == 8


def test_api_a_large_explore_never_holds_up_a_small_one(url, tmp_path):
    import importlib

    large_maps = importlib.import_module("surm_core.session.explore")._large_maps
    clients = [Client(url, verbose=False, download_files=str(tmp_path)) for _ in range(3)]
    large_maps.acquire()  # the served app runs in this process: its large-map queue is taken
    try:  # two large explorations wait (they used to fill the two slots every explorer shared) ...
        large = [c.submit("toeplitz", 300, 300, 1200, 0, "Z1", "Z-1", api_name="/explore") for c in clients[:2]]
        wait_for(lambda: all(job.status().code.name == "PROCESSING" for job in large), "the large explorations")
        small = clients[2].submit("circulant", 64, 64, 64, 0, "Z1", "Z-1", api_name="/explore").result(timeout=60)
        assert small[0]["num_params"] == 64 and not any(job.done() for job in large)  # ... a small one does not
    finally:
        large_maps.release()
    for job in large:
        assert job.result(timeout=120)[0]["num_params"] == from_budget("toeplitz", 300, 300, 1200).num_params


def test_api_compare_returns_curves_table_and_note(client):
    curves, table, note = client.predict("psd", 16, 64, 0, api_name="/compare")
    assert {t["name"] for t in json.loads(curves["plot"])["data"]} == set(FAMILIES)
    assert table["headers"] == session.TABLE_COLUMNS and len(table["data"]) == len(FAMILIES) - 1  # no dense
    assert "ldr is fitted iteratively" in note


@pytest.mark.parametrize("args, message", [
    (("psd", "abc", 64, 0), "n must be a positive integer, got 'abc'"),
    (("psd", 16, 64.5, 0), "budget must be a positive integer, got 64.5"),
    (("psd", 16, 64, -1), "seed must be an integer"),
])
def test_api_compare_bad_numbers_are_our_messages(client, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/compare")


def finetune_args(tiny, method="circulant", steps=6, dataset=None, model=None):
    model_dir, data = tiny
    return (model or model_dir, handle_file(dataset or data), "", "", method, 16, steps, 8, 1e-2, 0)


def test_api_finetune_tiny_model_writes_a_run_and_offers_the_adapter(client, tiny, runs_dir):
    summary, status, live, download, code, table, note, bars, front, picked = client.predict(
        *finetune_args(tiny), api_name="/finetune")
    assert summary["stopped_reason"] == "completed" and summary["steps_done"] == 6
    assert summary["run"] == picked["value"] == "circulant-16-q,v-s0" and "run_dir" not in summary
    assert any((d / "summary.json").is_file() for d in runs_dir.glob("*/circulant-16-q,v-s0"))
    # the dataset is recorded by its name and digest, never by where the upload was kept
    assert summary["dataset"] == {"name": "topics.csv", "sha256": hashlib.sha256(Path(tiny[1]).read_bytes()).hexdigest()}
    assert summary["config"]["dataset"] == "topics.csv" and summary["config"]["model"] == "model"
    assert str(Path(tiny[0]).parent) not in json.dumps(summary)  # no server path, of the model or the data
    assert "Done (completed): Step 6/6 on cpu" in status
    trace_steps = json.loads(live["plot"])["data"][0]["x"]
    assert trace_steps[-1] == 6
    with zipfile.ZipFile(download) as zf:
        assert "summary.json" in zf.namelist() and any(n.startswith("adapter/") for n in zf.namelist())
        assert "process.log" not in zf.namelist() and not any(n.startswith("data/") for n in zf.namelist())
    assert [row[:3] for row in table["data"]] == [["circulant-16-q,v-s0", "circulant", "completed"]]
    assert json.loads(front["plot"])["data"][0]["x"][-1] == summary["trainable_params"]


def test_api_finetune_bad_inputs_are_messages_and_the_app_keeps_serving(client, tiny, tmp_path):
    one_class = tmp_path / "one_class.csv"
    one_class.write_text("text,label\n" + "goal match,sports\n" * 10, encoding="utf-8")
    with pytest.raises(AppError, match="single class|one class|only one"):
        client.predict(*finetune_args(tiny, dataset=str(one_class)), api_name="/finetune")
    with pytest.raises(AppError, match="could not load a model from"):
        client.predict(*finetune_args(tiny, model=str(tmp_path / "no-model")), api_name="/finetune")
    args = finetune_args(tiny)
    for index, value, message in [(5, 0, "budget must be a positive integer"),
                                  (6, "abc", "steps must be a positive integer, got 'abc'"),
                                  (6, None, "steps must be a positive integer, got None"),
                                  (8, "fast", "learning rate must be a positive number, got 'fast'"),
                                  (6, 10**9, "more than this server allows"),
                                  (9, 2**64, "seed must be an integer from 0 to 2\\*\\*63 - 1")]:
        with pytest.raises(AppError, match=message):
            client.predict(*args[:index], value, *args[index + 1:], api_name="/finetune")
    assert client.predict("circulant", 8, 8, 8, 0, "Z1", "Z-1", api_name="/explore")[0]["num_params"] == 8


def wait_for(condition, what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def shows(job, text: str) -> bool:
    """Whether the status of some update ``job`` streamed so far contains ``text``."""
    return any(text in (update[1] or "") for update in job.outputs())


def test_api_one_finetune_at_a_time_queue_then_stop(url, tiny, tmp_path):
    first, second = (Client(url, verbose=False, download_files=str(tmp_path)) for _ in range(2))
    running = first.submit(*finetune_args(tiny, steps=5000), api_name="/finetune")
    wait_for(lambda: shows(running, "Step"), "the first fine-tune to stream progress")
    # a second Start from the same page gets an answer: refused, and why
    with pytest.raises(AppError, match="your fine-tune 'circulant-16-q,v-s0.*' is running; one at a time per page"):
        first.predict(*finetune_args(tiny), api_name="/finetune")
    # exploring is not held up by the fine-tune (its own process)
    assert first.predict("circulant", 8, 8, 8, 0, "Z1", "Z-1", api_name="/explore")[0]["num_params"] == 8
    waiting = second.submit(*finetune_args(tiny, steps=5000), api_name="/finetune")
    wait_for(lambda: shows(waiting, "Queued: 1 fine-tune ahead of this one"), "the second fine-tune to wait in line")
    first.predict(api_name="/stop")
    summary = running.result(timeout=120)[0]
    assert summary["stopped_reason"] == "stopped" and summary["steps_done"] < 5000
    wait_for(lambda: shows(waiting, "Step"), "the second fine-tune to start")
    second.predict(api_name="/stop")
    assert waiting.result(timeout=120)[0]["stopped_reason"] == "stopped"
    with pytest.raises(AppError, match="No fine-tune of yours is running"):
        second.predict(api_name="/stop")
