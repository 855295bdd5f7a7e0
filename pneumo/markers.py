"""Burned-in markers and collimation borders drawn onto a film.

Radiographers burn side and projection markers ("A-P", "R", "L", "PORTABLE") and text into
the corners and edges of a film; collimation leaves dark or bright bands along its borders.
Every hospital does it differently, so a model that reads them learns the hospital, not the
disease (Zech et al., PLoS Med 2018; DeGrave et al., Nat Mach Intell 2021). The same drawing
serves two jobs: augmentation that makes markers carry no label (`pneumo.augment`), and the
audit that counts decisions changed by a pasted marker (`pneumo.audit`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import cv2
import numpy as np

# What the audit pastes (the markers the issue names) and what training draws (more of them).
AUDIT_TEXTS = ("A-P", "R", "L", "PORTABLE")
TRAIN_TEXTS = AUDIT_TEXTS + ("AP", "P-A", "PA", "SUPINE", "ERECT", "SITTING", "LT", "RT",
                             "1", "2", "AM", "PM", "MOBILE", "12:30")
# Training draws with these fonts; the audit also uses two it never saw, so a model that
# learned to ignore one typeface only does not pass.
TRAIN_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_PLAIN,
               cv2.FONT_HERSHEY_TRIPLEX)
AUDIT_FONTS = TRAIN_FONTS + (cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_COMPLEX_SMALL)
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")
EDGES = ("top", "bottom", "left", "right")


@dataclass(frozen=True)
class Marker:
    """One burned-in text: where (fractions of the frame, its top-left corner), how tall
    (fraction of the frame's height), how bright (0-255), which font, and a label box."""

    text: str
    x: float
    y: float
    height: float = 0.08
    value: int = 255
    font: int = cv2.FONT_HERSHEY_SIMPLEX
    boxed: bool = False


def _text_geometry(marker: Marker, shape: tuple[int, int]) -> tuple[float, int, int, int]:
    """(font scale, thickness, text width, text height) in pixels for `marker` on `shape`."""
    height_px = max(4, int(round(marker.height * shape[0])))
    (_, base_h), _ = cv2.getTextSize(marker.text, marker.font, 1.0, 1)
    scale = height_px / max(base_h, 1)
    thickness = max(1, int(round(scale * 1.6)))
    (w, h), _ = cv2.getTextSize(marker.text, marker.font, scale, thickness)
    return scale, thickness, w, h


def burn_marker(image: np.ndarray, marker: Marker) -> np.ndarray:
    """A copy of `image` (uint8, (H, W) or (H, W, C)) with `marker` drawn, clipped to the frame."""
    out = np.ascontiguousarray(image).copy()
    shape = out.shape[:2]
    scale, thickness, w, h = _text_geometry(marker, shape)
    x = int(round(marker.x * (shape[1] - w)))
    y = int(round(marker.y * (shape[0] - h))) + h
    colour = (int(marker.value),) * (out.shape[2] if out.ndim == 3 else 1)
    if marker.boxed:  # a label box of the opposite brightness behind the text
        pad = max(1, h // 4)
        box = (255 - int(marker.value),) * len(colour)
        cv2.rectangle(out, (x - pad, y - h - pad), (x + w + pad, y + pad), box, thickness=-1)
    cv2.putText(out, marker.text, (x, y), marker.font, scale, colour, thickness, cv2.LINE_AA)
    return out


def place(where: str, inset: float = 0.02) -> tuple[float, float]:
    """(x, y) fractions that put a marker at a named corner or edge (centre of the edge)."""
    lo, hi = inset, 1.0 - inset
    spots = {"top-left": (lo, lo), "top-right": (hi, lo), "bottom-left": (lo, hi),
             "bottom-right": (hi, hi), "top": (0.5, lo), "bottom": (0.5, hi),
             "left": (lo, 0.5), "right": (hi, 0.5)}
    if where not in spots:
        raise ValueError(f"where must be one of {sorted(spots)}, received {where!r}")
    return spots[where]


def random_marker(rng: random.Random, texts: tuple[str, ...] = TRAIN_TEXTS,
                  fonts: tuple[int, ...] = TRAIN_FONTS) -> Marker:
    """A marker as films carry them: mostly at a corner or an edge, sometimes anywhere."""
    if rng.random() < 0.7:
        x, y = place(rng.choice(CORNERS + EDGES), inset=rng.uniform(0.0, 0.06))
    else:
        x, y = rng.random(), rng.random()
    bright = rng.random() < 0.8
    return Marker(text=rng.choice(texts), x=x, y=y, height=rng.uniform(0.03, 0.12),
                  value=rng.randint(200, 255) if bright else rng.randint(0, 50),
                  font=rng.choice(fonts), boxed=rng.random() < 0.15)


def border_band(image: np.ndarray, side: str, width: float, value: int) -> np.ndarray:
    """A copy of `image` with a band of `width` (fraction of the side) at `side` set to `value`:
    collimation, a film edge or a cropped border."""
    out = np.ascontiguousarray(image).copy()
    h, w = out.shape[:2]
    band_h, band_w = max(1, int(round(width * h))), max(1, int(round(width * w)))
    if side == "top":
        out[:band_h] = value
    elif side == "bottom":
        out[h - band_h:] = value
    elif side == "left":
        out[:, :band_w] = value
    elif side == "right":
        out[:, w - band_w:] = value
    else:
        raise ValueError(f"side must be one of {EDGES}, received {side!r}")
    return out
