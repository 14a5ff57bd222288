"""Trying a trained run: predict() on a tiny BERT gives the labels with probabilities summing to 1 and
the run's own accuracy on its test rows; load_snippet() is Python that, run on the unzipped
download, gives the same probabilities."""
import ast
import contextlib
import io
import json
import zipfile

import pytest

from surm_core.finetune import load_snippet, predict, run
from surm_core.finetune import inference
from surm_core.finetune.task import task_for
from test_finetune import config_for, make_tiny_model, write_topics_csv

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

LABELS = ["money", "music", "politics", "sport"]
TEXTS = ["match goal team coach", "song album band", "market bank price shares today", ""]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"model": make_tiny_model(root / "model"), "dataset": write_topics_csv(root / "topics.csv")}


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, overrides in [("lora", {}), ("head", dict(method="head-only", hparams=None, lr=0.1)),
                            ("full", dict(method="full", hparams=None, lr=1e-3))]:
        out[name] = root / name
        run(config_for(tiny, steps=30, eval_size=None, out_dir=str(out[name]), **overrides))
    return out


@pytest.mark.parametrize("name", ["lora", "head", "full"])
def test_predict_gives_every_label_a_probability(runs, name):
    predictions = predict(runs[name], TEXTS)
    assert len(predictions) == len(TEXTS)
    for p in predictions:
        assert list(p) == LABELS and sum(p.values()) == pytest.approx(1, abs=1e-12) and all(0 <= v <= 1 for v in p.values())


@pytest.mark.parametrize("name", ["lora", "head", "full"])
def test_predict_is_the_trained_model(tiny, runs, name):
    # on the test split, its most probable labels score exactly the run's final accuracy
    summary = json.loads((runs[name] / "summary.json").read_text())
    test = task_for(config_for(tiny)).test_split
    predictions = predict(runs[name], test.texts)
    correct = sum(max(p, key=p.get) == LABELS[y] for p, y in zip(predictions, test.labels))
    assert correct / len(test) == summary["final_eval_acc"] > 0.5


def test_the_model_is_loaded_once(runs):
    inference.load_trained.cache_clear()
    predict(runs["lora"], ["vote"])
    predict(runs["lora"], ["party"])
    info = inference.load_trained.cache_info()
    assert (info.misses, info.hits) == (1, 1)


def test_runs_without_weights_cannot_predict(tiny, tmp_path):
    with pytest.raises(ValueError, match="is not a finished run"):
        predict(tmp_path, ["x"])
    run(config_for(tiny, lr=1e30, out_dir=str(tmp_path / "bad")))
    with pytest.raises(ValueError, match=r"bad has no trained weights: it ended with 'non-finite loss at step \d+'"):
        predict(tmp_path / "bad", ["x"])


def test_predict_wants_a_list_of_strings(runs):
    for texts in ["one text", [1, 2], None]:
        with pytest.raises(ValueError, match="texts must be a list of strings"):
            predict(runs["lora"], texts)


@pytest.mark.parametrize("name", ["lora", "head", "full"])
def test_the_snippet_loads_the_download_and_classifies(runs, name, tmp_path, monkeypatch):
    run_dir = runs[name]
    with zipfile.ZipFile(tmp_path / f"{name}.zip", "w") as zf:  # the download: the run directory's files
        for p in sorted(run_dir.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(run_dir).as_posix())
    snippet = load_snippet(run_dir, text="market shares")
    assert "import surm_core" not in snippet and "from surm_core import " in snippet
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(snippet, "snippet", "exec"), {})
    got = ast.literal_eval(printed.getvalue().strip())
    expected = predict(run_dir, ["market shares"])[0]
    assert list(got) == LABELS and got == pytest.approx(expected, abs=1e-6)
    assert (tmp_path / name / ("adapter" if name == "lora" else "trainable.safetensors")).exists()
