"""Integration: the packaged all-MiniLM-L6-v2 with a circulant adapter learns BBC News topics in a few
dozen CPU steps (short texts and a small evaluation subset keep it to about a minute)."""
import json

from surm_core.finetune import FinetuneConfig, run
from surm_core.models import DEFAULT_MODEL


def test_minilm_with_a_circulant_adapter_learns_bbc_news(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = FinetuneConfig(
        model=DEFAULT_MODEL, dataset="bbc_news", method="circulant", steps=30, batch_size=16,
        max_length=64, eval_every=30, eval_size=100, out_dir=str(tmp_path / "run"),
    )
    summary = run(config)  # the default learning rate for adapters, 5e-3
    assert summary["stopped_reason"] == "completed" and summary["steps_done"] == 30
    assert summary["eval_rows"] == 100 and summary["labels"] == ["business", "entertainment", "politics", "sports", "tech"]
    # 5 balanced-ish classes: chance is about 0.2
    assert summary["final_eval_acc"] > 0.6
    # one 384-parameter circulant on each of 6 query and 6 value layers, plus the 384×5 head
    assert summary["adapter_params"] == 12 * 384 and summary["trainable_params"] == 12 * 384 + 384 * 5 + 5
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["reason"] == "completed" and records[-2]["eval_acc"] == summary["final_eval_acc"]
