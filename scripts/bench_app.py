"""Time the dashboard as a user meets it: cold start to the first prediction, then a warm upload.

    python scripts/bench_app.py [--model models/default] [--chromium /usr/bin/chromium]
                                [--runtime auto|keras] [--python PYTHON]

Starts `streamlit run streamlit_app.py` on a free port, drives Debian's Chromium with
Playwright, uploads two full-size films from <shared>/data/chest_xray/val and prints JSON:
seconds from launching the server to the first probability on screen (imports and model load
included), and from the second upload to its probability and heatmap. `--runtime keras` serves
the Keras model instead of model.tflite; `--python` runs the server with another interpreter
(e.g. a virtual environment with only requirements-serve.txt, no TensorFlow).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(url)


def start_server(model: str | Path, python: str = sys.executable, runtime: str = "auto"
                 ) -> tuple[subprocess.Popen, str]:
    """`streamlit run streamlit_app.py` serving the bundle `model` (the only one offered) on a
    free port: (process, url)."""
    port = free_port()
    env = dict(os.environ, PNEUMO_MODELS_DIR=str(Path(model).resolve()), TF_CPP_MIN_LOG_LEVEL="2",
               PNEUMO_RUNTIME=runtime)
    server = subprocess.Popen(
        [python, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return server, f"http://127.0.0.1:{port}"


def upload_and_wait(page, film: Path, previous: str | None) -> str:
    """Upload `film`; return the answer once it differs from `previous`: the probability text,
    or "not assessed: <file>" when the gate refuses the film (then there is no heatmap)."""
    page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(str(film))
    metric = page.get_by_test_id("stMetric").filter(has_text="Pneumonia probability")
    refused = page.get_by_text("Not assessed (outside the model's population)")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if metric.count() and page.get_by_test_id("stImage").filter(has_text="Heatmap overlay").count():
            value = metric.get_by_test_id("stMetricValue").inner_text()
            if value != previous:
                return value
        if refused.count() and f"not assessed: {film.name}" != previous:
            return f"not assessed: {film.name}"
        time.sleep(0.02)
    raise TimeoutError("no answer on screen")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(REPO / "models" / "default"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--runtime", default="auto", choices=["auto", "litert", "keras"])
    parser.add_argument("--python", default=sys.executable, help="interpreter for the server")
    args = parser.parse_args()
    shared = Path(os.environ.get("PNEUMO_SHARED", REPO.parent / "shared"))
    films = sorted((shared / "data" / "chest_xray" / "val").rglob("*.jpeg"))[:2]
    start = time.monotonic()
    server, url = start_server(args.model, args.python, args.runtime)
    from playwright.sync_api import sync_playwright

    try:
        wait_healthy(url)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.goto(f"{url}/predict")
            page.get_by_role("heading", name="Predict one chest X-ray").first.wait_for()
            first = upload_and_wait(page, films[0], None)
            cold = time.monotonic() - start
            t0 = time.monotonic()
            upload_and_wait(page, films[1], first)
            warm = time.monotonic() - t0
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=15)
    print(json.dumps({"runtime": args.runtime, "python": args.python,
                      "cold_start_to_first_prediction_s": round(cold, 1),
                      "upload_to_prediction_with_heatmap_s": round(warm, 2)}))


if __name__ == "__main__":
    main()
