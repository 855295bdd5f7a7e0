"""Plain checks on a heatmap, for the note shown beside it.

There is no lung segmentation model here, so "outside the lung fields" is judged against a
fixed template: two ellipses where the lungs lie on a centred frontal film. It is a warning,
not a measurement: on a frontal paediatric film the corners, the top strip and the borders hold
burned-in markers ("A-P", "R"), text and collimation edges, and the model lighting those up
means the score may have been driven by something that is not lung.

The note beside a heatmap (`hottest_outside_lungs`) and the explanation audit
(`pneumo.audit`) read the map through the same functions (`hot_share_inside`,
`mass_share_inside`), at the same grid, so the two always agree on a film.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

# (centre x, centre y, half-width, half-height) of each lung field, as fractions of the image.
LUNG_TEMPLATE = ((0.31, 0.50, 0.21, 0.33), (0.69, 0.50, 0.21, 0.33))
GRID = 64  # the heatmap is judged at this resolution (it came from a 7x7 map anyway)
HOT_QUANTILE = 0.95  # the hottest 5% of the map is "the hottest region"

OUTSIDE_NOTE = ("The hottest region of the heatmap lies outside this film's lung fields (an edge, "
                "a corner, a burned-in marker or text?): check that the score was not driven "
                "by it.")


def lung_mask(height: int, width: int) -> np.ndarray:
    """Boolean (height, width) mask of the lung-field template."""
    yy, xx = np.mgrid[0:height, 0:width]
    u, v = (xx + 0.5) / width, (yy + 0.5) / height
    mask = np.zeros((height, width), bool)
    for cx, cy, rx, ry in LUNG_TEMPLATE:
        mask |= ((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2 <= 1.0
    return mask


def heat_grid(heatmap: np.ndarray | None) -> np.ndarray | None:
    """`heatmap` ((H, W), any size) averaged down to GRID x GRID float32; None for no map, an
    empty one or a flat one (max == min: no evidence anywhere, so no "where")."""
    if heatmap is None:
        return None
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 2 or heat.size == 0:
        return None
    # INTER_AREA averages: the grid keeps the map's mass where it was, whatever the film's size.
    # Averaged first, cleaned after: a NaN anywhere reaches the grid, and only then is the full
    # map cleaned (nan_to_num over a 900-px map cost 2.5 ms a film; the grid is 64 x 64).
    small = cv2.resize(heat, (GRID, GRID), interpolation=cv2.INTER_AREA)
    if not np.isfinite(small).all():
        heat = np.nan_to_num(heat)
        small = cv2.resize(heat, (GRID, GRID), interpolation=cv2.INTER_AREA)
    if float(heat.max() - heat.min()) < 1e-6:
        return None
    return small


def grid_mask(mask: np.ndarray | None) -> np.ndarray:
    """A lung-field mask at GRID x GRID: the template by default; a mask of another size is
    averaged down and a cell counts as inside when at least half of it is."""
    if mask is None:
        return lung_mask(GRID, GRID)
    mask = np.asarray(mask)
    if mask.shape == (GRID, GRID) and mask.dtype == bool:
        return mask
    return cv2.resize(mask.astype(np.float32), (GRID, GRID), interpolation=cv2.INTER_AREA) >= 0.5


def hot_share_inside(heatmap: np.ndarray | None, mask: np.ndarray | None = None) -> float:
    """The share of the hottest 5% of `heatmap` that lies inside `mask` (default: the lung
    template), judged on the GRID; NaN for no map or a flat one."""
    small = heat_grid(heatmap)
    if small is None:
        return float("nan")
    hot = small >= np.quantile(small, HOT_QUANTILE)
    return float((hot & grid_mask(mask)).sum() / hot.sum())


def mass_share_inside(heatmap: np.ndarray | None, mask: np.ndarray | None = None) -> float:
    """sum(heat x mask) / sum(heat) on the GRID (default mask: the lung template); NaN for no
    map or a flat one (an all-zero map has no mass to share out)."""
    small = heat_grid(heatmap)
    if small is None:
        return float("nan")
    small = np.clip(small, 0.0, None)  # a heatmap is >= 0; guard a stray negative
    total = float(small.sum())
    if not total > 0:
        return float("nan")
    return float(small[grid_mask(mask)].sum() / total)


def hottest_outside_lungs(heatmap: np.ndarray | None, mask: np.ndarray | None = None) -> bool:
    """True when most of the hottest part of `heatmap` ((H, W) in [0, 1]) is off the lungs
    (`mask`, default the template).

    A flat or empty map (no evidence anywhere) is not flagged.
    """
    share = hot_share_inside(heatmap, mask)
    return bool(share < 0.5)  # NaN (flat map) compares False: not flagged


def colour_scale(width: int = 256, height: int = 14, colormap: int = cv2.COLORMAP_JET
                 ) -> np.ndarray:
    """The overlay's colour map as a horizontal bar (uint8 RGB), low influence on the left."""
    ramp = np.tile(np.linspace(0, 255, width).astype(np.uint8), (height, 1))
    return cv2.cvtColor(cv2.applyColorMap(ramp, colormap), cv2.COLOR_BGR2RGB)


def heat_figures(heatmap: np.ndarray | None, mask: np.ndarray | None = None) -> dict[str, Any]:
    """mass_inside, hot_share, hot_inside and flat_heatmap of one map against `mask` (any
    size; None: the template), on the `pneumo.heatcheck` grid. A flat or zero map has NaN
    figures (there is no "where" to judge) and flat_heatmap True."""
    on_grid = grid_mask(mask) if mask is not None else lung_mask(GRID, GRID)
    mass = mass_share_inside(heatmap, on_grid)
    hot = hot_share_inside(heatmap, on_grid)
    flat = not (np.isfinite(mass) and np.isfinite(hot))
    return {"mass_inside": np.nan if flat else mass, "hot_share": np.nan if flat else hot,
            "hot_inside": np.nan if flat else float(hot >= 0.5), "flat_heatmap": flat}
