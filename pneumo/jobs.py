"""Heavy jobs (site calibration) outside the serving process: queued, bounded, at low priority.

A dashboard shared by strangers must not let one visitor's calibration load TensorFlow and a
Keras model into the server (2.8 GB after one fit, measured) or take both cores from everyone
else's predictions. So a heavy job runs as `python -m pneumo ...` in a subprocess:

* **one at a time per machine**: an exclusive `fcntl` lock on a file in the temp folder; a
  second visitor's job waits for it (and is told it waits, with the time waited so far);
* **at lower priority** (`os.nice(NICE)`), so predictions keep the cores;
* **with a time limit** (`TIMEOUT_S`) after which it is killed;
* its output goes to temporary files (no pipe to fill), removed afterwards.

Returns what the command printed; the caller (the Evaluate page) decides what to show and
where the result lives. No TensorFlow import here.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

NICE = 10  # the heavy job yields the cores to predictions
TIMEOUT_S = 1800.0
POLL_S = 1.0
LOCK_NAME = "pneumo-heavy-job.lock"


@dataclass(frozen=True)
class JobResult:
    """What a finished job printed, and how it ended."""

    returncode: int
    stdout: str
    stderr: str
    waited_s: float  # in the queue, behind another job
    ran_s: float
    timed_out: bool = False


def lock_path() -> Path:
    """The machine-wide lock file (one heavy job at a time)."""
    return Path(os.environ.get("PNEUMO_JOB_LOCK") or Path(tempfile.gettempdir()) / LOCK_NAME)


def _lower_priority() -> None:  # runs in the child before exec
    os.nice(NICE)


def run_heavy(args: list[str], *, on_wait: Callable[[float], None] | None = None,
              on_tick: Callable[[float, str], None] | None = None,
              timeout_s: float = TIMEOUT_S) -> JobResult:
    """Run `python -m pneumo *args` as the machine's one heavy job.

    on_wait(seconds waited) is called about once a second while another job holds the lock;
    on_tick(seconds running, last line of the job's log) while this one runs.
    """
    started = time.monotonic()
    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if on_wait is not None:
                    on_wait(time.monotonic() - started)
                time.sleep(POLL_S)
        try:
            waited = time.monotonic() - started
            return _run(args, on_tick, timeout_s, waited)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(args: list[str], on_tick, timeout_s: float, waited: float) -> JobResult:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory(prefix="pneumo-job-") as tmp:
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        # The child writes through its own handles; the parent reads the files afresh, so no
        # file offset is shared between the two.
        with open(out_path, "w") as out, open(err_path, "w") as err:
            began = time.monotonic()
            proc = subprocess.Popen([sys.executable, "-m", "pneumo", *args], stdout=out,
                                    stderr=err, env=env, preexec_fn=_lower_priority)
            timed_out = False
            while proc.poll() is None:
                elapsed = time.monotonic() - began
                if elapsed > timeout_s:
                    proc.kill()
                    proc.wait()
                    timed_out = True
                    break
                if on_tick is not None:
                    on_tick(elapsed, last_line(err_path))
                time.sleep(POLL_S)
        return JobResult(proc.returncode, out_path.read_text(errors="replace"),
                         err_path.read_text(errors="replace"), waited,
                         time.monotonic() - began, timed_out)


def last_line(path: Path) -> str:
    """The last non-empty line of a log file written so far (progress bars included)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - 2000))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""
