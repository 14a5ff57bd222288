"""Running a search: the Optuna study, its storage, one trial as one fine-tune, workers, results.

Each trial is an ordinary run of :func:`surm_core.finetune.run` with its own run directory
(``<out>/trials/<number>``: metrics, summary, adapter). Its evaluations every ``eval_every`` steps
are kept with it (the ``evals`` user attribute). The study has two objectives: the task's metric
(the final eval accuracy of a classifier, up; a causal language model's final eval loss, down) and
the trainable-parameter count (down), so that Optuna's multi-objective TPE spreads its trials along
the Pareto front of the two instead of following the most accurate, largest adapters.

Early stopping: :class:`FrontPruner`, called by :func:`run_trial` itself (Optuna prunes
single-objective studies only, and its own pruners rank a trial against *all* others: a small
adapter a point below a ten times larger one would be cut, although it is exactly what the front
needs). FrontPruner ranks a trial only against the trials that could dominate it (no more
trainable parameters), at the same step, so pruning never removes a trial for being small.

>>> search = Search(SearchSpace(["circulant", "lowrank"], max_budget=3072), FinetuneConfig(steps=60))
>>> study = run_search(search, "searches/s1", trials=40)          # doctest: +SKIP
>>> [t.number for t in front(study)]                              # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import multiprocessing
import os
import signal
import socket
import threading
import warnings
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from ..finetune import FinetuneConfig, run
from ..finetune.prepare import base_model, dataset_labels, file_stamp
from ..finetune.task import TASK_CLASSES, task_name
from ..models import DEFAULT_MODEL
from .space import HEAD_ONLY, Layers, SearchSpace, model_layers

#: Fields of a trial's FinetuneConfig that the search space sets; the rest come from the template.
SAMPLED = ("method", "budget", "hparams", "target_modules", "lr")
#: A worker's heartbeat (s) and how long one may stay silent before its trial counts as dead and
#: is retried (Optuna's heartbeat, on database storages).
HEARTBEAT_S, GRACE_S = 10, 30
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


class TrialFailed(Exception):
    """The fine-tune of a trial failed on its own (non-finite loss, divergence, a bad member)."""


class Interrupted(Exception):
    """The search was asked to stop while this trial ran; it is queued to run again on resume."""


@dataclasses.dataclass
class Search:
    """A search: its space and the template every trial's :class:`FinetuneConfig` starts from
    (model, data, steps, batch size, ...; the space sets ``method``, size, targets and ``lr``).
    The template's ``task`` (``None``: the model's, see :func:`surm_core.models.infer_task`) sets
    the objective: see :meth:`metric`."""

    space: SearchSpace
    run: FinetuneConfig

    @property
    def task(self) -> str:
        return task_name(self.run)

    def metric(self) -> tuple[str, str]:
        """``(metric, direction)``: ``("eval_acc", "maximize")`` for a classifier,
        ``("eval_loss", "minimize")`` for a causal language model."""
        task = TASK_CLASSES[self.task]
        return task.metric, "maximize" if task.higher_is_better else "minimize"

    def identity(self) -> dict:
        """What must match for two processes to work on one study (stored with it, as JSON)."""
        fixed = {k: v for k, v in self.run.to_dict().items() if k not in (*SAMPLED, "out_dir")}
        if fixed["model"] == DEFAULT_MODEL:
            fixed["model"] = "default"  # the packaged model sits at a different path on each machine
        return json.loads(json.dumps({"space": self.space.to_dict(), "run": fixed}))


class FrontPruner:
    """Prune a trial whose value at an evaluation is worse than the median, at that step, of the
    completed trials with no more trainable parameters (once there are ``min_trials`` of them);
    worse is lower when the study maximises its metric (accuracy), higher when it minimises it
    (eval loss).

    prune at step s ⇔ v_s(T) < median{v_s(U) : U complete, params(U) ≤ params(T)}  (maximising)

    Half the configurations at most this large were better at this point, so this one is
    unlikely to end on the front. Reads the trials' ``evals`` and ``trainable_params`` user
    attributes (see :func:`run_trial`).
    """

    def __init__(self, min_trials: int = 4):
        self.min_trials = min_trials

    def prune(self, study, trial) -> bool:
        values = evals(trial)
        if not values:
            return False
        step = max(values)
        params = trial.user_attrs["trainable_params"]
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        rivals = [seen[step] for seen in (evals(t) for t in complete if t.user_attrs["trainable_params"] <= params)
                  if step in seen]
        if len(rivals) < self.min_trials:
            return False
        return goodness(study, values[step]) < goodness(study, np.median(rivals))


def evals(trial) -> dict[int, float]:
    """``{step: metric}`` of a trial's evaluations before its last step (its ``evals`` user attribute)."""
    return {int(step): value for step, value in trial.user_attrs.get("evals", {}).items()}


