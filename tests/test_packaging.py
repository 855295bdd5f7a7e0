"""`pip install .` gives a whole package: every module of pneumo/ (subpackages included) and the
`pneumo` command, importable from outside the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def source_modules() -> list[str]:
    """Dotted names of every module under the checkout's pneumo/."""
    names = []
    for path in sorted((REPO / "pneumo").rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = path.relative_to(REPO).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The checkout installed with `pip install --no-deps --target` into a clean folder. The
    sources are copied first so the build leaves nothing (build/, *.egg-info) in the checkout;
    no index is asked (the build uses this environment's setuptools)."""
    work = tmp_path_factory.mktemp("install")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "pneumo", source / "pneumo",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    target = work / "target"
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                          "--no-build-isolation", "--disable-pip-version-check", "--quiet",
                          "--target", str(target), str(source)],
                         capture_output=True, text=True, cwd=work)
    assert run.returncode == 0, run.stdout + run.stderr
    return target


def _outside(target: Path) -> dict[str, str]:
    """An environment that finds pneumo in `target` only (not the checkout)."""
    return {**os.environ, "PYTHONPATH": str(target), "TF_CPP_MIN_LOG_LEVEL": "3"}


def test_every_module_is_installed_and_imports_from_outside_the_checkout(installed):
    modules = [m for m in source_modules() if m != "pneumo.__main__"]  # __main__ runs the CLI
    missing = [m for m in source_modules()
               if not (installed / Path(*m.split("."))).with_suffix(".py").is_file()
               and not (installed / Path(*m.split(".")) / "__init__.py").is_file()]
    assert not missing, f"pip install . leaves out {missing}"
    script = f"""
import importlib, json, sys
found = {{}}
for name in {modules!r}:
    found[name] = importlib.import_module(name).__file__
print(json.dumps(found))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=_outside(installed), cwd=installed.parent)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    elsewhere = {m: f for m, f in found.items()
                 if not Path(f).resolve().is_relative_to(installed.resolve())}
    assert not elsewhere, f"imported from outside the install: {elsewhere}"


def test_the_pneumo_command_is_installed(installed):
    command = installed / "bin" / "pneumo"
    assert command.is_file(), "pip install . did not install the `pneumo` command"
    run = subprocess.run([sys.executable, str(command), "--help"], capture_output=True,
                         text=True, env=_outside(installed), cwd=installed.parent)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "train" in run.stdout and "calibrate" in run.stdout
