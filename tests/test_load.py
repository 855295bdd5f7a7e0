"""The load test's small version: scripts/load_app.py with 2 browser sessions of 2 films each
against the shipped model (served by LiteRT), in Debian's Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import missing_shared, shared_root

REPO = Path(__file__).resolve().parent.parent


def test_concurrent_browser_sessions_get_every_answer():
    if not (shared_root() / "data" / "chest_xray" / "val").is_dir():
        missing_shared("the load test uploads real films")
    if not shutil.which("chromium") and not Path("/usr/bin/chromium").exists():
        missing_shared("Debian's chromium is not installed")
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "load_app.py"), "--sessions", "2", "--films", "2",
         "--model", str(REPO / "models" / "default")],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PNEUMO_SHARED": str(shared_root())})
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert run.returncode == 0 and report["errors"] == 0, report["error_messages"]
    assert report["answers"] == 4
    assert report["upload_to_result_s"]["p95"] is not None
    assert report["server_peak_rss_mb"] > 0
