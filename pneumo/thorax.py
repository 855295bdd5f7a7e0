"""The input restricted to the thorax: a film cropped to its lung fields' box, and back.

A bundle trained with `data.thorax_crop` sees every film cropped to the bounding box of its lung
fields (`pneumo.lungs`, the template's box when the localiser falls back) widened by
`THORAX_MARGIN` of the box on each side, then stretched back to the model's square input. The
crop acts on the model input (`pneumo.preprocess.to_model_input`'s 224 px, q75 JPEG film), so a
training film (stored at 224 px) and a full-size upload are cut and resized the same way: one
preprocessing, training and serving alike.

Why on the model input and not on the full-size film: the training films exist only at 224 px.
Cutting a full-size upload at its own resolution would give it sharper lungs than any training
film had.

The heatmap of a cropped input covers the crop only; `paste_back` puts it where the crop came
from in the full frame, zero outside (the map is not reweighted: the model never saw outside).
"""

from __future__ import annotations

import cv2
import numpy as np

# Share of the lung box added on each side. The box is the localiser's convex fields, which can
# end inside a dense (white) base or at the costophrenic angle; measured with the shipped model
# applied to crops it was not trained on (calibration/, n = 328): no margin cut lung and lost AUC
# (0.982 -> 0.976), 0.08 and 0.25 kept it (0.986, 0.982). 0.10 was set after that check and
# before any training with the crop (not tuned further).
THORAX_MARGIN = 0.10
MIN_SHARE = 0.5  # a box narrower or shorter than this share of the frame is widened to it

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1), fractions of the frame


def thorax_box(x: np.ndarray, margin: float = THORAX_MARGIN) -> Box:
    """The crop of one model input (S, S, 3) or (S, S) uint8: its lung box plus `margin`,
    inside the frame, at least `MIN_SHARE` of it in each direction."""
    from .lungs import lung_fields

    gray = x[..., 0] if x.ndim == 3 else x
    x0, y0, x1, y1 = lung_fields(gray).box()
    x0, x1 = _widen(x0, x1, margin)
    y0, y1 = _widen(y0, y1, margin)
    return (x0, y0, x1, y1)


def _widen(lo: float, hi: float, margin: float) -> tuple[float, float]:
    """[lo, hi] grown by `margin` of its length each side, at least MIN_SHARE long, in [0, 1]."""
    grow = margin * (hi - lo)
    lo, hi = lo - grow, hi + grow
    short = MIN_SHARE - (hi - lo)
    if short > 0:
        lo, hi = lo - short / 2, hi + short / 2
    if lo < 0:
        lo, hi = 0.0, min(1.0, hi - lo)
    if hi > 1:
        lo, hi = max(0.0, lo - (hi - 1)), 1.0
    return float(lo), float(hi)


def pixel_box(box: Box, height: int, width: int) -> tuple[int, int, int, int]:
    """`box` in whole pixels of an (height, width) frame: (x0, y0, x1, y1), at least 1 px."""
    x0, x1 = int(round(box[0] * width)), int(round(box[2] * width))
    y0, y1 = int(round(box[1] * height)), int(round(box[3] * height))
    x0, y0 = min(x0, width - 1), min(y0, height - 1)
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def crop_to(x: np.ndarray, box: Box) -> np.ndarray:
    """Cut `box` out of a model input and stretch it back to the input's size (same dtype)."""
    height, width = x.shape[:2]
    x0, y0, x1, y1 = pixel_box(box, height, width)
    part = np.ascontiguousarray(x[y0:y1, x0:x1])
    out = cv2.resize(part, (width, height), interpolation=cv2.INTER_LINEAR)
    return out.reshape(x.shape)


def thorax_crop(x: np.ndarray) -> tuple[np.ndarray, Box]:
    """(the model input cropped to its thorax, the box it was cut from)."""
    box = thorax_box(x)
    return crop_to(x, box), box


def paste_back(heat: np.ndarray, box: Box, size: tuple[int, int]) -> np.ndarray:
    """A heatmap of a cropped input as a map of the whole frame of (H, W) = `size`: resized
    into the box the crop came from, zero elsewhere. float32."""
    height, width = size
    x0, y0, x1, y1 = pixel_box(box, height, width)
    out = np.zeros((height, width), np.float32)
    out[y0:y1, x0:x1] = cv2.resize(heat.astype(np.float32), (x1 - x0, y1 - y0),
                                   interpolation=cv2.INTER_LINEAR)
    return out