def last_eval(trial) -> float | None:
    """The metric at a trial's latest evaluation before its last step (None before the first)."""
    seen = evals(trial)
    return seen[max(seen)] if seen else None


def metric_value(trial) -> float:
    """A finished trial's final metric: its first objective (the second is its parameter count)."""
    return trial.values[0]


def open_storage(url: str | None, out: Path):
    """The study's storage: ``None`` is ``<out>/study.db`` (SQLite); a URL with ``://`` any
    database SQLAlchemy reaches (``postgresql://``, ``mysql+pymysql://``, ``sqlite:///``), with
    heartbeats so that a dead worker's trial is retried; anything else a journal file (Optuna's
    append-only log, for a disk shared by several machines where SQLite's locking is unsafe)."""
    if url is None:
        out.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{out / 'study.db'}"
    if "://" not in url:
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2),
                engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
            )
        except Exception as e:  # SQLAlchemy's errors for a bad URL, a missing driver, no server
            raise ValueError(f"cannot open the storage {url!r}: {type(e).__name__}: {str(e).splitlines()[0]}") from None


def open_study(search: Search, storage, name: str, resume: bool) -> optuna.Study:
    """Create the study ``name`` (``resume=False``) or load it (``resume=True``), checking that an
    existing one searches the same space with the same run settings."""
    exists = name in optuna.get_all_study_names(storage)
    if exists and not resume:
        raise ValueError(f"a study {name!r} exists already in this storage: --resume continues it (or joins it "
                         "from another machine), or choose another --out / --study")
    if not exists and resume:
        raise ValueError(f"there is no study {name!r} to resume in this storage")
    study = optuna.create_study(storage=storage, study_name=name, directions=[search.metric()[1], "minimize"],
                                load_if_exists=True)
    if len(study.directions) != 2:
        raise ValueError(f"study {name!r} was made by an earlier version with one objective (the metric alone); "
                         "start a new search (another --out or --study)")
    # The sampler (multi-objective TPE over the metric and the parameter count) is seeded by the
    # run's seed in a new study only: a resumed study, or a second worker, with that seed again
    # would sample the same first configurations again.
    # constant_liar: a worker counts the trials running elsewhere as bad ones, so workers spread out.
    seed = search.run.seed if not exists else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)
    wanted, stored = search.identity(), study.user_attrs.get("search")
    if stored is None:
        study.set_user_attr("search", wanted)
    else:
        # A setting the engine gained after the study began is the same search at its default.
        defaults = Search(search.space, FinetuneConfig()).identity()
        diff = [f"{part}.{k}: {stored[part].get(k, defaults[part].get(k))!r} there, {v!r} here"
                for part in ("space", "run") for k, v in wanted[part].items()
                if stored[part].get(k, defaults[part].get(k)) != v]
        if diff:
            raise ValueError(f"study {name!r} exists with a different search ({'; '.join(diff)}): "
                             "resume it with its own settings or choose another --study")
    return study


def counted(study) -> tuple[int, int]:
    """(trials finished, trials running): finished are the complete, pruned and failed-on-their-own
    ones; a trial interrupted by a stop or a dead worker is not (its retry will be)."""
    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in DONE or (t.state == TrialState.FAIL and "failure" in t.user_attrs) for t in trials)
    return done, sum(t.state == TrialState.RUNNING for t in trials)


