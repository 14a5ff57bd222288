"""The Fine-tune tab for every task, through the served app's API: a tiny ViT trains on the built-in
digits and classifies an uploaded image, a tiny GPT-2 learns a prompt/completion JSONL and the
``generate`` endpoint completes a prompt, each task's runs in a table of their own; an image model
given texts and a text model given images are refused with a message naming the mismatch.
Models are tiny and random, built from configs (nothing is downloaded)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from surm_core import session
from test_app import served_app, tiny_csv, tiny_model
from test_causal import make_tiny_lm, write_reviews
from test_images import make_tiny_vit

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"vit": make_tiny_vit(root / "vit"), "gpt2": make_tiny_lm(root / "gpt2", "gpt2"),
            "reviews": write_reviews(root / "reviews.jsonl"), "bert": tiny_model(root / "bert"),
            "topics": tiny_csv(root / "topics.csv")}


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with served_app(tmp_path_factory.mktemp("runs")) as url:
        yield url


@pytest.fixture(scope="module")
def client(url, tmp_path_factory):
    return Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


def test_a_tiny_vit_trains_on_digits_and_classifies_an_image(client, tiny, tmp_path):
    summary, status, live, _, code, table, _, _, front, _ = client.predict(
        tiny["vit"], None, "", "", "circulant", 32, 30, 32, 5e-2, 0, eval_every=30, eval_size="200",
        task="image-classification", built_in="digits", api_name="/finetune")
    assert summary["stopped_reason"] == "completed" and summary["task"] == "image-classification"
    assert summary["dataset"] == {"name": "digits"} and summary["final_eval_acc"] > 0.2  # chance is 0.1
    assert "eval accuracy" in status and "surm_core.models.load_image_model(" in code and "/adapter')" in code
    assert table["headers"] == session.RUN_COLUMNS and [row[0] for row in table["data"]] == [summary["run"]]
    assert json.loads(front["plot"])["layout"]["yaxis"]["title"]["text"] == "eval accuracy (higher is better)"
    image = tmp_path / "seven.png"
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(image)
    probabilities = client.predict(summary["run"], handle_file(str(image)), api_name="/classify_image")
    labels = {c["label"]: c["confidence"] for c in probabilities["confidences"]}
    assert set(labels) == {str(d) for d in range(10)} and sum(labels.values()) == pytest.approx(1.0)
    with pytest.raises(AppError, match=f"run '{summary['run']}' is a image-classification run; classifying a text "
                                       "needs a text-classification run"):
        client.predict(summary["run"], "a text", api_name="/predict")


def test_a_tiny_gpt2_learns_completions_and_generates(client, tiny):
    summary, status, live, _, _, table, _, _, front, _ = client.predict(
        tiny["gpt2"], handle_file(tiny["reviews"]), "", "", "lowrank", None, 12, 16, 1e-2, 0, lora_r=4, lora_alpha=8,
        max_length=24, eval_every=6, eval_size="all", task="causal-lm", api_name="/finetune")
    assert summary["stopped_reason"] == "completed" and summary["task"] == "causal-lm"
    assert summary["final_eval_loss"] > 0 and summary["final_perplexity"] > 1
    assert "eval loss" in status and "perplexity" in status
    live = json.loads(live["plot"])
    assert [t["name"] for t in live["data"]] == ["train loss", "eval loss", "eval perplexity"]
    assert table["headers"] == session.CAUSAL_COLUMNS and [row[0] for row in table["data"]] == [summary["run"]]
    assert json.loads(front["plot"])["layout"]["yaxis"]["title"]["text"] == "eval loss (lower is better)"
    completion = client.predict(summary["run"], "review : great fun the plot sentiment :", 3, api_name="/generate")
    assert isinstance(completion, str) and len(completion.split()) <= 3
    with pytest.raises(AppError, match="Value 0 is less than minimum value 1"):
        client.predict(summary["run"], "review :", 0, api_name="/generate")
    with pytest.raises(ValueError, match="max new tokens must be a whole number from 1 to 256, got 1000"):
        session.generate({"name": "r"}, "review :", 1000)
    # each task's runs in their own table: the text table does not list the causal-LM run
    table = client.predict("", None, "text-classification", api_name="/runs")[0]
    assert summary["run"] not in [row[0] for row in table["data"]]
    assert [row[0] for row in client.predict("", None, "causal-lm", api_name="/runs")[0]["data"]] == [summary["run"]]


def plan(client, model, dataset, task, built_in=None):
    return client.predict(model, dataset, "", "", "circulant", 32, 8, 16, "attention-qv", "", task, built_in,
                          api_name="/plan")[0]


def test_a_dataset_that_does_not_fit_the_model_is_named_before_start(client, tiny):
    line = plan(client, tiny["vit"], handle_file(tiny["topics"]), "image-classification")
    assert line.startswith("**Cannot start:** the task is image-classification, but dataset &#x27;topics.csv&#x27; "
                           "holds texts; image-classification needs images")  # the upload by name, not its path
    line = plan(client, tiny["bert"], None, "text-classification", "digits")
    assert "the built-in dataset &#x27;digits&#x27; does not fit text-classification" in line
    line = plan(client, tiny["vit"], None, "text-classification")
    assert "is not a text model: it is ViTForImageClassification (vit), for image-classification" in line
    line = plan(client, "", None, "causal-lm")
    assert "causal-lm needs a causal language model such as GPT-2" in line
    assert plan(client, tiny["vit"], None, "image-classification", "digits").startswith("4 layers adapted (q_proj, v_proj)")
    with pytest.raises(AppError, match="holds texts; image-classification needs images"):
        client.predict(tiny["vit"], handle_file(tiny["topics"]), "", "", "circulant", 32, 5, 8, 1e-2, 0,
                       task="image-classification", api_name="/finetune")


# -- the task selector's choices, without a server ----------------------------------------------------

def test_each_task_offers_its_built_in_datasets_and_says_when_fashion_mnist_is_missing(monkeypatch, tmp_path):
    from surm_core.finetune import images

    assert [v for _, v in session.built_in_datasets("text-classification")[0]] == ["bbc_news"]
    assert [v for _, v in session.built_in_datasets("causal-lm")[0]] == ["bbc_news"]
    monkeypatch.setattr(images, "FASHION_MNIST_DIR", tmp_path / "absent")
    choices, note = session.built_in_datasets("image-classification")
    assert [v for _, v in choices] == ["digits"] and "Fashion-MNIST is not installed on this server" in note
    with pytest.raises(ValueError, match="Fashion-MNIST is not installed on this server"):
        session.finetune_config("m", None, "circulant", 32, task="image-classification", built_in="fashion_mnist")
    monkeypatch.setattr(images, "FASHION_MNIST_DIR", tmp_path)
    assert [v for _, v in session.built_in_datasets("image-classification")[0]] == ["digits", "fashion_mnist"]
    with pytest.raises(ValueError, match="task must be one of text-classification, image-classification, causal-lm"):
        session.built_in_datasets("audio")


def test_typing_a_model_sets_the_task_from_its_config(tiny):
    assert session.typed_model_task(tiny["vit"], "text-classification") == "image-classification"
    assert session.typed_model_task(tiny["gpt2"], "text-classification") == "causal-lm"
    assert session.typed_model_task(tiny["bert"], "causal-lm") == "text-classification"
    assert session.typed_model_task("  ", "causal-lm") == "causal-lm"  # nothing typed: as it was
    assert session.typed_model_task("/no/such/model", "image-classification") == "image-classification"
    config = session.finetune_config(tiny["gpt2"], None, "circulant", 96, task="causal-lm", chat_template=True)
    assert (config.task, config.dataset, config.chat_template) == ("causal-lm", "bbc_news", True)
