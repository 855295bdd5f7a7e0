"""Heavy jobs (`pneumo.jobs.run_heavy`): one at a time per machine, queued, at lower priority,
killed past their time limit, and leaving no temporary files.

The job's process is a stand-in (a small Python script in place of `python -m pneumo`) that
records when it ran and at which niceness, so the tests check order, not speed."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

FAKE = """import json, os, sys, time
log, seconds = sys.argv[-2], float(sys.argv[-1])
with open(log, "a") as f:
    f.write(json.dumps({"event": "start", "t": time.time(), "nice": os.nice(0)}) + "\\n")
time.sleep(seconds)
with open(log, "a") as f:
    f.write(json.dumps({"event": "end", "t": time.time()}) + "\\n")
print("done")
"""


@pytest.fixture
def fake_job(tmp_path, monkeypatch):
    """run_heavy's `python -m pneumo ARGS` becomes `python fake.py ARGS`; returns the log."""
    import pneumo.jobs

    script = tmp_path / "fake.py"
    script.write_text(FAKE)
    wrapper = tmp_path / "python"
    wrapper.write_text(f"#!/bin/sh\nshift 2\nexec {sys.executable} {script} \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setattr(pneumo.jobs.sys, "executable", str(wrapper))
    monkeypatch.setattr(pneumo.jobs, "POLL_S", 0.05)
    monkeypatch.setenv("PNEUMO_JOB_LOCK", str(tmp_path / "job.lock"))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return tmp_path / "events.jsonl", scratch


def _events(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_two_simultaneous_jobs_run_one_after_the_other(fake_job):
    from pneumo.jobs import run_heavy

    log, scratch = fake_job
    results, waits = {}, []

    def first():
        results["first"] = run_heavy([str(log), "1.0"])

    one = threading.Thread(target=first)
    one.start()
    for _ in range(400):  # until the first job's process has started
        if _events(log):
            break
        time.sleep(0.025)
    results["second"] = run_heavy([str(log), "0.1"], on_wait=waits.append)
    one.join()
    events = _events(log)
    assert [e["event"] for e in events] == ["start", "end", "start", "end"]  # never overlapped
    assert events[1]["t"] <= events[2]["t"]
    assert waits, "the second visitor was never told it waits"
    assert results["second"].waited_s >= waits[-1] and results["first"].returncode == 0
    assert results["second"].stdout.strip() == "done"
    assert all(e["nice"] >= min(19, os.nice(0) + 10) for e in events if e["event"] == "start")
    assert list(scratch.iterdir()) == []  # the jobs' log folders are removed


def test_a_job_past_its_time_limit_is_killed(fake_job):
    from pneumo.jobs import run_heavy

    log, scratch = fake_job
    result = run_heavy([str(log), "60"], timeout_s=0.5)
    assert result.timed_out and result.returncode != 0
    assert [e["event"] for e in _events(log)] == ["start"]  # it never reached its end
    assert list(scratch.iterdir()) == []