def run_trial(trial, config: FinetuneConfig, stop: threading.Event, metric: str = "eval_acc",
              pruner: FrontPruner | None = None) -> float:
    """Fine-tune ``config`` as trial ``trial``: keep each evaluation's ``metric`` (the ``evals``
    user attribute), stop when ``pruner`` says so (raising ``optuna.TrialPruned``), on ``stop``
    (raising :class:`Interrupted`) or when the run fails on its own (raising :class:`TrialFailed`
    with its reason); return the final ``metric``."""
    trial.set_user_attr("began", trial.number)  # from here Optuna's heartbeat tells whether it lives
    trial.set_user_attr("config", {k: v for k, v in config.to_dict().items() if k != "out_dir"})
    trial.set_user_attr("run_dir", config.out_dir)
    trial.set_user_attr("interrupted", False)  # a retry starts with its original's attributes
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    pruned, counted_params, seen = threading.Event(), [], {}

    def on_event(event):
        if not counted_params:  # the count is known from the first event, before any evaluation
            counted_params.append(event["trainable_params"])
            trial.set_user_attr("trainable_params", event["trainable_params"])
        if event["event"] == "eval" and event["step"] < event["total_steps"]:
            seen[str(event["step"])] = event[metric]  # Optuna's trial.report is for single-objective studies
            trial.set_user_attr("evals", seen)
            if pruner is not None and pruner.prune(trial.study, trial):
                pruned.set()

    try:
        summary = run(config, on_event=on_event, should_stop=lambda: pruned.is_set() or stop.is_set())
    except ValueError as e:
        trial.set_user_attr("failure", str(e))
        raise TrialFailed(str(e)) from None
    trial.set_user_attr("trainable_params", summary["trainable_params"])
    trial.set_user_attr("steps", summary["steps_done"])
    reason = summary["stopped_reason"]
    if pruned.is_set():
        raise optuna.TrialPruned(f"pruned at step {summary['steps_done']}")
    if reason == "stopped":
        trial.set_user_attr("interrupted", True)
        raise Interrupted(f"stopped at step {summary['steps_done']}")
    if reason != "completed":
        trial.set_user_attr("failure", reason)
        raise TrialFailed(reason)
    return summary[f"final_{metric}"]


def optimize(study, search: Search, layers: Layers, out: Path, trials: int, stop: threading.Event, on_trial=None) -> None:
    """Run trials in this process until the study has ``trials`` finished ones or ``stop`` is set.

    ``on_trial(study, frozen_trial)`` is called after each trial (e.g. to print a line).
    """
    metric = search.metric()[0]  # once: the task may come from the model's config (a file, or the hub)
    pruner = FrontPruner()

    def objective(trial):
        fields = search.space.suggest(trial, layers)
        config = dataclasses.replace(search.run, **fields, out_dir=str(out / "trials" / f"{trial.number:04d}"))
        value = run_trial(trial, config, stop, metric, pruner)
        return value, trial.user_attrs["trainable_params"]

    def after(study, trial):
        if trial.user_attrs.get("interrupted"):
            # Optuna's retry: the same parameters, queued as a new trial the next run takes first
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)(study, trial)
            study.stop()
        if on_trial is not None:
            on_trial(study, trial)

    while not stop.is_set():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # a dead worker's trial is not running any more
            fail_trials_that_never_began(study)
        if sum(counted(study)) >= trials:
            break
        study.optimize(objective, n_trials=1, catch=(TrialFailed, Interrupted), callbacks=[after])


def fail_trials_that_never_began(study) -> None:
    """Fail, and queue again, the running trials whose objective has not begun ``GRACE_S`` after
    they were created: their worker died while sampling them. Optuna's stale-trial check skips a
    trial with no heartbeat yet, and its first heartbeat comes only as the objective begins, so
    such a trial would count as running forever (a resumed search would end a trial short)."""
    now = datetime.datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        # run_trial writes the trial's own number first; a retry starts with its original's attributes
        if t.user_attrs.get("began") != t.number and (now - t.datetime_start).total_seconds() > GRACE_S:
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            dead = study.get_trials(deepcopy=False)[t.number]
            optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)(study, dead)


