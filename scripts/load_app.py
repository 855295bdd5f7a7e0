"""Load test: several browser sessions uploading films to one dashboard server at once.

    python scripts/load_app.py [--sessions 8] [--films 10] [--model models/default]
                               [--runtime auto|keras] [--python PYTHON] [--fit N]

Starts `streamlit run streamlit_app.py`, opens `--sessions` headless Chromium pages (Debian's
chromium through Playwright, one browser context each) on the Predict page, and in each one
uploads `--films` films one after another, waiting each time for that film's answer: its
probability and heatmap, or the "not assessed" warning. Films come from
<shared>/data/chest_xray/val and calibration. Prints one JSON object: errors (with what each
session saw), upload-to-result p50/p95/max in seconds, and the server's peak resident memory,
alone and with the processes it started. With `--fit N` one more visitor, meanwhile, uploads a
ZIP of N calibration/ films a class on Evaluate and runs "Fit a threshold to these films" with
its defaults (the fit's job is one of those processes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from a checkout

from bench_app import ARGS, REPO, start_server, wait_healthy  # noqa: E402

ANSWER_TIMEOUT = 180.0  # seconds one upload may take under load before it counts as an error
FIT_TIMEOUT = 900.0  # seconds the fit session may take (evaluation, then the fit)


def pick_films(shared: Path, n: int) -> list[Path]:
    """`n` distinct real films: the full-size val/ films first, then calibration/."""
    data = shared / "data" / "chest_xray"
    films = sorted((data / "val").rglob("*.jpeg")) + sorted((data / "calibration").rglob("*.jpeg"))
    if len(films) < n:
        raise SystemExit(f"need {n} films under {data}, found {len(films)}")
    return films[:n]


def _status(pid: int) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children of any of its threads, and theirs), from /proc:
    the dashboard starts a fit's job from a script thread, not from its main thread."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            ppid = _status(int(entry.name)).get("PPid", "").strip()
            if ppid.isdigit():
                parents.setdefault(int(ppid), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rss_mb(pid: int, tree: bool = False) -> float:
    """Resident memory (MB) of the process `pid`, or (`tree`) of it and all its descendants."""
    total = 0.0
    for p in [pid] + (descendants(pid) if tree else []):
        rss = _status(p).get("VmRSS", "").split()
        total += int(rss[0]) / 1024 if rss else 0.0
    return total


class PeakMemory(threading.Thread):
    """Samples the server's RSS, alone and with the processes it started, every 0.2 s."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.tree_peak = pid, 0.0, 0.0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            self.tree_peak = max(self.tree_peak, rss_mb(self.pid, tree=True))
            time.sleep(0.2)

    def stop(self) -> tuple[float, float]:
        self._halt.set()
        self.join()
        return self.peak, self.tree_peak


async def answer(page, previous_src: str | None) -> tuple[str, str]:
    """Wait for a new film's answer: ("assessed"|"not assessed", the original image's src).

    A new upload shows a new "Original" image (its media URL follows the bytes); the answer
    is complete when the heatmap overlay is there too, or the not-assessed warning."""
    deadline = time.monotonic() + ANSWER_TIMEOUT
    original = page.get_by_test_id("stImage").filter(has_text="Original").locator("img")
    heatmap = page.get_by_test_id("stImage").filter(has_text="Heatmap overlay")
    refused = page.get_by_text("Not assessed (outside the model's population)")
    while time.monotonic() < deadline:
        if await original.count():
            src = await original.first.get_attribute("src")
            if src and src != previous_src:
                if await heatmap.count():
                    return "assessed", src
                if await refused.count():
                    return "not assessed", src
        errors = page.get_by_test_id("stException")
        if await errors.count():
            raise RuntimeError("traceback on the page: " + (await errors.first.inner_text())[:200])
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no answer within {ANSWER_TIMEOUT:.0f} s")


async def session(browser, url: str, films: list[Path], index: int) -> dict:
    context = await browser.new_context(viewport={"width": 1400, "height": 1400})
    page = await context.new_page()
    times, errors, answers = [], [], []
    try:
        await page.goto(f"{url}/predict", timeout=120_000)
        await page.get_by_role("heading", name="Predict one chest X-ray").first.wait_for(
            timeout=120_000)
        previous = None
        for film in films:
            started = time.perf_counter()
            await page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(
                str(film))
            try:
                kind, previous = await answer(page, previous)
            except (TimeoutError, RuntimeError) as exc:
                errors.append(f"session {index}, {film.name}: {exc}")
                continue
            times.append(time.perf_counter() - started)
            answers.append(kind)
    except Exception as exc:  # noqa: BLE001 - a load test reports, it does not stop
        errors.append(f"session {index}: {type(exc).__name__}: {exc}")
    finally:
        await context.close()
    return {"times": times, "errors": errors, "answers": answers}


