"""docs/architecture.md stays true: the modules it names exist, and it names every module."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "architecture.md"
PACKAGES = ("pneumo", "app")


def named_modules() -> set[str]:
    """Every `pneumo/….py` or `app/….py` path the page names (in backticks or not)."""
    text = DOC.read_text(encoding="utf-8")
    return set(re.findall(r"\b(?:pneumo|app)/[\w/]*\w\.py\b", text))


def existing_modules() -> set[str]:
    """Every module of the packages on disk now (compared at run time: a module added or
    removed since the page was written makes the test fail)."""
    return {p.relative_to(REPO).as_posix() for package in PACKAGES
            for p in (REPO / package).rglob("*.py") if "__pycache__" not in p.parts}


def test_every_module_named_exists():
    missing = sorted(m for m in named_modules() if not (REPO / m).is_file())
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_every_module_is_named():
    unnamed = sorted(existing_modules() - named_modules())
    assert not unnamed, f"docs/architecture.md does not name: {unnamed}"
