"""The bfloat16 autocast path that CUDA runs take, exercised on the CPU (autocast "cpu" with bfloat16)
with every method on a tiny BERT: it trains, evaluates, saves and predicts; "auto" is float32 on
the CPU."""
import pytest
import torch

from surm_core.finetune import FinetuneConfig, predict, run
from surm_core.finetune import task as task_module
from surm_core.finetune.engine import uses_bf16
from test_finetune import config_for, make_tiny_model, write_topics_csv

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

METHODS = ["lowrank", "circulant", "toeplitz", "symmetric_toeplitz", "kronecker", "ldr", "monarch", "dense", "head-only", "full"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"model": make_tiny_model(root / "model"), "dataset": write_topics_csv(root / "topics.csv")}


def logits_dtypes(monkeypatch):
    """The dtypes of the logits the task computes, training and evaluating."""
    seen = []
    loss, score = task_module.TextClassification.loss, task_module.TextClassification.score

    def record(method):
        def wrapped(self, model, batch, autocast):
            head = model.get_submodule(self.head(model)[0])
            handle = head.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
            try:
                return method(self, model, batch, autocast)
            finally:
                handle.remove()
        return wrapped

    monkeypatch.setattr(task_module.TextClassification, "loss", record(loss))
    monkeypatch.setattr(task_module.TextClassification, "score", record(score))
    return seen


@pytest.mark.parametrize("method", METHODS)
def test_bf16_autocast_trains_evaluates_and_saves_on_the_cpu(tiny, method, tmp_path, monkeypatch):
    seen = logits_dtypes(monkeypatch)
    config = config_for(tiny, method=method, hparams=None, steps=4, eval_every=2, precision="bf16",
                        lr=1e-3 if method == "full" else 1e-2, out_dir=str(tmp_path / "run"))
    summary = run(config)
    assert summary["stopped_reason"] == "completed" and summary["final_eval_acc"] is not None
    assert set(seen) == {torch.bfloat16}  # the model computed in bfloat16, training and evaluating
    # the weights and optimizer stay float32: what was saved loads and predicts as float32
    probabilities = predict(tmp_path / "run", ["goal match"])[0]
    assert sum(probabilities.values()) == pytest.approx(1)


def test_auto_precision_is_float32_on_the_cpu(tiny, monkeypatch):
    seen = logits_dtypes(monkeypatch)
    run(config_for(tiny, steps=2, eval_every=2))
    assert set(seen) == {torch.float32}


def test_precision_choices():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert [uses_bf16(p, cpu) for p in ("auto", "fp32", "bf16")] == [False, False, True]
    assert [uses_bf16(p, cuda) for p in ("auto", "fp32", "bf16")] == [True, False, True]
    with pytest.raises(ValueError, match=r"precision must be one of \('auto', 'fp32', 'bf16'\), got 'fp16'"):
        FinetuneConfig(precision="fp16")
