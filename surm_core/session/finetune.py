"""The Fine-tune tab's runs: a run's config from the page's inputs, and the run itself in a
background thread, one at a time on this process's device."""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from ..families import FAMILIES
from ..families.base import check_size
from ..finetune import BASELINES, BBC_NEWS, FinetuneConfig, run
from ..finetune.engine import describe as describe_device
from ..finetune.engine import pick_device
from ..models import DEFAULT_MODEL
from .explore import check_seed

log = logging.getLogger(__name__)

#: Methods offered, as (label, value): the families an adapter can use, then the two baselines.
#: Dense is left out: as an adapter it is full fine-tuning of the targeted layers.
METHODS = [("lowrank (LoRA)" if f == "lowrank" else f, f) for f in FAMILIES if f != "dense"] + [
    ("full fine-tuning", "full"), ("head only", "head-only")]


def device_name() -> str:
    """The device a fine-tune started now runs on ("cpu" or "cuda:0 (<GPU name>)")."""
    return describe_device(pick_device("auto"))


def finetune_config(runs_dir, model: str | None, dataset: str | None, method: str, budget,
                    steps, batch_size, lr, seed, text_column: str | None = None,
                    label_column: str | None = None) -> FinetuneConfig:
    """The engine's config for one run from the app's inputs, writing into a new directory of
    ``runs_dir``. Empty model/dataset mean the defaults (MiniLM, BBC News); ``budget`` is ignored
    by the baselines ("full", "head-only").
    """
    if method not in {value for _, value in METHODS}:
        raise ValueError(f"method must be one of {', '.join(v for _, v in METHODS)}, got {method!r}")
    config = FinetuneConfig(
        model=(model or "").strip() or DEFAULT_MODEL,
        dataset=dataset or BBC_NEWS,
        text_column=(text_column or "").strip() or None,
        label_column=(label_column or "").strip() or None,
        method=method,
        budget=None if method in BASELINES else check_size("budget", budget),
        steps=check_size("steps", steps),
        batch_size=check_size("batch size", batch_size),
        lr=lr,
        seed=check_seed(seed),
    )
    config.out_dir = str(new_run_dir(runs_dir, run_name(config.to_dict())))
    return config


def run_name(config: dict) -> str:
    """A short label for a run: its method, and its per-layer budget for an adapter."""
    return config["method"] if config.get("budget") is None else f"{config['method']} {config['budget']}"


def new_run_dir(runs_dir, name: str) -> Path:
    """A fresh ``runs_dir/<time>-<name>`` (suffixed when that exists): runs sort by start time."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    stem = time.strftime("%Y%m%d-%H%M%S") + "-" + name.replace(" ", "-")
    for n in range(1000):
        path = runs_dir / (stem if n == 0 else f"{stem}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run directory under {runs_dir}")


#: One fine-tune at a time on this process's device, even while a stopped run is still winding
#: down (its page closed) and the next one has already been let through Gradio's queue.
_DEVICE = threading.Lock()


class FinetuneJob:
    """One engine run in a background thread, watched by polling ``events``, ``summary``, ``error``.

    >>> job = FinetuneJob(config).start()      # doctest: +SKIP
    >>> while not job.wait(1.0): print(job.events[-1:])   # doctest: +SKIP
    """

    def __init__(self, config: FinetuneConfig):
        self.config = config
        self.events: list[dict] = []
        self.summary: dict | None = None
        self.error: str | None = None
        self.waiting_for_device = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"finetune {config.out_dir}", daemon=True)

    def start(self) -> "FinetuneJob":
        self._thread.start()
        return self

    def _run(self) -> None:
        with _DEVICE:
            self.waiting_for_device = False
            try:
                self.summary = run(self.config, on_event=self.events.append, should_stop=self._stop.is_set)
            except ValueError as e:  # bad model, dataset or settings: the engine's message says which
                self.error = str(e)
            except Exception as e:  # a failure the user cannot fix: say what it was, keep serving
                log.exception("fine-tuning run %s failed", self.config.out_dir)
                self.error = f"{type(e).__name__}: {e} (details in the server log)"
            if self.error is not None:
                _remove_if_empty(self.config.out_dir)

    def stop(self) -> None:
        """Ask the run to stop; it ends within one step and keeps what it reached."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds; True once the run has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def status(self) -> str:
        """One line for people: where the run is."""
        if self.error is not None:
            return f"Failed: {self.error}"
        if self.waiting_for_device:
            return "Waiting for the previous run to release the device…"
        if not self.events:
            return "Loading the model and the data…"
        e = self.events[-1]
        text = f"Step {e['step']}/{e['total_steps']} on {e['device']}"
        if e.get("loss") is not None:
            text += f" · loss {e['loss']:.3f} · batch accuracy {e['train_acc']:.2f}"
        evals = [x["eval_acc"] for x in self.events if x.get("eval_acc") is not None]
        if evals:
            text += f" · eval accuracy {evals[-1]:.3f}"
        if e.get("examples_per_s"):
            text += f" · {e['examples_per_s']:.1f} examples/s"
        if self.summary is not None:
            text = f"Done ({self.summary['stopped_reason']}): " + text
        return text

    def progress(self) -> float:
        """Fraction of the steps done, in [0, 1]."""
        if not self.events:
            return 0.0
        return min(1.0, self.events[-1]["step"] / self.events[-1]["total_steps"])


def _remove_if_empty(directory) -> None:
    """A run that failed before writing anything leaves no empty directory behind."""
    try:
        Path(directory).rmdir()
    except OSError:
        pass

