"""How figures are written on the pages: numbers, ranges, confidence intervals, sources.

Plain functions of values, no Streamlit: every page writes a figure the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["fmt", "fmt_range", "fmt_ci", "site_caption"]


def site_caption(manifest: dict[str, Any]) -> str:
    """Where a calibrated bundle's headline figures come from, with n."""
    source = manifest.get("calibrated_from") or {}
    counts = source.get("n_per_class") or {}
    n = sum(v for v in counts.values() if isinstance(v, int))
    return (f"New patients: {n or '?'} films ({counts.get('NORMAL', '?')} normal, "
            f"{counts.get('PNEUMONIA', '?')} pneumonia; {source.get('n_patients', '?')} patients) "
            f"of `{Path(str(source.get('data', '?'))).name}`, cross-validated by patient "
            "(the last layer, temperature and threshold were fitted on the other folds)")


def fmt(value: Any, digits: int = 3) -> str:
    """A metric for display: nan/None -> "n/a"."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if v != v else f"{v:.{digits}f}"


def fmt_range(ci: Any) -> str:
    """[low, high] -> "low–high", or "n/a"."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2 or "n/a" in (fmt(ci[0]), fmt(ci[1])):
        return "n/a"
    return f"{fmt(ci[0])}–{fmt(ci[1])}"


def fmt_ci(ci: Any) -> str:
    """[low, high] -> " (95% CI low–high)", or "" when unknown."""
    text = fmt_range(ci)
    return "" if text == "n/a" else f" (95% CI {text})"
