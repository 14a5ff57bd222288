"""The structure search on a tiny BERT and a tiny topic CSV (test_finetune.py's): sampling, pruning, the front,
workers sharing a study, resuming a killed search, failing trials, exporting, and bad input."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import FixedTrial, TrialState

import visualize
from surm_core.finetune import FinetuneConfig
from surm_core.search import FrontPruner, Layers, Search, SearchSpace, best, front, run_search
from surm_core.search import study as study_module
from surm_core.search.space import REFERENCE, ldr_hparams, monarch_hparams
from test_finetune import make_tiny_model, write_topics_csv

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"model": make_tiny_model(root / "model"), "dataset": write_topics_csv(root / "topics.csv")}


def tiny_search(tiny, families=("circulant", "lowrank", "monarch", "head-only"), **space) -> Search:
    run = FinetuneConfig(model=tiny["model"], dataset=tiny["dataset"], steps=6, eval_every=2, batch_size=16,
                         max_length=16, device="cpu")
    limit = {} if {"max_budget", "max_params"} & set(space) else {"max_budget": 128}
    return Search(SearchSpace(list(families), **limit, **space), run)


def cli_args(tiny, out, *extra) -> list[str]:
    return ["--model", tiny["model"], "--dataset", tiny["dataset"], "--families", "circulant", "lowrank",
            "--max-budget", "128", "--steps", "6", "--eval-every", "2", "--batch-size", "16", "--max-length", "16",
            "--device", "cpu", "--out", str(out), *extra]


def env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def finished(study) -> list:
    return study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))


# -- the search space -------------------------------------------------------------------------------

def test_suggest_turns_sampled_values_into_a_finetune_config():
    layers = Layers({"attention-qv": [(384, 384)] * 12}, head_params=1925)
    space = SearchSpace(["monarch", "ldr", "circulant", "head-only"], max_budget=6144)
    pick = lambda **p: space.suggest(FixedTrial(p), layers)  # noqa: E731
    assert pick(family="monarch", **{"monarch.lr": 0.1, "monarch.budget": 3072, "monarch.nblocks": 4}) == {
        "method": "monarch", "budget": None, "hparams": {"nblocks": 4, "blk_r": 4}, "target_modules": "attention-qv", "lr": 0.1}
    # 768 per layer: MoRe's 384 blocks of rank 1 (a diagonal map) or 4 blocks of rank 1 ...
    assert pick(family="monarch", **{"monarch.lr": 0.1, "monarch.budget": 768, "monarch.nblocks": 384})["hparams"] == {"nblocks": 384, "blk_r": 1}
    # ... and 5 blocks need 770 (padding), so the largest fewer blocks that fit
    assert pick(family="monarch", **{"monarch.lr": 0.1, "monarch.budget": 768, "monarch.nblocks": 5})["hparams"] == {"nblocks": 4, "blk_r": 1}
    assert pick(family="ldr", **{"ldr.lr": 0.01, "ldr.budget": 6144, "ldr.r": 2})["hparams"] == {"block": 96, "r": 2}
    assert pick(family="circulant", **{"circulant.lr": 0.01, "circulant.budget": 1000})["budget"] == 1000
    trial = optuna.create_study().ask()
    SearchSpace(["circulant"], max_budget=6144, min_budget=1000).suggest(trial, layers)
    assert (trial.distributions["circulant.budget"].low, trial.distributions["circulant.budget"].high) == (1000, 6144)
    assert trial.distributions["circulant.budget"].log and trial.distributions["circulant.lr"].log
    # head-only is not among the sampler's families: it runs at fixed rates, marked as references
    trial = optuna.create_study().ask()
    space.suggest(trial, layers)
    assert trial.distributions["family"].choices == ("monarch", "ldr", "circulant")
    reference = FixedTrial({"head-only.lr": 0.05})
    reference.set_user_attr(REFERENCE, True)
    assert space.suggest(reference, layers) == {
        "method": "head-only", "budget": None, "hparams": None, "target_modules": None, "lr": 0.05}
    alone = optuna.create_study().ask()  # searched alone, its rate is sampled
    assert SearchSpace(["head-only"], max_budget=6144).suggest(alone, layers)["method"] == "head-only"
    assert alone.distributions["head-only.lr"].log


def test_head_only_runs_first_at_fixed_rates_one_per_four_trials():
    space = SearchSpace(["circulant", "head-only"], max_budget=64)
    lrs = lambda trials: [round(p["head-only.lr"], 4) for p, _ in space.head_only_references(trials)]  # noqa: E731
    assert lrs(40) == lrs(12) == [0.044, 0.0949, 0.2044]  # centres of thirds of 0.03 … 0.3 (log scale)
    assert lrs(8) == [0.0533, 0.1687] and lrs(2) == [0.0949]
    assert all(attrs == {REFERENCE: True} for _, attrs in space.head_only_references(40))
    assert SearchSpace(["head-only"], max_budget=64).head_only_references(40) == []
    assert SearchSpace(["circulant"], max_budget=64).head_only_references(40) == []


def test_member_rules_fit_the_budget_on_every_layer():
    from surm_core import FAMILIES
    from surm_core.families.monarch import monarch_dims

    shapes = [(384, 384), (1536, 384), (384, 1536)]
    for budget in (3072, 5000, 20000):  # LDR needs 3072 on the 384 × 1536 layer
        for nblocks in (1, 3, 4, 64):
            hp = monarch_hparams(shapes, budget, nblocks)
            counts = [FAMILIES["monarch"].count(*s, **hp) for s in shapes]
            assert max(counts) <= budget and hp["nblocks"] <= nblocks
            bigger = dict(hp, blk_r=hp["blk_r"] + 1)  # the largest blk_r that fits, up to in_blk
            in_blk = min(monarch_dims(*s, hp["nblocks"])[0] for s in shapes)
            assert max(FAMILIES["monarch"].count(*s, **bigger) for s in shapes) > budget or hp["blk_r"] == in_blk
        for r in (1, 2, 4):
            hp = ldr_hparams(shapes, budget, r)
            assert max(FAMILIES["ldr"].count(*s, **hp) for s in shapes) <= budget and hp["r"] <= r


def test_a_total_parameter_cap_lowers_the_budget_per_layer():
    layers = Layers({"attention-qv": [(384, 384)] * 12, "all-linear": [(384, 384)] * 24}, head_params=1925)
    space = SearchSpace(["lowrank"], max_params=1925 + 12 * 3072, targets=["attention-qv", "all-linear"])
    trial = {"lowrank.lr": 0.01, "lowrank.budget": 3072}
    assert space.suggest(FixedTrial({**trial, "targets": "attention-qv"}), layers)["budget"] == 3072
    assert space.suggest(FixedTrial({**trial, "targets": "all-linear"}), layers)["budget"] == 1536


def test_layers_come_from_the_engine_target_presets(tiny):
    layers = study_module.describe_model(tiny_search(tiny).run, ["attention-qv", "all-linear", "query,key"])
    assert layers.shapes["attention-qv"] == [(32, 32)] * 4  # query and value of 2 layers
    assert sorted(set(layers.shapes["all-linear"])) == [(32, 32), (32, 64), (64, 32)]
    assert len(layers.shapes["query,key"]) == 4 and layers.head_params == 4 * 32 + 4


def search_study(direction="maximize"):
    """A study as the search makes it: the metric, then the parameter count (down)."""
    return optuna.create_study(directions=[direction, "minimize"])


def done_trial(value, params, evals=None, state=TrialState.COMPLETE, **attrs):
    """A finished trial as run_trial leaves it: its evaluations in ``evals``, its size beside them."""
    values = [value, params] if state == TrialState.COMPLETE else None
    return optuna.trial.create_trial(state=state, values=values, user_attrs={
        "trainable_params": params, "evals": {str(k): v for k, v in (evals or {}).items()}, **attrs})


def test_front_pruner_compares_only_with_trials_no_larger():
    study = search_study()
    for params, acc in [(100, 0.9), (100, 0.8), (100, 0.85), (200, 0.95), (5000, 0.99), (5000, 0.99)]:
        study.add_trial(done_trial(acc, params, {2: acc}))

    def pruned(params, acc):
        return FrontPruner(min_trials=3).prune(study, done_trial(None, params, {2: acc}, state=TrialState.RUNNING))

    assert not pruned(100, 0.86)   # above the median of the three of its size
    assert pruned(100, 0.84)       # below it
    assert not pruned(50, 0.1)     # nothing smaller to compare with: a small trial is never cut for being small
    assert pruned(300, 0.87)       # median of the four no larger ones is 0.875
    assert not pruned(300, 0.88)   # the two 5000-parameter trials at 0.99 do not count against it


# -- searches on the tiny model ----------------------------------------------------------------------

def test_a_six_trial_search_completes_with_a_non_dominated_front(tiny, tmp_path, capsys):
    search = tiny_search(tiny, targets=["attention-qv", "all-linear"])
    study = run_search(search, tmp_path / "s", trials=6, on_trial=study_module.print_trial)
    assert len(finished(study)) == 6
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("trial")]
    assert len(lines) == 6 and all("done" in line for line in lines)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    points = front(study)
    assert points and set(t.number for t in points) <= {t.number for t in complete}
    size = lambda t: t.user_attrs["trainable_params"]  # noqa: E731
    for p in points:  # nothing complete is as small and more accurate
        assert not any(size(t) <= size(p) and t.values[0] > p.values[0] for t in complete)
    for t in complete:  # everything else is matched or beaten by a point of the front
        assert any(size(p) <= size(t) and p.values[0] >= t.values[0] for p in points)
        assert t.values[1] == size(t)  # the second objective: the trial's size
    assert [size(p) for p in points] == sorted(size(p) for p in points)
    methods = [t.user_attrs["config"]["method"] for t in study.trials]
    assert methods[0] == "head-only" and methods.count("head-only") == 1  # its one fixed rate, first
    assert study.trials[0].params == {"head-only.lr": pytest.approx(0.0949, abs=1e-4)}
    assert json.loads((tmp_path / "s" / "best.json").read_text()) == best(study).user_attrs["config"]
    for t in finished(study):  # every trial is an ordinary run directory
        summary = json.loads((Path(t.user_attrs["run_dir"]) / "summary.json").read_text())
        assert summary["steps_done"] == t.user_attrs["steps"] and summary["config"]["lr"] == t.user_attrs["config"]["lr"]
        if t.state == TrialState.PRUNED:
            assert t.user_attrs["steps"] < 6 and str(t.user_attrs["steps"]) in t.user_attrs["evals"]


def test_two_worker_processes_finish_one_study_without_running_a_trial_twice(tiny, tmp_path):
    # on a journal file: what workers on several machines share on a shared disk (the killed-search
    # test below covers the default, an SQLite database)
    journal = tmp_path / "shared" / "study.journal"
    journal.parent.mkdir()
    search = tiny_search(tiny, ("circulant", "lowrank"))
    # trials long enough that the second process has started before the first could finish them all
    # (6-step trials took ~1 s each: on a busy machine one worker ran all four while the other imported torch)
    search.run = dataclasses.replace(search.run, steps=300, eval_every=100)
    study = run_search(search, tmp_path / "s", trials=4, workers=2, storage=str(journal))
    assert isinstance(study._storage, optuna.storages.JournalStorage) and not (tmp_path / "s" / "study.db").exists()
    trials = finished(study)
    assert len(trials) in (4, 5)  # two workers may both start the last trial at the same moment
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both processes ran trials ...
    run_dirs = [t.user_attrs["run_dir"] for t in trials]
    assert len(set(run_dirs)) == len(trials)  # ... each in its own run directory
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == len(trials)  # never the same configuration
    assert len(list((tmp_path / "s" / "trials").iterdir())) == len(trials)


def test_a_killed_search_resumes_without_repeating_finished_trials(tiny, tmp_path, monkeypatch):
    out = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-m", "surm_core.search", *cli_args(tiny, out, "--trials", "5")],
                            env=env(), stdout=subprocess.PIPE, text=True)
    lines = []
    while len(lines) < 2:  # two trials finished
        line = proc.stdout.readline()
        assert line, f"the search ended early: {lines}"
        lines += [line] if line.startswith("trial") else []
    time.sleep(0.5)
    proc.kill()  # no chance to clean up: its running trial stays "running" in the database
    proc.wait()
    before = {t.number: (t.state, t.values) for t in finished(optuna.load_study(study_name="s", storage=f"sqlite:///{out}/study.db"))}
    assert len(before) >= 2
    mtimes = {n: (out / "trials" / f"{n:04d}" / "metrics.jsonl").stat().st_mtime for n in before}

    monkeypatch.setattr(study_module, "GRACE_S", 1)  # the dead worker's trial is stale after 1 s
    time.sleep(1.5)
    search = Search(SearchSpace(["circulant", "lowrank"], max_budget=128), FinetuneConfig(
        model=tiny["model"], dataset=tiny["dataset"], steps=6, eval_every=2, batch_size=16, max_length=16, device="cpu"))
    study = run_search(search, out, trials=5, resume=True)
    after = {t.number: (t.state, t.values) for t in finished(study)}
    assert {n: after[n] for n in before} == before  # finished trials are kept, not run again
    counted = [t for t in finished(study) if t.state != TrialState.FAIL or "failure" in t.user_attrs]
    assert len(counted) == 5
    for n, t in enumerate(study.trials):
        if n not in before and t.state == TrialState.FAIL:  # the killed one: failed by its heartbeat ...
            retry = [r for r in study.trials if r.system_attrs.get("failed_trial") == n]
            assert len(retry) == 1 and retry[0].state != TrialState.FAIL  # ... and run again
            assert t.params.items() <= retry[0].params.items()  # with what it had sampled before it died
    for t in finished(study):
        if t.state != TrialState.FAIL:
            assert (Path(t.user_attrs["run_dir"]) / "summary.json").exists()
    assert {n: (out / "trials" / f"{n:04d}" / "metrics.jsonl").stat().st_mtime for n in before} == mtimes


def test_a_trial_whose_worker_died_while_sampling_it_is_retried_and_the_search_ends_full(tiny, tmp_path, monkeypatch):
    # Killed between creating a trial and its objective's start, a worker leaves a running trial
    # with no heartbeat: Optuna never calls it stale, and the resumed search ended one trial short.
    search = tiny_search(tiny, ("circulant",))
    out = tmp_path / "s"
    study = study_module.open_study(search, study_module.open_storage(None, out), "s", resume=False)
    dead = study.ask()  # created and sampled, then the worker is gone
    monkeypatch.setattr(study_module, "GRACE_S", 1)
    time.sleep(1.5)
    study = run_search(search, out, trials=2, resume=True)
    assert study.trials[dead.number].state == TrialState.FAIL
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retry) == 1 and retry[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert study_module.counted(study) == (2, 0)


def test_ctrl_c_stops_cleanly_and_resume_reruns_the_stopped_trial(tiny, tmp_path, capsys):
    from surm_core.search.__main__ import main

    out = tmp_path / "s"

    def press_ctrl_c():  # once the first trial trains, as a user would
        while not list(out.glob("trials/0000/metrics.jsonl")):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    args = cli_args(tiny, out, "--trials", "2", "--steps", "60", "--eval-every", "30")
    assert main(args) == 0
    output = capsys.readouterr().out
    assert "trial   0" in output and "interrupted: queued to run again on --resume" in output
    assert "continue with the same command and --resume" in output
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{out}/study.db")
    stopped, retry = study.trials
    assert stopped.state == TrialState.FAIL and stopped.user_attrs["interrupted"]
    assert retry.state == TrialState.WAITING and retry.params == stopped.params

    assert main(cli_args(tiny, out, "--trials", "2", "--steps", "60", "--eval-every", "30", "--resume")) == 0
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{out}/study.db")
    assert study.trials[1].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert study.trials[1].params == stopped.params and len(finished(study)) == 3  # the stopped one and two more


def test_a_diverging_trial_fails_with_its_reason_and_the_search_goes_on(tiny, tmp_path, capsys):
    search = tiny_search(tiny, ("circulant",))
    out = tmp_path / "s"
    study = study_module.open_study(search, study_module.open_storage(None, out), "s", resume=False)
    study.enqueue_trial({"circulant.lr": 1e30, "circulant.budget": 64})
    study = run_search(search, out, trials=2, resume=True, on_trial=study_module.print_trial)
    first, second = study.trials
    assert first.state == TrialState.FAIL
    assert first.user_attrs["failure"].startswith(("non-finite loss at step", "diverged at step"))
    assert second.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert f"failed: {first.user_attrs['failure']}" in capsys.readouterr().out


def test_a_pruned_trial_stops_early_and_its_saved_steps_are_counted(tiny, tmp_path, capsys):
    search = tiny_search(tiny, ("circulant",))
    out = tmp_path / "s"
    study = study_module.open_study(search, study_module.open_storage(None, out), "s", resume=False)
    for _ in range(4):  # four finished trials, smaller and perfect at every evaluation: a new one is below their median
        study.add_trial(done_trial(1.0, 1, {2: 1.0, 4: 1.0}, steps=6, config={"method": "fake"}))
    study = run_search(search, out, trials=5, resume=True, on_trial=study_module.print_trial)
    trial = study.trials[4]
    assert trial.state == TrialState.PRUNED and trial.user_attrs["steps"] == 2 and list(trial.user_attrs["evals"]) == ["2"]
    assert study_module.steps_saved(study) == (4 * 6 + 2, 4)  # 6 steps per trial, pruned after 2
    assert "pruned at step 2" in capsys.readouterr().out.splitlines()[-1]
    assert json.loads((Path(trial.user_attrs["run_dir"]) / "summary.json").read_text())["steps_done"] == 2


def test_best_is_the_most_accurate_trial_under_the_parameter_cap():
    study = search_study()
    for params, acc in [(100, 0.80), (300, 0.90), (300, 0.85), (1000, 0.95), (2000, 0.93)]:
        study.add_trial(done_trial(acc, params))
    pick = lambda cap: (best(study, cap).user_attrs["trainable_params"], best(study, cap).values[0])  # noqa: E731
    assert [(t.user_attrs["trainable_params"], t.values[0]) for t in front(study)] == [(100, 0.80), (300, 0.90), (1000, 0.95)]
    assert pick(None) == pick(5000) == (1000, 0.95)
    assert pick(999) == (300, 0.90) and pick(100) == (100, 0.80)
    assert best(study, 99) is None


def test_the_exported_json_trains_through_the_finetune_cli(tiny, tmp_path, capsys):
    from surm_core.finetune.__main__ import main as finetune
    from surm_core.search.__main__ import export_main

    out = tmp_path / "s"
    study = run_search(tiny_search(tiny, ("lowrank",)), out, trials=1)
    assert export_main(["--out", str(out), "--trial", "0"]) == 0
    assert json.loads((out / "trial-0.json").read_text()) == json.loads((out / "best.json").read_text())
    assert finetune(["--config", str(out / "best.json"), "--steps", "3", "--out", str(tmp_path / "longer")]) == 0
    summary = json.loads((tmp_path / "longer" / "summary.json").read_text())
    config = best(study).user_attrs["config"]
    assert summary["steps_done"] == 3
    assert {k: summary["config"][k] for k in ("method", "budget", "hparams", "lr", "model")} == {
        k: config[k] for k in ("method", "budget", "hparams", "lr", "model")}


# -- bad input: a clear message before any trial ----------------------------------------------------

def no_trial_ran(out: Path) -> bool:
    return not (out / "trials").exists()


@pytest.mark.parametrize("families,space,message", [
    ([], {"max_budget": 128}, "give at least one family to search"),
    (["circulant", "monarch"], {"max_budget": 8}, "below every family's smallest on this model (circulant 32, monarch 64)"),
    (["circulant", "monarch"], {"max_budget": 40}, "monarch's smallest member needs 64 parameters per layer"),
    (["circulant"], {"max_params": 10}, "below the 132 head parameters"),
    (["circulnt"], {"max_budget": 128}, "unknown family 'circulnt'"),
    (["circulant"], {"max_budget": 64, "min_budget": 100}, "the minimum budget of 100 per layer is above"),
])
def test_bad_spaces_are_refused_before_any_trial(tiny, tmp_path, families, space, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_search(tiny_search(tiny, families, **space), tmp_path / "s", trials=3)
    assert no_trial_ran(tmp_path / "s")


def test_zero_trials_and_unreachable_storage_are_refused(tiny, tmp_path):
    with pytest.raises(ValueError, match="the number of trials must be a positive integer, got 0"):
        run_search(tiny_search(tiny), tmp_path / "s", trials=0)
    for url, reason in [("sqlite:////nonexistent-dir/study.db", "OperationalError"),
                        ("postgresql://search@127.0.0.1:1/studies", "")]:
        with pytest.raises(ValueError, match=f"cannot open the storage '{url}': {reason}"):
            run_search(tiny_search(tiny), tmp_path / "s", trials=3, storage=url)
    assert no_trial_ran(tmp_path / "s")


def test_a_study_with_a_different_search_is_refused(tiny, tmp_path):
    out = tmp_path / "s"
    study_module.open_study(tiny_search(tiny, ("circulant",)), study_module.open_storage(None, out), "s", resume=False)
    with pytest.raises(ValueError, match=r"exists with a different search \(space.families: \['circulant'\] there, \['lowrank'\] here\)"):
        run_search(tiny_search(tiny, ("lowrank",)), out, trials=3, resume=True)
    with pytest.raises(ValueError, match="exists already in this storage: --resume continues it"):
        run_search(tiny_search(tiny, ("circulant",)), out, trials=3)
    with pytest.raises(ValueError, match="there is no study 'other' to resume"):
        run_search(tiny_search(tiny, ("circulant",)), out, trials=3, name="other", resume=True)
    optuna.create_study(storage=f"sqlite:///{out}/study.db", study_name="old", direction="maximize")
    with pytest.raises(ValueError, match="study 'old' was made by an earlier version with one objective"):
        run_search(tiny_search(tiny, ("circulant",)), out, trials=3, name="old", resume=True)
    assert no_trial_ran(out)


def test_cli_bad_input_is_one_clear_line(tiny, tmp_path, capsys):
    from surm_core.search.__main__ import main

    for extra, message in [(["--families"], "error: give at least one family to search"),
                           (["--trials", "0"], "error: the number of trials must be a positive integer, got 0")]:
        assert main(cli_args(tiny, tmp_path / "s", *extra)) == 2
        assert capsys.readouterr().err.startswith(message)
    assert no_trial_ran(tmp_path / "s")


# -- the app's Search tab, without a browser ---------------------------------------------------------

def test_the_search_tab_waits_for_the_device_runs_apart_and_fills_the_finetune_tab(tiny, tmp_path):
    from surm_core import session

    search = session.search_settings(tiny["model"], tiny["dataset"], ["circulant", "lowrank", "monarch"], None, 128,
                                     trials=3, steps=6, batch_size=16, max_length=16)
    line = session.DeviceLine()
    line.join("a fine-tune")  # holds the device
    job = session.SearchJob(session.search_dir(tmp_path, None, "s"), search, 3, line=line).start()
    time.sleep(0.5)
    assert job.status() == "Queued: 1 job ahead on the device (one at a time)." and job.process is None
    line.leave("a fine-tune")
    assert job.wait(600) and job.error is None, job.status()
    assert job.status().startswith("Done: 3 of 3 trials done")
    trials = job.trials()
    rows = session.trial_rows(trials)
    assert [r[0] for r in rows] == [2, 1, 0] and {r[1] for r in rows} <= {"complete", "pruned"}
    assert len(visualize.search_front(trials).data) >= 2  # the trials and the front
    for t in trials:
        fields, note = session.finetune_fields(job.study(), t["number"])
        config = job.study().trials[t["number"]].user_attrs["config"]
        assert fields["method"] == config["method"] and fields["lr"] == config["lr"] and fields["steps"] == 6
        assert fields["dataset"] == config["dataset"] and fields["dataset"].startswith(str(job.out))  # the search's copy
        if config["method"] == "lowrank":
            assert fields["rank"] >= 1 and fields["alpha"] == fields["rank"]
        elif config["method"] == "monarch":
            assert "sizes monarch by its budget per layer" in note
        else:
            assert fields["budget"] == config["budget"]
    with pytest.raises(ValueError, match="this search has no started trial 7"):
        session.finetune_fields(job.study(), 7)
    # a best.json (of this search or of a command-line one) fills the tab the same way
    best_json = job.out / "best.json"
    fields, note = session.config_file_fields(best_json)
    top = json.loads(best_json.read_text())
    assert fields == session.finetune_fields(job.study(), next(t["number"] for t in trials if t["lr"] == top["lr"]))[0]
    assert note.startswith(f"Filled from best.json ({top['method']}, lr=")
    (tmp_path / "bad.json").write_text('{"method": "circulant", "budget": 64, "lr": 0.01, "stepz": 3}')
    with pytest.raises(ValueError, match="stepz"):
        session.config_file_fields(tmp_path / "bad.json")


def test_the_trials_table_says_how_each_trial_ended():
    from surm_core import session

    study = search_study()
    config = {"method": "monarch", "budget": None, "hparams": {"nblocks": 4, "blk_r": 2}, "lr": 0.0123,
              "target_modules": "attention-qv", "steps": 6}
    for state, value, steps, attrs in [(TrialState.COMPLETE, 0.9, {2: 0.5, 4: 0.8}, {"steps": 6}),
                                       (TrialState.PRUNED, None, {2: 0.3}, {"steps": 2}),
                                       (TrialState.FAIL, None, {}, {"steps": 3, "failure": "non-finite loss at step 3"}),
                                       (TrialState.FAIL, None, {2: 0.6}, {"steps": 3, "interrupted": True}),
                                       (TrialState.RUNNING, None, {2: 0.7}, {})]:
        study.add_trial(done_trial(value, 500, steps, state=state, config=config, **attrs))
    assert session.trial_rows(session.trial_dicts(study)) == [
        [4, "running", "monarch", "nblocks=4 blk_r=2", "0.0123", 500, 0.7, ""],
        [3, "stopped", "monarch", "nblocks=4 blk_r=2", "0.0123", 500, 0.6, "stopped; run again on resume"],
        [2, "failed", "monarch", "nblocks=4 blk_r=2", "0.0123", 500, "", "non-finite loss at step 3"],
        [1, "pruned", "monarch", "nblocks=4 blk_r=2", "0.0123", 500, 0.3, "at step 2 of 6"],
        [0, "complete", "monarch", "nblocks=4 blk_r=2", "0.0123", 500, 0.9, ""]]


def test_the_front_figure_fades_pruned_and_running_trials():
    trials = [{"number": n, "state": state, "method": method, "label": "", "trainable_params": params, "value": acc}
              for n, (state, method, params, acc) in enumerate([
                  ("complete", "lowrank", 100, 0.7), ("pruned", "lowrank", 50, 0.4), ("complete", "monarch", 200, 0.9),
                  ("running", "monarch", 80, 0.5), ("complete", "monarch", 300, 0.8), ("failed", "monarch", 90, None)])]
    fig = visualize.search_front(trials)
    lowrank, monarch, line = fig.data
    assert list(lowrank.x) == [100, 50] and list(lowrank.marker.opacity) == [1.0, 0.25]
    assert list(monarch.x) == [200, 80, 300] and list(monarch.marker.opacity) == [1.0, 0.45, 1.0]  # the failed one is not drawn
    assert line.name == "Pareto front" and list(line.x) == [100, 200] and list(line.y) == [0.7, 0.9]


def test_the_tab_reads_a_search_database_only_once_its_process_wrote_it(tiny, tmp_path):
    from surm_core import session

    search, out = tiny_search(tiny), tmp_path / "s"
    out.mkdir()
    job = session.SearchJob(out, search, 3)  # not started: its process is played here
    (out / "study.db").touch()  # the process has opened its database, not yet written its tables
    assert job.study() is None and job.trials() == []
    assert (out / "study.db").stat().st_size == 0  # the page wrote nothing (it would race the process)
    study_module.open_study(search, study_module.open_storage(None, out), "s", resume=False)
    assert job.study() is not None and job.trials() == []


@pytest.mark.parametrize("change,message", [
    ({"families": []}, "give at least one family to search"),
    ({"trials": 0}, "trials must be a whole number ≥ 1, got 0"),
    ({"max_budget": 8}, "below every family's smallest on this model"),
    ({"steps": 10**6}, "is more than this server allows"),
    ({"model": "/nonexistent/model"}, "could not load a model from '/nonexistent/model'"),
    ({"model": "x" * 100_000}, "the model name is 100,000 characters long"),  # was an OSError (name too long)
    ({"model": 5}, "a model name must be a string"),  # was an AttributeError
])
def test_search_tab_settings_are_checked_with_clear_messages(tiny, change, message):
    from surm_core import session

    settings = {"model": tiny["model"], "dataset": tiny["dataset"], "families": ["circulant"], "min_budget": None,
                "max_budget": 128, "trials": 3, "steps": 6, **change}
    with pytest.raises(ValueError, match=re.escape(message)):
        session.search_settings(**settings)
