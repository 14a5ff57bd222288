"""The Search tab: a structure search in its own process (the command line's
``python -m surm_core.search``), waiting for the device in the same line as fine-tunes, its trials
read live from the study's database; and a trial's settings for the Fine-tune tab.

>>> search = search_settings("", None, ["circulant", "lowrank"], None, 3072, trials=12, steps=60)
>>> job = SearchJob(search_dir(runs_dir, None, "s1"), search, 12).start()    # doctest: +SKIP
>>> rows = trial_rows(job.trials())                                         # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import sqlite3
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..finetune import FinetuneConfig, load_config, preview
from ..search import Search, SearchSpace
from ..search.study import (check_families, counted, describe, describe_model, goodness, last_eval, metric_value,
                            objective_name, size_label, steps_saved)
from .device import DEVICE, DeviceLine
from .finetune import BUILT_IN, Limits, check_dataset, check_steps, check_task, dataset_choice, model_error, model_field
from .processes import Jobs, ProcessJob
from .runs import SHARED, new_run_dir

log = logging.getLogger(__name__)

TRIAL_COLUMNS = ["#", "state", "method", "size", "lr", "params", "accuracy", "note"]
#: The trials table of a causal-LM search: its objective is the eval loss.
LOSS_TRIAL_COLUMNS = [*TRIAL_COLUMNS[:6], "eval loss", *TRIAL_COLUMNS[7:]]
STATES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.RUNNING: "running",
          TrialState.FAIL: "failed", TrialState.WAITING: "waiting"}
#: Most trials one search started from the app may run.
MAX_TRIALS = 500
LOG_FILE = "search.log"


def search_settings(model, dataset, families, min_budget, max_budget, trials=12, steps=60, batch_size=16,
                    max_length=64, seed=0, limits: Limits = Limits(), task: str = "text-classification",
                    built_in: str | None = None) -> Search:
    """The search the page's fields describe, each checked with a message that names it; the
    model and the space are checked too (every family must fit the budget range on the model).
    An empty or zero ``min_budget`` starts each family at its smallest member. ``task`` and
    ``built_in`` as for :func:`surm_core.session.finetune_config`: the objective is the task's
    (accuracy, or a causal LM's eval loss)."""
    trials = whole("trials", trials)
    if trials > MAX_TRIALS:
        raise ValueError(f"trials = {trials} is more than a search here may run ({MAX_TRIALS})")
    steps = check_steps(whole("steps per trial", steps), limits)
    space = SearchSpace(list(families or []), max_budget=whole("max budget", max_budget),
                        min_budget=None if min_budget in (None, "", 0) else whole("min budget", min_budget))
    task = check_task(task)
    check_families(task, space.families)
    run = FinetuneConfig(model=model_field(model, task), task=task, dataset=dataset_choice(task, dataset, built_in), steps=steps,
                         eval_every=max(1, steps // 3),
                         batch_size=whole("batch size", batch_size), max_length=whole("max length", max_length),
                         seed=whole("seed", seed, 0))
    check_dataset(run, limits)
    try:
        layers = describe_model(run, space.targets)
    except ValueError as e:
        raise ValueError(model_error(str(e), run.model)) from None
    space.check(layers)
    return Search(space, run)


def whole(name: str, value, low: int = 1) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be a whole number ≥ {low}, got {value!r}")
    return value


def search_dir(runs_dir, workspace: Path | None, name: str) -> Path:
    """Where a search of the workspace ``workspace`` (``None``: the shared one) lives: beside the
    runs, in ``<runs_dir>/searches/<workspace>/<name>``, a new directory each time."""
    return new_run_dir(Path(runs_dir) / "searches" / (workspace.name if workspace is not None else SHARED), name)


def cli_args(search: Search, trials: int) -> list[str]:
    """``python -m surm_core.search`` arguments for ``search`` in the current directory."""
    run, space = search.run, search.space
    args = ["--out", ".", "--families", *space.families, "--max-budget", str(space.max_budget), "--trials", str(trials),
            "--steps", str(run.steps), "--eval-every", str(run.eval_every), "--batch-size", str(run.batch_size),
            "--max-length", str(run.max_length), "--eval-size", "all" if run.eval_size is None else str(run.eval_size),
            "--model", run.model, "--dataset", run.dataset, "--seed", str(run.seed)]
    args += ["--task", run.task] if run.task else []
    return args + (["--min-budget", str(space.min_budget)] if space.min_budget is not None else [])


class SearchJob(ProcessJob):
    """One search's process: it waits for the device in ``line``, then runs its trials in
    ``out``. Poll ``status()`` and ``trials()``; Stop is the command line's Ctrl-C (the running
    trial ends after its current step)."""

    what = "search"
    log_file = LOG_FILE

    def __init__(self, out: Path, search: Search, trials: int, line: DeviceLine = DEVICE):
        super().__init__(out, line)
        self.search, self.n_trials = search, trials
        self._storage = None
        if search.run.dataset not in BUILT_IN:  # the search keeps its own copy of an upload
            (self.out / "data").mkdir(exist_ok=True)
            shutil.copyfile(search.run.dataset, self.out / "data" / Path(search.run.dataset).name)
            search.run = dataclasses.replace(search.run, dataset=str((self.out / "data" / Path(search.run.dataset).name).resolve()))

    @property
    def out(self) -> Path:
        return self.cwd

    def command(self) -> list[str]:
        return [sys.executable, "-m", "surm_core.search", *cli_args(self.search, self.n_trials)]

    def _finish(self) -> None:
        if self.process is None or self.process.returncode == 0:
            return
        lines = self.log_lines()
        reported = [x[len("error: "):] for x in lines if x.startswith("error: ")]
        self.error = reported[-1] if reported else f"the search process failed (exit code {self.process.returncode})"
        log.error("search %s failed:\n%s", self.out, "\n".join(lines[-20:]))

    def study(self):
        """The search's Optuna study, once its process has created it (else None)."""
        if self._storage is None:
            if not schema_written(self.out / "study.db"):
                return None
            # wait out the search process's writes as its own connections do (study.open_storage)
            self._storage = optuna.storages.RDBStorage(f"sqlite:///{self.out / 'study.db'}", skip_table_creation=True,
                                                       engine_kwargs={"connect_args": {"timeout": 60}})
        try:
            return optuna.load_study(study_name=self.out.resolve().name, storage=self._storage)
        except KeyError:  # the database exists, the study not yet
            return None

    def trials(self) -> list[dict]:
        study = self.study()
        return trial_dicts(study) if study is not None else []

    def status(self) -> str:
        """One line for people: where the search is."""
        if self.error is not None:
            return f"Failed: {self.error}"
        position = self.line.position(self)
        if self.process is None and position:
            return f"Queued: {position} job{'s' if position > 1 else ''} ahead on the device (one at a time)."
        study = self.study()
        if study is None:
            return "Loading the model and the data…" if not self.done() else "Stopped before the first trial."
        done, running = counted(study)
        run_steps, saved = steps_saved(study)
        pruned = len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))
        text = f"{done} of {self.n_trials} trials done ({pruned} pruned), {run_steps:,} steps run, {saved:,} saved by pruning"
        if self.done():
            return f"Done: {text}." if done >= self.n_trials else f"Stopped: {text}."
        if self.stopping:
            return f"{text} · stopping after the current step…"
        return f"{text} · " + ("a trial is running" if running else "finishing" if done >= self.n_trials else "starting a trial")


