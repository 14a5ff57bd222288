"""What fine-tunes and searches started from the page share: a process that waits for the device,
is stopped with one Ctrl-C however often Stop is pressed, and one job per page at a time."""
from __future__ import annotations

import sys
import time

import pytest

from surm_core.session import FinetuneJob, SearchJob
from surm_core.session.device import DeviceLine
from surm_core.session.processes import Jobs, ProcessJob

#: Counts the Ctrl-Cs it receives into ``sigints``; after the first it lives one more second, as
#: a command line finishing its step does (a second Ctrl-C would arrive then).
COUNTER = """
import signal, sys, time
count = 0
def on_int(*_):
    global count
    count += 1
    open("sigints", "w").write(str(count))
signal.signal(signal.SIGINT, on_int)
open("ready", "w").close()
start = time.monotonic()
while count == 0 and time.monotonic() - start < 60:
    time.sleep(0.02)
time.sleep(1.0)
"""


class Counter(ProcessJob):
    what = "counter"

    def command(self):
        return [sys.executable, "-c", COUNTER]


def wait_for(path, timeout=60):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


def test_stop_signals_the_process_once_however_often_it_is_pressed(tmp_path):
    job = Counter(tmp_path, DeviceLine()).start()
    wait_for(tmp_path / "ready")
    for _ in range(3):
        job.stop()
        time.sleep(0.1)
    assert job.wait(30) and job.process.returncode == 0
    assert (tmp_path / "sigints").read_text() == "1"


def test_fine_tunes_and_searches_stop_the_same_way():
    # the search used to send a Ctrl-C at every Stop, and a second one aborts the running trial
    assert FinetuneJob.stop is SearchJob.stop is ProcessJob.stop


def test_a_job_stopped_in_line_never_starts(tmp_path):
    line = DeviceLine()
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = Counter(tmp_path / "first", line).start()
    second = Counter(tmp_path / "second", line).start()
    wait_for(tmp_path / "first" / "ready")
    second.stop()
    assert second.wait(10) and second.process is None and second.error == "stopped before it started"
    first.stop()
    assert first.wait(30) and first.error is None


def test_a_job_that_ended_is_not_stopped(tmp_path):
    class Quick(ProcessJob):
        def command(self):
            return [sys.executable, "-c", "pass"]

    job = Quick(tmp_path, DeviceLine()).start()
    assert job.wait(30)
    job.stop()  # its end stays what it was: not "stopped"
    assert not job.stopping and job.error is None


def test_one_job_per_owner_at_a_time(tmp_path):
    class Counters(Jobs):
        what = "counter"

    jobs, line = Counters(), DeviceLine()
    job = jobs.start("page-1", lambda: Counter(tmp_path, line))
    wait_for(tmp_path / "ready")
    with pytest.raises(ValueError, match=r"your counter '.*' is running; one at a time per page"):
        jobs.start("page-1", lambda: Counter(tmp_path, line))
    assert jobs.active() == {tmp_path: "running"}
    jobs.stop_all(timeout=30)
    assert job.done() and jobs.active() == {}
