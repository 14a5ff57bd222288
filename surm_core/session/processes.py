"""Work the page starts in a process of its own: a command-line engine (``python -m
surm_core.finetune``, ``python -m surm_core.search``) that waits for the device in a line, writes
what it prints to a log in its directory, and stops on the command line's Ctrl-C (SIGINT).

A process keeps the page's explorers from slowing its steps, and a crash or an out-of-memory in it
ends that process only. :class:`ProcessJob` is what both kinds share; :class:`Jobs` keeps each
browser session to one job of a kind at a time.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import surm_core
from .device import DEVICE, DeviceLine

log = logging.getLogger(__name__)

#: The directory that holds ``surm_core``: the processes import it from there.
SOURCE_ROOT = str(Path(surm_core.__file__).resolve().parent.parent)


def process_env() -> dict:
    """The environment of a job's process: this one's, with ``surm_core`` importable."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [SOURCE_ROOT, os.environ.get("PYTHONPATH")]))}


class ProcessJob:
    """A process that runs ``command()`` in ``cwd`` once the device in ``line`` is its turn.

    Subclasses name the process (``what``, ``log_file``), give its ``command()`` and read its end in
    ``_finish()``; at the end ``error`` holds a message for people, or stays ``None``.
    """

    what = "job"
    log_file = "process.log"

    def __init__(self, cwd, line: DeviceLine = DEVICE):
        self.cwd = Path(cwd)
        self.line = line
        self.process: subprocess.Popen | None = None
        self.error: str | None = None
        self.started: float | None = None  # when the process started (time.monotonic)
        self._stop = threading.Event()
        self._lock = threading.Lock()  # between starting the process and stopping it
        self._thread = threading.Thread(target=self._run, name=f"{self.what} {self.name}", daemon=True)

    @property
    def name(self) -> str:
        return self.cwd.name

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self):
        self.line.join(self)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            if not self.line.wait_turn(self, self._stop):
                self.error = "stopped before it started"
                return
            with self._lock, open(self.cwd / self.log_file, "ab") as out:
                if self._stop.is_set():
                    self.error = "stopped before it started"
                    return
                # a session of its own: a Ctrl-C in the server's terminal reaches the server, which
                # then stops each job once (Jobs.stop_all), rather than every process twice
                self.process = subprocess.Popen(self.command(), cwd=self.cwd, env=process_env(), stdout=out,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                start_new_session=True)
                self.started = time.monotonic()
            self.process.wait()
        except Exception as e:  # could not even start a process: say so, keep serving
            log.exception("%s %s could not start", self.what, self.cwd)
            self.error = f"could not start the {self.what} process ({type(e).__name__}: {e})"
        finally:
            self.line.leave(self)
            self._finish()

    def _finish(self) -> None:
        """Read how the process ended (runs in the job's thread, after it ended)."""

    def log_lines(self) -> list[str]:
        try:
            return (self.cwd / self.log_file).read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return []

    def stop(self) -> None:
        """Leave the line, or ask the process to stop after its current step (keeping what it reached).

        Only the first call signals: the command lines take a second Ctrl-C as "interrupt at once",
        which would lose what the current step or trial reached. A job that has ended is not
        stopped (its failure stays a failure)."""
        with self._lock:
            if self._stop.is_set() or self.done():
                return
            self._stop.set()
            if self.process is not None and self.process.poll() is None:
                self.process.send_signal(signal.SIGINT)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds; True once the job has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def done(self) -> bool:
        return not self._thread.is_alive()


class Jobs:
    """The jobs of one kind this server started, at most one per owner (a browser session) at a
    time; all of them wait for the device in one line."""

    what = "job"

    def __init__(self):
        self._lock = threading.Lock()
        self._jobs: dict[str, ProcessJob] = {}

    def start(self, owner: str, make_job) -> ProcessJob:
        """Start ``make_job()`` for ``owner``, unless a job of theirs is still going (a ``ValueError``
        that says which)."""
        with self._lock:
            job = self._jobs.get(owner)
            if job is not None and not job.done():
                where = "is waiting for the device" if job.process is None else "is running"
                raise ValueError(f"your {self.what} {job.name!r} {where}; one at a time per page: press Stop, "
                                 "or wait until it ends")
            job = self._jobs[owner] = make_job().start()
            return job

    def of(self, owner: str) -> ProcessJob | None:
        """``owner``'s latest job (running or ended), if any."""
        return self._jobs.get(owner)

    def forget(self, owner: str) -> None:
        with self._lock:
            self._jobs.pop(owner, None)

    def active(self) -> dict[Path, str]:
        """The directories of the jobs not ended yet: ``"queued"`` or ``"running"``."""
        return {job.cwd: "queued" if job.process is None else "running"
                for job in list(self._jobs.values()) if not job.done()}

    def stop_all(self, timeout: float = 60) -> None:
        """Stop every job (each keeps what it reached), waiting up to ``timeout`` seconds in all."""
        jobs = list(self._jobs.values())
        for job in jobs:
            job.stop()
        deadline = time.monotonic() + timeout
        for job in jobs:
            job.wait(max(0.0, deadline - time.monotonic()))