def schema_written(db: Path) -> bool:
    """Whether the search process has written the tables of its database ``db`` (the version row
    comes last): opening an Optuna storage on it before would write them too, racing the process
    (an IntegrityError on ``alembic_version`` when the machine is busy)."""
    if not db.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as connection:
            return connection.execute("SELECT count(*) FROM alembic_version").fetchone()[0] > 0
    except sqlite3.Error:  # no such table yet, or locked for longer than the timeout
        return False


def trial_dicts(study) -> list[dict]:
    """Every trial of ``study`` as the page shows it (and :func:`visualize.search_front` draws it);
    ``value`` is the objective: the accuracy, or a causal LM's eval loss (see :func:`objective`)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        state = STATES.get(t.state, t.state.name.lower())
        if state == "failed" and t.user_attrs.get("interrupted"):
            state = "stopped"
        config = t.user_attrs.get("config") or {}
        note = {"pruned": f"at step {t.user_attrs.get('steps')} of {config.get('steps')}",
                "failed": t.user_attrs.get("failure", ""), "stopped": "stopped; run again on resume"}.get(state, "")
        rows.append({"number": t.number, "state": state, "method": config.get("method", ""), "size": size_label(config),
                     "lr": config.get("lr"), "label": describe(t), "trainable_params": t.user_attrs.get("trainable_params"),
                     "value": metric_value(t) if state == "complete" else last_eval(t), "note": note})
    return rows


def trial_rows(trials: list[dict]) -> list[list]:
    """The live table: one row of :data:`TRIAL_COLUMNS` per trial, the newest first."""
    return [[t["number"], t["state"], t["method"], t["size"], "" if t["lr"] is None else f"{t['lr']:.3g}",
             t["trainable_params"] or "", "" if t["value"] is None else round(t["value"], 4), t["note"]]
            for t in reversed(trials)]


def objective(study) -> str:
    """``"accuracy"`` or ``"eval loss"``: what the study's trial values are (None: no study yet)."""
    return "accuracy" if study is None else objective_name(study)