def check_families(task: str, families) -> None:
    """``ValueError`` when a family cannot train for ``task`` (head-only for a causal LM)."""
    if task == "causal-lm" and HEAD_ONLY in families:
        raise ValueError(f"{HEAD_ONLY} trains a classification head, and a causal language model has none: "
                         "search adapter families only")


def describe_model(template: FinetuneConfig, targets) -> Layers:
    """Load the data's labels and the model once (the engine's cached copies) to learn the adapted
    layers' shapes; a bad dataset or model (or one that does not fit the task) is a ValueError
    here, before any trial."""
    task = task_name(template)
    labels = dataset_labels(template.model, task, template.dataset, template.text_column, template.label_column,
                            *file_stamp(template.dataset))
    model = base_model(template.model, task, labels)
    return model_layers(model, targets, head=[] if task == "causal-lm" else None)  # a causal LM trains no head


def worker(search: Search, layers: Layers, out: str, storage_url, name: str, trials: int, threads: int) -> None:
    """One worker process (started by :func:`run_search`): joins the study and runs trials."""
    torch.set_num_threads(threads)
    quiet()
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())  # every Ctrl-C: finish cleanly
    study = open_study(search, open_storage(storage_url, Path(out)), name, resume=True)
    optimize(study, search, layers, Path(out), trials, stop, on_trial=print_trial)


def quiet() -> None:
    """Our progress lines say what Optuna's and transformers' per-trial logs would."""
    import transformers

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def run_search(search: Search, out, trials: int, storage: str | None = None, name: str | None = None,
               resume: bool = False, workers: int | None = None, stop: threading.Event | None = None,
               on_trial=None) -> optuna.Study:
    """Run (or resume, or join) a search; every input is checked before the first trial.

    ``out``: the search directory (trial run directories, ``study.db`` by default, ``best.json``).
    ``storage``: an Optuna storage URL or journal file (``None``: ``<out>/study.db``); ``name``:
    the study's name (default: ``out``'s folder name). ``workers``: worker processes on this
    machine (``None``: one per visible GPU on CUDA, else one; ``1`` runs in this process). On CPU
    the threads are split between them. ``stop``: set it to end cleanly (running trials stop after
    their current step and are queued again for ``resume``).
    """
    out = Path(out)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"the number of trials must be a positive integer, got {trials!r}")
    cuda = search.run.device != "cpu" and torch.cuda.is_available()
    gpus = torch.cuda.device_count() if cuda else 0
    workers = workers if workers is not None else max(1, gpus)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    quiet()
    check_families(search.task, search.space.families)
    layers = describe_model(search.run, search.space.targets)
    search.space.check(layers)
    name = name or out.resolve().name
    study = open_study(search, open_storage(storage, out), name, resume)
    if not resume:  # a new study: head-only's fixed rates first (see SearchSpace.head_only_references)
        for params, attrs in search.space.head_only_references(trials):
            study.enqueue_trial(params, user_attrs=attrs)
    stop = stop or threading.Event()
    if workers == 1:
        optimize(study, search, layers, out, trials, stop, on_trial)
    else:
        run_workers(search, layers, out, storage, name, trials, workers, gpus, stop)
    if front(study):
        write_config(best(study, search.space.max_params), out / "best.json")
    return study


def run_workers(search, layers, out, storage, name, trials, workers, gpus, stop) -> None:
    """Start ``workers`` processes on one study and wait; on ``stop`` ask them to finish cleanly."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch state
    procs = []
    for i in range(workers):
        env = {"CUDA_VISIBLE_DEVICES": str(i % gpus)} if gpus else {}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # a spawned process starts with this environment: one GPU each
        try:
            p = ctx.Process(target=worker, args=(search, layers, str(out), storage, name, trials, threads))
            p.start()
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        procs.append(p)
    for p in procs:
        while p.is_alive():
            p.join(timeout=0.5)
            if stop.is_set():
                for q in procs:
                    if q.is_alive():
                        os.kill(q.pid, signal.SIGINT)
                stop.clear()  # asked once; the workers finish their step and exit
    failed = [p.exitcode for p in procs if p.exitcode]
    if failed:
        raise RuntimeError(f"{len(failed)} worker process(es) failed (exit codes {failed}); see their output above")


def goodness(study, value: float) -> float:
    """``value`` where larger is better: itself when the study maximises, its negation when it minimises."""
    return value if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -value


def objective_name(study) -> str:
    """What a trial's value is, for people: ``"accuracy"`` or ``"eval loss"``."""
    return "accuracy" if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else "eval loss"


