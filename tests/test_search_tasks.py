"""The structure search for every task, on tiny models built from configs: a causal LM is searched
on its eval loss (minimised: the pruner, the front and the best trial take lower as better), an
image classifier on its accuracy; ``--task`` is inferred from the model when not given."""
from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from surm_core.finetune import FinetuneConfig
from surm_core.search import FrontPruner, Search, SearchSpace, best, front, run_search
from surm_core.search.__main__ import main
from test_causal import make_tiny_lm, write_reviews
from test_search import done_trial, search_study
from test_images import make_tiny_vit

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    return {"gpt2": make_tiny_lm(root / "gpt2", "gpt2"), "reviews": write_reviews(root / "reviews.jsonl"),
            "vit": make_tiny_vit(root / "vit")}


def test_a_minimising_study_prunes_the_higher_loss_and_fronts_the_lower():
    study = search_study("minimize")
    for params, loss in [(100, 1.0), (100, 2.0), (100, 1.5), (200, 0.5)]:
        study.add_trial(done_trial(loss, params, {2: loss}))

    def pruned(params, loss):
        return FrontPruner(min_trials=3).prune(study, done_trial(None, params, {2: loss}, state=TrialState.RUNNING))

    assert pruned(100, 1.6) and not pruned(100, 1.4)  # the median of the three is 1.5; higher is worse
    assert [(t.user_attrs["trainable_params"], t.values[0]) for t in front(study)] == [(100, 1.0), (200, 0.5)]
    assert best(study).values[0] == 0.5 and best(study, max_params=150).values[0] == 1.0


def test_a_causal_lm_search_minimises_the_eval_loss(tiny, tmp_path, capsys):
    run = FinetuneConfig(model=tiny["gpt2"], dataset=tiny["reviews"], steps=4, eval_every=2, batch_size=8,
                         max_length=24, eval_size=16, device="cpu")  # task inferred: causal-lm
    search = Search(SearchSpace(["circulant", "lowrank"], max_budget=256), run)
    assert search.metric() == ("eval_loss", "minimize")
    study = run_search(search, tmp_path / "s", trials=2)
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE] * 2  # the loss and the size
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert complete and all(t.values[0] > 0 for t in complete)  # an eval loss, not an accuracy
    assert best(study).values[0] == min(t.values[0] for t in complete)
    with pytest.raises(ValueError, match="a causal language model has none"):
        run_search(Search(SearchSpace(["head-only"], max_budget=256), run), tmp_path / "h", trials=1)


def test_the_cli_infers_the_image_task_and_reports_accuracy(tiny, tmp_path, capsys):
    args = ["--model", tiny["vit"], "--dataset", "digits", "--families", "circulant", "--max-budget", "64", "--trials", "1",
            "--steps", "4", "--batch-size", "16", "--eval-size", "64", "--device", "cpu", "--out", str(tmp_path / "s")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Pareto front (accuracy vs trainable parameters):" in out
    # an explicit task that the data cannot serve is one clear line, before any trial
    assert main([*args[:-1], str(tmp_path / "t"), "--task", "text-classification"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "holds images" in err
