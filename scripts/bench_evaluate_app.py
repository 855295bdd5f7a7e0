"""Time "Evaluate on your films" as a user meets it, and check its figures against the CLI.

    python scripts/bench_evaluate_app.py [--model models/default] [--data FOLDER]

Zips FOLDER (default <shared>/data/chest_xray/calibration: NORMAL/ and PNEUMONIA/), starts
`streamlit run streamlit_app.py`, opens the Evaluate page in Debian's Chromium (Playwright),
uploads the ZIP and times it until the AUC is on screen (the model is loaded first, on a warm-up
upload of two films, so the figure is the evaluation itself). Then runs
`python -m pneumo evaluate` on the same folder and prints one JSON object with both.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from a checkout

from bench_app import ARGS, REPO, start_server, wait_healthy  # noqa: E402


def make_zip(folder: Path, target: Path, limit: int | None = None) -> int:
    n = 0
    with zipfile.ZipFile(target, "w") as archive:
        for label in ("NORMAL", "PNEUMONIA"):
            for film in sorted((folder / label).iterdir())[:limit]:
                archive.write(film, f"{folder.name}/{label}/{film.name}")
                n += 1
    return n


def metric(tab, label: str) -> str:
    box = tab.get_by_test_id("stMetric").filter(has_text=label).first
    box.wait_for()
    return box.get_by_test_id("stMetricValue").inner_text()


def upload(tab, url: str, archive: Path) -> float:
    """Seconds from choosing the file to the AUC on screen, on a fresh Evaluate page."""
    tab.goto(f"{url}/evaluate")
    tab.get_by_role("heading", name="Evaluate on your own films").first.wait_for()
    started = time.perf_counter()
    tab.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(str(archive))
    metric(tab, "ROC AUC")
    return time.perf_counter() - started


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(REPO / "models" / "default"))
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "chest_xray" /
                                              "calibration"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    data = Path(args.data)
    tmp = Path(tempfile.mkdtemp())
    n = make_zip(data, tmp / f"{data.name}.zip")
    make_zip(data, tmp / "warm-up.zip", limit=1)
    server, url = start_server(args.model)
    try:
        wait_healthy(url)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=ARGS)
            tab = browser.new_page(viewport={"width": 1400, "height": 1000})
            tab.set_default_timeout(600_000)
            warm = upload(tab, url, tmp / "warm-up.zip")
            seconds = upload(tab, url, tmp / f"{data.name}.zip")
            shown = {k: metric(tab, k) for k in ("ROC AUC", "Sensitivity", "Specificity")}
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    started = time.perf_counter()
    cli = subprocess.run([sys.executable, "-m", "pneumo", "evaluate", "--model", args.model,
                          "--data", str(data)], cwd=REPO, capture_output=True, text=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), check=True)
    cli_seconds = time.perf_counter() - started
    figures = json.loads(cli.stdout.strip().splitlines()[-1])
    print(json.dumps({
        "films": n, "app_seconds": round(seconds, 1), "warm_up_seconds": round(warm, 1),
        "app": shown, "cli_seconds": round(cli_seconds, 1),
        "cli": {k: round(figures[k], 4) for k in ("auc", "sensitivity", "specificity")},
        "auc_difference": abs(float(shown["ROC AUC"]) - figures["auc"]),
    }))


if __name__ == "__main__":
    main()
