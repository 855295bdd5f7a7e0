"""How figures are written on the pages: numbers, ranges, confidence intervals, sources.

Plain functions of values, no Streamlit: every page writes a figure the same way.
"""

from __future__ import annotations

from typing import Any

from pneumo.modelcard import format_number

__all__ = ["fmt", "fmt_range", "fmt_ci"]


def fmt(value: Any, digits: int = 3) -> str:
    """A metric for display: nan/None -> "n/a"."""
    return format_number(value, digits)


def fmt_range(ci: Any) -> str:
    """[low, high] -> "low–high", or "n/a"."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2 or "n/a" in (fmt(ci[0]), fmt(ci[1])):
        return "n/a"
    return f"{fmt(ci[0])}–{fmt(ci[1])}"


def fmt_ci(ci: Any) -> str:
    """[low, high] -> " (95% CI low–high)", or "" when unknown."""
    text = fmt_range(ci)
    return "" if text == "n/a" else f" (95% CI {text})"
