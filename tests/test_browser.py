"""End to end: `streamlit run streamlit_app.py` in a subprocess, driven by headless Chromium.

Uploads a real full-size X-ray from <shared>/data/chest_xray/val and checks that the
probability and the heatmap overlay appear; saves a screenshot under the test's tmp_path.
Skips when Chromium or the Playwright package is missing, except on CI (CI=true): there a
missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("PNEUMO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ON_CI = os.environ.get("CI", "").lower() == "true"


def _need(condition: bool, reason: str) -> None:
    if not condition:
        if ON_CI:
            pytest.fail(f"{reason} (CI=true: the browser test must run)")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"streamlit did not answer at {url} within {timeout:.0f} s")


@pytest.fixture(scope="module")
def xray() -> Path:
    shared = Path(os.environ.get("PNEUMO_SHARED", REPO.parent / "shared"))
    files = sorted((shared / "data" / "chest_xray" / "val" / "PNEUMONIA").glob("*.jpeg"))
    if not files:
        pytest.skip(f"no validation X-rays under {shared}/data/chest_xray/val; set PNEUMO_SHARED")
    return files[0]


@pytest.fixture(scope="module")
def browser_bundle(request) -> Path:
    """The lead's tiny_bundle, else $PNEUMO_TEST_BUNDLE, else models/default."""
    try:
        return Path(request.getfixturevalue("tiny_bundle"))
    except pytest.FixtureLookupError:
        for candidate in (os.environ.get("PNEUMO_TEST_BUNDLE"), REPO / "models" / "default"):
            if candidate and (Path(candidate) / "manifest.json").is_file():
                return Path(candidate)
    pytest.skip("no model bundle to serve (tiny_bundle fixture, $PNEUMO_TEST_BUNDLE, "
                "models/default)")


@pytest.fixture(scope="module")
def chromium() -> str:
    """The Chromium binary (checked before anything slow is set up)."""
    _need(shutil.which(CHROMIUM) is not None or Path(CHROMIUM).is_file(),
          f"Chromium not found at {CHROMIUM}")
    return CHROMIUM


@pytest.fixture(scope="module")
def server(chromium, browser_bundle, tmp_path_factory):
    """A live `streamlit run` serving `browser_bundle`; always terminated."""
    port = _free_port()
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    env = dict(os.environ, PNEUMO_MODELS_DIR=str(browser_bundle), TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PNEUMO_SAMPLES_DIR", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "streamlit_app.py",
             "--server.headless", "true", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url
    except Exception:
        print(log.read_text(errors="replace")[-3000:])
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def page(chromium, server):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "the playwright package is not installed")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 1600})
            tab.set_default_timeout(120_000)  # the first prediction loads TensorFlow
            yield tab
        finally:
            browser.close()


def test_upload_xray_shows_probability_and_heatmap(server, page, xray, tmp_path):
    page.goto(server)  # home first, then the sidebar: the way a user gets there
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Predict").click()
    page.get_by_role("heading", name="Predict one chest X-ray").first.wait_for()
    page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(str(xray))

    probability = page.get_by_test_id("stMetric").filter(has_text="Pneumonia probability")
    probability.wait_for()
    value = probability.get_by_test_id("stMetricValue").inner_text()
    assert value.endswith("%") and 0.0 <= float(value.rstrip("%")) <= 100.0
    overlay = page.get_by_test_id("stImage").filter(has_text="Heatmap overlay")
    overlay.wait_for()
    img = overlay.locator("img").first
    img.wait_for()
    assert page.evaluate("(el) => el.complete && el.naturalWidth > 0", img.element_handle())
    assert page.get_by_text("Download report (PDF)").is_visible()
    assert not page.get_by_test_id("stException").count()
    page.screenshot(path=str(tmp_path / "predict.png"), full_page=True)
    assert (tmp_path / "predict.png").stat().st_size > 10_000


def test_metric_pages_render_in_browser(server, page, tmp_path):
    for path, heading in (("confusion", "Confusion matrix"), ("curves", "ROC & PR curves"),
                          ("model-card", "Model card")):
        page.goto(f"{server}/{path}")
        page.get_by_role("heading", name=heading).first.wait_for()
        assert not page.get_by_test_id("stException").count(), path
    page.screenshot(path=str(tmp_path / "model-card.png"), full_page=True)
