"""Rendering of heatmaps for people: colour maps, overlays on the film, PNG files.

`pneumo.explain` computes the maps (float arrays in [0, 1]); this module only draws them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .errors import ConfigError, ImageError

COLORMAPS = ("jet", "turbo", "inferno", "magma", "plasma", "viridis", "hot", "bone")

def _colormap_id(name: str) -> int:
    if name not in COLORMAPS:
        raise ConfigError(f"unknown colormap {name!r}; choose one of {COLORMAPS}")
    return getattr(cv2, f"COLORMAP_{name.upper()}")


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W) float in [0, 1] or uint8, or (H, W, 3) uint8 -> uint8 RGB (H, W, 3).

    The one conversion from a film to display pixels (overlays and reports).
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3) or arr.size == 0:
        raise ImageError(f"expected an (H, W) or (H, W, 3) image, received shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.nan_to_num(arr.astype(np.float32), nan=0.0)
        arr = np.clip(np.rint(np.clip(arr, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr if arr.ndim == 3 else np.repeat(arr[:, :, None], 3, axis=2))


def fit_within(image: np.ndarray, side: int) -> np.ndarray:
    """`image` (H, W[, C]) shrunk so its longer side is at most `side` (area interpolation,
    aspect kept); unchanged when it already fits. The one display resize: the Predict and
    Batch pages, the Evaluate gallery's thumbnails and the report."""
    arr = np.asarray(image)
    scale = side / max(arr.shape[:2])
    if scale >= 1:
        return arr
    size = (max(1, round(arr.shape[1] * scale)), max(1, round(arr.shape[0] * scale)))
    return cv2.resize(arr, size, interpolation=cv2.INTER_AREA)


def overlay(gray01: np.ndarray, heatmap: np.ndarray, opacity: float = 0.4,
            colormap: str = "jet") -> np.ndarray:
    """Blend a colour-mapped heatmap over a grayscale film -> uint8 RGB (H, W, 3).

    `gray01`: (H, W) float in [0, 1] or uint8 (an (H, W, 3) RGB image is accepted too).
    `heatmap`: (h, w) in [0, 1]; resized (bilinear) to (H, W) if its size differs.
    `opacity`: 0 returns the film as RGB, 1 the pure colour map.
    """
    try:
        opacity = float(opacity)
    except (TypeError, ValueError):
        raise ConfigError(f"opacity must be a number in [0, 1], received {opacity!r}") from None
    if not 0.0 <= opacity <= 1.0:
        raise ConfigError(f"opacity must be in [0, 1], received {opacity}")
    cmap = _colormap_id(colormap)

    base = to_rgb_uint8(gray01)

    heat = np.asarray(heatmap)
    if heat.ndim != 2 or heat.size == 0:
        raise ImageError(f"expected a 2-D heatmap, received shape {heat.shape}")
    heat = np.nan_to_num(heat.astype(np.float32), nan=0.0)
    h, w = base.shape[:2]
    if heat.shape != (h, w):
        heat = cv2.resize(heat, (w, h), interpolation=cv2.INTER_LINEAR)
    heat8 = np.clip(np.rint(np.clip(heat, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)
    colour = cv2.cvtColor(cv2.applyColorMap(heat8, cmap), cv2.COLOR_BGR2RGB)

    if opacity == 0.0:
        return np.ascontiguousarray(base)
    if opacity == 1.0:
        return colour
    blended = (1.0 - opacity) * base.astype(np.float32) + opacity * colour.astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def thumbnail(gray01: np.ndarray, heatmap: np.ndarray | None, side: int,
              opacity: float = 0.4) -> np.ndarray:
    """A small RGB picture of a film (longer side at most `side`) with its heatmap over it,
    or the film alone when there is none: the Evaluate page's error gallery."""
    small = fit_within(gray01, side)
    return overlay(small, heatmap, opacity) if heatmap is not None else to_rgb_uint8(small)


def save_heatmap_png(path, gray01: np.ndarray, heatmap: np.ndarray, opacity: float = 0.4,
                     colormap: str = "jet") -> Path:
    """Write `overlay(gray01, heatmap, opacity)` as a PNG; returns the path written."""
    rgb = overlay(gray01, heatmap, opacity=opacity, colormap=colormap)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - PNG encoding of a uint8 RGB array does not fail
        raise OSError(f"could not encode the heatmap PNG for {path}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())
    return path


def draw_outline(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (255, 255, 255),
                 thickness: int | None = None) -> np.ndarray:
    """A copy of `rgb` (uint8 (H, W, 3)) with the outline of `mask` (bool, any size: the lung
    fields) drawn over it, so a reader sees where the heatmap is judged."""
    out = np.ascontiguousarray(rgb).copy()
    h, w = out.shape[:2]
    small = cv2.resize(np.asarray(mask, np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, colour, thickness or max(1, round(max(h, w) / 250)),
                     cv2.LINE_AA)
    return out
