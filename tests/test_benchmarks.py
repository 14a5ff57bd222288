"""The benchmark scripts run (smoke mode) and their conclusions follow from their numbers."""
import json
import os
from types import SimpleNamespace

import pytest

from benchmarks import bench_explore, pareto
from surm_core import from_budget, make


def test_results_markdown_names_matches_and_factors():
    rows = [
        {"method": "lowrank", "label": "r=8", "trainable_params": 80000, "accs": [0.9, 0.92], "mean": 0.91, "std": 0.01},
        {"method": "circulant", "label": "budget=384", "trainable_params": 8000, "accs": [0.905], "mean": 0.905, "std": 0.0},
        {"method": "monarch", "label": "budget=384", "trainable_params": 9000, "accs": [0.8], "mean": 0.8, "std": 0.0},
        {"method": "full", "label": "", "trainable_params": 2e7, "accs": [0.95], "mean": 0.95, "std": 0.0},
        {"method": "head-only", "label": "", "trainable_params": 1925, "accs": [0.7], "mean": 0.7, "std": 0.0},
    ]
    args = SimpleNamespace(steps=10, batch_size=4, max_length=16, eval_size=None, seeds=2, device="cpu",
                           argv=["--steps", "10"])
    md = pareto.results_markdown(rows, {"lowrank": (3e-3, [1e-3, 3e-3, 1e-2])}, args)
    assert "Made by `python -m benchmarks.pareto --steps 10`." in md
    assert "| lowrank | 0.001, 0.003, 0.01 | 0.003 |" in md
    assert "include the classifier head (1,925)" in md
    assert "**circulant** matches at budget=384: 8,000 parameters, 10.0× fewer" in md
    assert "- monarch: no configuration with fewer parameters reaches it." in md
    assert "- full: no configuration with fewer parameters reaches it." in md  # more params than LoRA


@pytest.mark.skipif(not os.path.exists("/usr/bin/chromium") and not os.environ.get("CI"),
                    reason="the Pareto PNG is rendered by Debian's chromium (installed by .ci/run)")
