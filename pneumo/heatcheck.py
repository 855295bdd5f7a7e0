"""Plain checks on a heatmap, for the note shown beside it.

There is no lung segmentation model here, so "outside the lung fields" is judged against a
fixed template: two ellipses where the lungs lie on a centred frontal film. It is a warning,
not a measurement: on a frontal paediatric film the corners, the top strip and the borders hold
burned-in markers ("A-P", "R"), text and collimation edges, and the model lighting those up
means the score may have been driven by something that is not lung.
"""

from __future__ import annotations

import cv2
import numpy as np

# (centre x, centre y, half-width, half-height) of each lung field, as fractions of the image.
LUNG_TEMPLATE = ((0.31, 0.50, 0.21, 0.33), (0.69, 0.50, 0.21, 0.33))
GRID = 64  # the heatmap is judged at this resolution (it came from a 7x7 map anyway)
HOT_QUANTILE = 0.95  # the hottest 5% of the map is "the hottest region"

OUTSIDE_NOTE = ("The hottest region of the heatmap lies outside the usual lung fields (an edge, "
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


def hottest_outside_lungs(heatmap: np.ndarray | None) -> bool:
    """True when most of the hottest part of `heatmap` ((H, W) in [0, 1]) is off the lungs.

    A flat or empty map (no evidence anywhere) is not flagged.
    """
    if heatmap is None:
        return False
    heat = np.nan_to_num(np.asarray(heatmap, dtype=np.float32))
    if heat.ndim != 2 or heat.size == 0 or float(heat.max() - heat.min()) < 1e-6:
        return False
    small = cv2.resize(heat, (GRID, GRID), interpolation=cv2.INTER_AREA)
    hot = small >= np.quantile(small, HOT_QUANTILE)
    inside = (hot & lung_mask(GRID, GRID)).sum()
    return bool(inside < 0.5 * hot.sum())


def colour_scale(width: int = 256, height: int = 14, colormap: int = cv2.COLORMAP_JET
                 ) -> np.ndarray:
    """The overlay's colour map as a horizontal bar (uint8 RGB), low influence on the left."""
    ramp = np.tile(np.linspace(0, 255, width).astype(np.uint8), (height, 1))
    return cv2.cvtColor(cv2.applyColorMap(ramp, colormap), cv2.COLOR_BGR2RGB)