def trial_columns(study) -> list[str]:
    return LOSS_TRIAL_COLUMNS if objective(study) == "eval loss" else TRIAL_COLUMNS


def finetune_fields(study, number: int) -> tuple[dict, str]:
    """The Fine-tune tab's field values that train trial ``number`` again, and a note (see
    :func:`config_fields`)."""
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number and "config" in t.user_attrs), None)
    if trial is None:
        raise ValueError(f"this search has no started trial {number}")
    return config_fields(trial.user_attrs["config"], f"trial {number} ({describe(trial)})")


def config_file_fields(path) -> tuple[dict, str]:
    """The Fine-tune tab's field values for a configuration file (a search's ``best.json``, an
    exported trial, a run's ``config.json``), checked as ``--config`` checks it, and a note."""
    config = load_config(path)
    return config_fields(config.to_dict(), f"{Path(path).name} ({config.method}, lr={config.lr:.3g})")


def config_fields(c: dict, source: str) -> tuple[dict, str]:
    """The Fine-tune tab's field values for the config fields ``c``, and a note naming ``source``.
    LoRA goes by rank and alpha, the other families by the budget per layer; a Monarch or LDR
    configuration whose ``nblocks``/``r`` the tab cannot set gets the budget its hyperparameters
    use, which the tab fits with ``from_budget`` (the note says so; the JSON file and the command
    line keep them)."""
    upload = c["dataset"] not in BUILT_IN
    fields = {"model": c["model"], "task": c.get("task") or "text-classification",
              "dataset": c["dataset"] if upload else None, "built_in": None if upload else c["dataset"],
              "method": c["method"],
              "steps": c["steps"], "batch_size": c["batch_size"], "lr": c["lr"], "warmup": c["warmup_ratio"],
              "max_length": c["max_length"], "seed": c["seed"], "eval_every": c["eval_every"], "eval_size": "all" if c["eval_size"] is None else str(c["eval_size"])}
    note = f"Filled from {source}."
    targets = c.get("target_modules")
    fields["targets"], fields["custom_targets"] = (targets or "attention-qv", "") if not isinstance(targets, list) else ("custom", ", ".join(targets))
    if c["method"] == "lowrank":
        hp = preview(FinetuneConfig.from_dict(c))["layers"][0]["hparams"]
        fields.update(rank=hp["r"], alpha=hp["alpha"])
    elif c["budget"] is not None:
        fields["budget"] = c["budget"]
    elif c["hparams"] is not None:
        layers = preview(FinetuneConfig.from_dict(c))["layers"]
        fields["budget"] = max(layer["params"] for layer in layers)
        note += (f" The Fine-tune tab sizes {c['method']} by its budget per layer ({fields['budget']:,}), which may pick "
                 f"other {', '.join(c['hparams'])} than {json.dumps(c['hparams'])}; "
                 "python -m surm_core.finetune --config with the exported JSON keeps them.")
    return fields, note


def front_line(study) -> str:
    """The best trial so far, for the page."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return ""
    top = max(complete, key=lambda t: (goodness(study, metric_value(t)), -t.user_attrs["trainable_params"]))
    return (f"Best so far: trial {top.number}, {describe(top)}, {objective_name(study)} {metric_value(top):.4f} with "
            f"{top.user_attrs['trainable_params']:,} trainable parameters.")


class Searches(Jobs):
    """The searches this server started, at most one per owner (a browser session) at a time."""

    what = "search"