def test_pareto_quick_mode_writes_results(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pareto.main(["--quick", "--out", str(tmp_path)])
    runs = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert {r["method"] for r in runs} == {"lowrank", "circulant"}
    assert all(0 <= r["acc"] <= 1 for r in runs)
    md = (tmp_path / "RESULTS.md").read_text()
    assert "| lowrank | r=8 | 75,653 |" in md and "| circulant | budget=384 | 6,533 |" in md
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_spread_keeps_the_ends_first():
    configs = list("abcdef")
    assert pareto.spread(configs, None) == configs and pareto.spread(configs, 9) == configs
    assert pareto.spread(configs, 2) == ["a", "f"] and pareto.spread(configs, 3) == ["a", "c", "f"]
    assert pareto.spread(configs, 1) == ["a"]


def test_budgets_per_family_below_one_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        pareto.main(["--budgets-per-family", "0", "--out", "unused"])
    assert "--budgets-per-family must be at least 1, got 0" in capsys.readouterr().err


def test_bench_explore_prints_one_row_per_family_and_size(capsys):
    bench_explore.main(["--sizes", "64", "200", "--reps", "1", "--families", "circulant", "ldr"])
    load, header, *lines = capsys.readouterr().out.splitlines()
    assert load.startswith("load: one dense 1024 × 1024 svdvals took")
    rows = [line.split() for line in lines]
    assert [(r[0], r[1]) for r in rows] == [("64", "circulant"), ("64", "ldr"), ("200", "circulant"), ("200", "ldr")]
    for r in rows:
        answer, drawn, estimates, exact, serialized, estimated = map(float, r[3:])
        assert 0 < answer <= drawn <= exact and serialized > 0 and estimated > 0  # 64 × 64: about 0.001 s
    estimates = [int(r[5]) for r in rows]  # an LDR map of 200 × 200 is first estimated, a circulant never
    assert estimates[:3] == [0, 0, 0] and estimates[3] > 0


def test_every_configuration_of_the_full_study_fits_minilm():
    # MiniLM's query/value are 384 × 384: a budget below a family's smallest would stop the study
    for method, configs in pareto.FULL_GRID.items():
        for label, budget, hparams in configs:
            if method in pareto.STRUCTURED:
                assert from_budget(method, 384, 384, budget).num_params <= budget, (method, label)
            elif method == "lowrank":
                assert make("lowrank", 384, 384, **hparams).num_params == 768 * hparams["r"]


def fake_run(calls, accuracy):
    """The engine's ``run`` replaced by a summary whose accuracy is ``accuracy(config)``."""
    def run(config, on_event=None, should_stop=None):
        calls.append((config.method, config.lr, config.seed))
        return {"trainable_params": 10, "final_eval_acc": accuracy(config), "steps_done": config.steps,
                "stopped_reason": "completed"}
    return run


def test_a_resumed_study_runs_only_what_is_missing(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("surm_core.search.study.run", fake_run(calls, lambda c: 0.5 + c.lr))
    args = SimpleNamespace(steps=1, batch_size=1, max_length=8, eval_size=None, device="cpu")
    runs = pareto.Runs(tmp_path, args, resume=False)
    runs.grid("circulant", ["budget=384"], [0.01], [0])
    runs.grid("circulant", ["budget=384"], [0.01], [0])  # the same run: not again
    assert calls == [("circulant", 0.01, 0)]
    runs.log.close()
    with pytest.raises(ValueError, match="holds a study already: --resume continues it"):
        pareto.Runs(tmp_path, args, resume=False)
    resumed = pareto.Runs(tmp_path, args, resume=True)
    assert resumed.grid("circulant", ["budget=384"], [0.01], [0])[("budget=384", 0.01, 0)]["acc"] == 0.51
    resumed.grid("circulant", ["budget=384"], [0.01], [0, 1])  # seed 0 is in the study already
    assert calls == [("circulant", 0.01, 0), ("circulant", 0.01, 1)]
    resumed.log.close()
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("peak,tried,best", [
    (0.003, [0.001, 0.003, 0.01, 0.03], 0.003),  # inside the grid: the grid alone
    (0.04, [0.001, 0.003, 0.01, 0.03, 0.09], 0.03),  # best at the top: one step up (×3), then inside
    (1.0, [0.001, 0.003, 0.01, 0.03, 0.09, 0.3], 0.3),  # still at the top: at most two steps
    (8e-4, [0.0003, 0.001, 0.003, 0.01, 0.03], 0.001),  # ... and downward (÷3.3)
])
def test_learning_rate_search_follows_an_optimum_on_the_grid_edge(peak, tried, best, tmp_path, monkeypatch):
    import math

    calls = []
    monkeypatch.setattr("surm_core.search.study.run", fake_run(calls, lambda c: -abs(math.log(c.lr / peak))))
    args = SimpleNamespace(steps=1, batch_size=1, max_length=8, eval_size=None, device="cpu", quick=False)
    runs = pareto.Runs(tmp_path, args, resume=False)
    assert pareto.tune_lr("circulant", "budget=384", 384, None, args, runs) == (best, tried)
    assert sorted(lr for _, lr, _ in calls) == tried  # each rate ran once
    runs.log.close()


def test_bench_apply_prints_every_family_against_dense_and_lora(capsys):
    from benchmarks import bench_apply

    bench_apply.main(["--dims", "24", "--tokens", "8", "--reps", "1"])
    out = capsys.readouterr().out
    assert "CPU, " in out.splitlines()[0] and "float32" in out.splitlines()[0]
    rows = {r.split()[2]: r.split() for r in out.splitlines()[3:]}
    assert list(rows) == list(bench_apply.CONFIGS)
    assert rows["dense"][5] == rows["dense"][8] == "1.00"  # each ratio is to the same run's dense ...
    assert rows["lora-r8"][6] == rows["lora-r8"][9] == "1.00"  # ... and LoRA
    assert int(rows["circulant"][3]) == 24 and int(rows["lora-r8"][3]) == 2 * 8 * 24


def test_bench_apply_without_cuda_is_a_clear_error(capsys, monkeypatch):
    from benchmarks import bench_apply

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(SystemExit):
        bench_apply.main(["--device", "cuda"])
    assert "CUDA is not available" in capsys.readouterr().err


def test_bench_finetune_times_a_training_step_per_family(capsys, monkeypatch):
    from benchmarks import bench_finetune

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bench_finetune.main(["--reps", "1", "--batch-size", "2", "--max-length", "16", "--families", "ldr-r2"])
    lines = capsys.readouterr().out.splitlines()
    assert "batch 2 × 16 tokens" in lines[0]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert list(rows) == ["lora-r8", "ldr-r2"] and rows["lora-r8"][3] == "1.000"
    assert int(rows["lora-r8"][1]) == 75653  # 12 × 2 adapters of 2·8·384, and the 1,925 head


def test_search_vs_grid_counts_the_trial_steps_until_each_level_of_the_grid_front_is_found():
    from optuna.trial import TrialState

    from benchmarks import search_vs_grid

    runs = [{"method": m, "label": label, "lr": 0.01, "seed": seed, "trainable_params": p, "acc": acc + 0.01 * seed}
            for m, label, p, acc in [("head-only", "", 100, 0.80), ("circulant", "budget=8", 200, 0.90),
                                     ("lowrank", "r=1", 300, 0.85), ("monarch", "budget=16", 400, 0.95)]
            for seed in (0, 1)]  # means 0.805, 0.905, 0.855, 0.955; 8 runs of 10 steps
    assert [p for p, _ in search_vs_grid.levels(search_vs_grid.grid_rows(runs))] == [100, 200, 400]  # 300 adds nothing
    assert [round(r["mean"], 4) for r in search_vs_grid.grid_rows(runs, seed=1)] == [0.81, 0.91, 0.86, 0.96]

    def trial(number, state, params, acc, steps):
        config = {"method": "circulant", "budget": 8, "hparams": None, "lr": 0.02}
        return SimpleNamespace(number=number, state=state, values=[acc, params], user_attrs={
            "trainable_params": params, "steps": steps, "config": config})

    trials = [trial(0, TrialState.COMPLETE, 200, 0.902, 10), trial(1, TrialState.PRUNED, 150, 0.5, 4),
              trial(2, TrialState.COMPLETE, 100, 0.801, 10), trial(3, TrialState.COMPLETE, 400, 0.94, 10)]
    lines = search_vs_grid.report(trials, runs, grid_steps=10, tolerance=0.005)
    assert lines[0] == "grid: 8 runs × 10 steps = 80 trial-steps; search: 4 trials (1 pruned), 34 trial-steps = 0.42 of the grid's"
    assert lines[4:7] == [
        "| 100 | head-only (lr 0.01) 0.8050 | trial 2: circulant budget=8 lr=0.02, 100 params | 0.8010 | 24 | 0.30 |",
        "| 200 | circulant budget=8 (lr 0.01) 0.9050 | trial 0: circulant budget=8 lr=0.02, 200 params | 0.9020 | 10 | 0.12 |",
        "| 400 | monarch budget=16 (lr 0.01) 0.9550 | not found | | | |"]
    assert lines[-1] == "2 of the grid's 3 front levels found in 34 trial-steps (0.42 of the grid's 80)"
    on_seed_0 = search_vs_grid.report(trials, runs, grid_steps=10, tolerance=0.005, seed=0)
    assert "grid's best (seed 0)" in on_seed_0[2] and on_seed_0[6].startswith("| 400 | monarch budget=16 (lr 0.01) 0.9500 |")
    trials.append(trial(4, TrialState.COMPLETE, 350, 0.951, 10))
    assert search_vs_grid.report(trials, runs, 10, 0.005)[-1] == (
        "every level of the grid's front found after 44 trial-steps: 0.55 of the grid's 80")


def test_bad_inputs_tells_a_clear_refusal_from_a_crash_a_vague_message_and_an_acceptance(tmp_path, capsys):
    from benchmarks.bad_inputs import cli, judged, print_table
    from surm_core.finetune import check_seed

    rows = [judged("library", "seed -1", lambda: check_seed(-1), "seed"),
            judged("CLI", "--seed -1", lambda: cli(["--seed", "-1", "--out", str(tmp_path)]), "seed"),
            judged("library", "a crash", lambda: {}["budget"], "budget"),
            judged("library", "a vague message", lambda: check_seed(-1), "budget"),
            judged("library", "accepted", lambda: 1, "budget")]
    assert [(r["outcome"], r["clear"]) for r in rows] == [
        ("refused", True), ("refused", True), ("crashed", False), ("refused", False), ("accepted", False)]
    print_table(rows)
    assert "5 bad inputs tried: 2 clear, 3 unclear (library 1/4, CLI 1/1)" in capsys.readouterr().out