async def fit_session(browser, url: str, archive: Path) -> dict:
    """One visitor on Evaluate: upload a labelled ZIP, wait for its AUC, then "Fit the new
    bundle" (the defaults: threshold and temperature only) and wait for its outcome."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1400})
    page = await context.new_page()
    page.set_default_timeout(FIT_TIMEOUT * 1000)
    report: dict = {"errors": []}
    try:
        await page.goto(f"{url}/evaluate")
        await page.get_by_role("heading", name="Evaluate on your own films").first.wait_for()
        started = time.perf_counter()
        await page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(
            str(archive))
        await page.get_by_test_id("stMetric").filter(has_text="ROC AUC").first.wait_for()
        report["evaluate_s"] = round(time.perf_counter() - started, 1)
        await page.get_by_text("Fit a threshold to these films (a new bundle)").click()
        await page.get_by_role("button", name="Fit the new bundle").wait_for()
        started = time.perf_counter()
        await page.get_by_role("button", name="Fit the new bundle").click()
        done = page.get_by_text("fitted in").or_(page.get_by_text("Calibration failed"))
        await done.first.wait_for()
        report["fit_s"] = round(time.perf_counter() - started, 1)
        if await page.get_by_text("Calibration failed").count():
            report["errors"].append("fit: " + await page.get_by_text("Calibration failed")
                                    .first.inner_text())
    except Exception as exc:  # noqa: BLE001 - a load test reports, it does not stop
        report["errors"].append(f"fit session: {type(exc).__name__}: {exc}")
    finally:
        await context.close()
    return report


async def drive(url: str, films: list[Path], sessions: int, chromium: str,
                fit_zip: Path | None = None) -> tuple[list[dict], dict | None]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=ARGS)
        try:
            # Each session uploads the same films in a different order.
            jobs = [session(browser, url, films[i % len(films):] + films[:i % len(films)], i)
                    for i in range(sessions)]
            if fit_zip is not None:
                jobs.append(fit_session(browser, url, fit_zip))
            results = await asyncio.gather(*jobs)
            return (results[:-1], results[-1]) if fit_zip is not None else (results, None)
        finally:
            await browser.close()


def fit_archive(shared: Path, per_class: int, folder: Path) -> Path:
    """A ZIP of the first `per_class` films of each class of calibration/."""
    import zipfile

    source = shared / "data" / "chest_xray" / "calibration"
    target = folder / "fit-films.zip"
    with zipfile.ZipFile(target, "w") as archive:
        for label in ("NORMAL", "PNEUMONIA"):
            for film in sorted((source / label).iterdir())[:per_class]:
                archive.write(film, f"films/{label}/{film.name}")
    return target


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(REPO / "models" / "default"))
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--films", type=int, default=10)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--runtime", default="auto", choices=["auto", "litert", "keras"])
    parser.add_argument("--python", default=sys.executable, help="interpreter for the server")
    parser.add_argument("--fit", type=int, default=0, metavar="N",
                        help="one more visitor evaluates N calibration/ films a class and fits "
                             "a threshold to them, while the others predict")
    args = parser.parse_args(argv)
    shared = Path(os.environ.get("PNEUMO_SHARED", REPO.parent / "shared"))
    films = pick_films(shared, args.films)
    server, url = start_server(args.model, args.python, args.runtime)
    memory = PeakMemory(server.pid)
    memory.start()
    started = time.perf_counter()
    scratch = tempfile.TemporaryDirectory(prefix="pneumo-load-")
    fit_zip = fit_archive(shared, args.fit, Path(scratch.name)) if args.fit else None
    try:
        wait_healthy(url)
        results, fit = asyncio.run(drive(url, films, args.sessions, args.chromium, fit_zip))
    finally:
        peak, tree_peak = memory.stop()
        server.terminate()
        server.wait(timeout=30)
        scratch.cleanup()
    times = [t for r in results for t in r["times"]]
    errors = [e for r in results for e in r["errors"]] + (fit["errors"] if fit else [])
    print(json.dumps({
        "runtime": args.runtime, "python": args.python, "sessions": args.sessions,
        "films_per_session": args.films, "answers": len(times), "errors": len(errors),
        "error_messages": errors[:20],
        "not_assessed": sum(a == "not assessed" for r in results for a in r["answers"]),
        "upload_to_result_s": {"p50": percentile(times, 0.5), "p95": percentile(times, 0.95),
                               "max": round(max(times), 2) if times else None,
                               "mean": round(statistics.fmean(times), 2) if times else None},
        "server_peak_rss_mb": round(peak, 1),
        "server_and_jobs_peak_rss_mb": round(tree_peak, 1),
        "fit": None if fit is None else {"films_per_class": args.fit,
                                         **{k: v for k, v in fit.items() if k != "errors"}},
        "wall_s": round(time.perf_counter() - started, 1),
    }))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