def front(study) -> list:
    """The complete trials no other complete trial beats with at most as many parameters
    (ascending parameters; on ties the best one). Beats: more accurate, or a lower eval loss."""
    done = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                  key=lambda t: (t.user_attrs["trainable_params"], -goodness(study, metric_value(t)), t.number))
    result, best_so_far = [], -np.inf
    for t in done:
        if goodness(study, metric_value(t)) > best_so_far:
            result.append(t)
            best_so_far = goodness(study, metric_value(t))
    return result


def best(study, max_params: int | None = None):
    """The best complete trial (most accurate, or lowest eval loss) with at most ``max_params``
    trainable parameters (on ties the smaller); ``None`` when none qualifies."""
    fitting = [t for t in front(study) if max_params is None or t.user_attrs["trainable_params"] <= max_params]
    return max(fitting, key=lambda t: (goodness(study, metric_value(t)), -t.user_attrs["trainable_params"]), default=None)


def export_config(trial) -> dict:
    """The trial's FinetuneConfig fields (without a run directory): what
    ``python -m surm_core.finetune --config FILE`` reads to train it again, or longer."""
    return dict(trial.user_attrs["config"])


def write_config(trial, path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(export_config(trial), indent=2) + "\n")
    return path


def size_label(config: dict) -> str:
    """``budget=768``, ``nblocks=4 blk_r=2`` (and the targets unless query/value) of a trial's config."""
    size = f"budget={config['budget']}" if config.get("budget") else " ".join(
        f"{k}={v}" for k, v in (config.get("hparams") or {}).items())
    targets = config.get("target_modules")
    return size + (f" targets={targets}" if targets not in (None, "attention-qv") else "")


def describe(trial) -> str:
    """``monarch nblocks=4 blk_r=2 lr=0.012`` for a trial's configuration."""
    c = trial.user_attrs.get("config") or {}
    if not c:
        return "(not started)"
    return " ".join(filter(None, [c["method"], size_label(c), f"lr={c['lr']:.3g}"]))


def steps_saved(study) -> tuple[int, int]:
    """(steps run, steps pruning saved) over the study's pruned and complete trials."""
    run_steps = saved = 0
    for t in study.get_trials(deepcopy=False, states=(*DONE, TrialState.FAIL)):
        steps = t.user_attrs.get("steps", 0)
        run_steps += steps
        if t.state == TrialState.PRUNED:
            saved += t.user_attrs["config"]["steps"] - steps
    return run_steps, saved


def print_trial(study, trial) -> None:
    """One line per finished trial: what it was, how it ended, where the search stands."""
    params = trial.user_attrs.get("trainable_params")
    what = f"trial {trial.number:>3} {describe(trial)}" + (f" ({params:,} params)" if params else "")
    if trial.state == TrialState.COMPLETE:
        on_front = any(t.number == trial.number for t in front(study))
        end = f"{objective_name(study)} {metric_value(trial):.4f}" + (" *front*" if on_front else "")
    elif trial.state == TrialState.PRUNED:
        end = (f"pruned at step {trial.user_attrs['steps']} "
               f"({objective_name(study)} {last_eval(trial):.4f})")
    elif trial.user_attrs.get("interrupted"):
        end = "interrupted: queued to run again on --resume"
    else:
        end = f"failed: {trial.user_attrs.get('failure', 'see the error above')}"
    done, _ = counted(study)
    run_steps, saved = steps_saved(study)
    print(f"{what}: {end} [{done} done, {run_steps:,} steps run, {saved:,} saved by pruning]", flush=True)
