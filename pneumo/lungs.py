"""Per-film lung-field localiser: classical image processing, no model, no weights.

`lung_fields(image)` finds the two lung fields on a frontal chest film so that "is the hottest
part of the heatmap on the lungs?" can be judged against this film rather than against the fixed
template in `pneumo.heatcheck` (two ellipses where the lungs lie on a centred film). Films are
framed differently (some include the abdomen or the arms, some are rotated slightly), so the
template is the fallback, not the answer: whenever a sanity check fails, the template comes back
with the reason.

Method (all at a fixed 192x192 working size, the film squashed like the model's input):

1. Grayscale, percentile stretch (1st-99th), CLAHE for local contrast (hazy pneumonia lungs).
2. A grey-level opening with a vertical line removes the thin, mostly horizontal ribs, so the
   aerated lung is one dark region instead of dark stripes between bright ribs; Otsu's threshold
   on the central part of the frame separates the dark (aerated) from the bright (mediastinum,
   diaphragm, abdomen, bone).
3. A marker-controlled watershed on the smoothed film shares the frame among a seed per lung
   (the darkest quarter of a core region near each template centre, preferring pixels that
   are not joined by dark to the frame's edge - the gap beside an arm is as dark as lung) and
   the "not lung" seeds (the frame's edge and the brightest tissue), so dark air outside the
   chest (beside the arms, above the shoulders) that touches a lung is cut off at the ridge
   (chest wall, clavicle) between them. The mediastinum's column (the brightest column band in
   the middle) splits the sides.
4. Per side: the dark part of the side's watershed basin (Otsu within the basin, never stricter
   than the global threshold), opened to cut thin bridges, the piece holding the seeds, convex
   hull - the hull keeps consolidated (white) lung between aerated parts inside the field.
5. A dense lower lobe (any dense zone that shortens or shrinks one side) makes one field much
   shorter or smaller than the other: it is completed with the other side's field mirrored
   about the mediastinum's column (`LungFields.note` says so). A side with no aerated lung at
   all is not invented: template.
6. Sanity checks (`_check`); any failure returns the template with the reason.

Deterministic (no randomness; ties in the watershed are broken by pixel order) and fast (about
15-20 ms of CPU a 224 px film on one thread, most of it in the watershed; 25-45 ms for a
full-size film). Measured on the data, the known failures and the fallback rates are in
docs/lung_fields.md (`scripts/lung_sheet.py` draws the contact sheet and prints the figures).

Needs scikit-image (its marker watershed) besides OpenCV and NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from skimage.segmentation import watershed

from .heatcheck import LUNG_TEMPLATE, lung_mask

N = 192  # working size (pixels, square)
MIN_SIDE = 32  # smaller input is not worth looking at: template
MIN_RANGE = 0.03  # 1st-99th percentile range below this (of full scale): a blank image
CLAHE_CLIP, CLAHE_TILES = 2.0, 4
RIB_LINE = 13  # vertical opening length at N (removes ribs thinner than this)
SMOOTH = 1.5  # Gaussian sigma of the watershed relief, at N
OPEN_R = 4  # radius of the opening that cuts thin bridges off each side's region
BRIGHT = 0.5  # "not lung" seeds: above threshold + BRIGHT * (brightest - threshold)
SEED_QUANTILE = 25  # lung seeds: the darkest quarter of each core region
MIN_SEED = 20  # fewest seed pixels (at N) away from the frame's edge to prefer those
MIN_SIDE_AREA = 0.012  # a side below this share of the frame is "not found"
MID_RANGE = (0.35, 0.65)  # where the midline is looked for
MID_GAP = 3  # each side's region stops this far (pixels at N) from the midline
MIRROR_HEIGHT = 0.82  # complete a side shorter than this share of the other's height
MIRROR_AREA = 0.65  # ... or smaller than this share of the other's area
# Sanity checks on the final fields.
AREA_RANGE = (0.10, 0.60)  # both fields together, share of the frame
MIN_AREA_RATIO = 0.35  # smaller field / larger field
MIN_HEIGHT = 0.40  # each field's height, share of the frame
MIN_ASPECT = 1.4  # each field's height / width (normal fields: 1.6 and up)
CENTROID_Y = (0.22, 0.72)  # each field's centroid, share of the frame's height
MAX_BORDER = 0.25  # share of a field's outline within 2 px of the frame's edge
MIN_CONTRAST = 0.15  # fields must be darker than the tissue between them (stretched scale;
#                      films: 0.2 and up, 1st percentile)
MIN_GAP = 0.04  # the mediastinum between the fields, share of the width (films: 0.06 and up)
MIN_TEMPLATE_OVERLAP = 0.35  # share of the fields inside the template, grown by 25 %

_yy, _xx = np.mgrid[0:N, 0:N]
_U, _V = (_xx + 0.5) / N, (_yy + 0.5) / N
_CORES = [((_U - cx) / 0.11) ** 2 + ((_V - 0.47) / 0.2) ** 2 <= 1.0 for cx in (0.30, 0.70)]
_CENTRAL = (_U > 0.12) & (_U < 0.88) & (_V > 0.15) & (_V < 0.85)
_ENVELOPE = np.zeros((N, N), bool)
for _cx, _cy, _rx, _ry in LUNG_TEMPLATE:
    _ENVELOPE |= ((_U - _cx) / (1.25 * _rx)) ** 2 + ((_V - _cy) / (1.25 * _ry)) ** 2 <= 1.0
_EDGE = np.zeros((N, N), bool)
_EDGE[:2, :] = _EDGE[-2:, :] = _EDGE[:, :2] = _EDGE[:, -2:] = True


@dataclass
class LungFields:
    """The lung fields of one film.

    `mask`: bool (H, W), both fields, the input's shape. `source`: "localised" (found on this
    film) or "template" (the fixed template of `pneumo.heatcheck.lung_mask`). `reason`: why it
    fell back to the template ("" when localised). `left` / `right`: bool (H, W) masks of the
    field on the image's left (the patient's right on a frontal film) and on the image's right.
    `outlines`: each field's convex outline as an (n, 2) float array of (x, y) fractions of the
    width and height (empty for the template). `note`: what was done beyond plain localisation
    (a side completed from the mirrored other side), or "".
    """

    mask: np.ndarray
    source: str
    reason: str
    left: np.ndarray
    right: np.ndarray
    outlines: tuple[np.ndarray, ...] = field(default=(), repr=False)
    note: str = ""

    @property
    def localised(self) -> bool:
        return self.source == "localised"

    def box(self) -> tuple[float, float, float, float]:
        """Bounding box of both fields as fractions of the frame: (x0, y0, x1, y1)."""
        h, w = self.mask.shape
        x, y, bw, bh = cv2.boundingRect(self.mask.astype(np.uint8))
        if bw == 0 or bh == 0:
            return (0.0, 0.0, 1.0, 1.0)
        return (x / w, y / h, (x + bw) / w, (y + bh) / h)


def template_fields(height: int, width: int, reason: str) -> LungFields:
    """The fixed template as a `LungFields`, with `reason` for using it."""
    mask = lung_mask(height, width)
    left = mask.copy()
    left[:, (width + 1) // 2:] = False  # the template's ellipses meet at the midline
    halves = (left, mask & ~left)
    return LungFields(mask, "template", reason, halves[0], halves[1])


def lung_fields(image: np.ndarray) -> LungFields:
    """Find the two lung fields of a frontal chest film.

    `image`: (H, W) or (H, W, C) array (C = 1, 3 or 4, RGB order; alpha ignored), uint8,
    uint16 or float in [0, 1]. Any size; the mask comes back at (H, W). Never raises for a
    well-formed array: whatever cannot be localised gets the template, with the reason.
    """
    gray = _to_gray(image)
    height, width = gray.shape
    if min(height, width) < MIN_SIDE:
        return template_fields(height, width, f"image too small ({width}x{height} px)")
    found, reason = _localise(gray)
    if found is None:
        return template_fields(height, width, reason)
    hulls, note = found
    masks, outlines = [], []
    for hull in hulls:
        frac = (hull.astype(np.float64) + 0.5) / N  # pixel centres at N -> fractions
        pts = np.round(frac * (width, height) - 0.5).astype(np.int32)
        m = np.zeros((height, width), np.uint8)
        cv2.fillPoly(m, [pts], 1)
        masks.append(m.astype(bool))
        outlines.append(frac)
    return LungFields(masks[0] | masks[1], "localised", "", masks[0], masks[1],
                      tuple(outlines), note)


# --------------------------------------------------------------------------- internals

def _to_gray(image: np.ndarray) -> np.ndarray:
    """float32 (H, W) in [0, 1]; uint8 RGB goes through OpenCV's exact integer conversion so a
    grey film stored as RGB gives the very same pixels as the grey film."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    elif a.ndim == 3 and a.shape[2] in (3, 4):
        a = a[..., :3]
        if a.dtype == np.uint8:
            a = cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY)
        else:
            a = a.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    elif a.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    if a.dtype == bool:
        return a.astype(np.float32)
    a = a.astype(np.float32, copy=False)
    lo, hi = float(a.min()), float(a.max())  # NaN anywhere makes both NaN
    if 0.0 <= lo and hi <= 1.0:
        return a  # a decoded film (pneumo.imageio) is already finite and in [0, 1]
    return np.clip(np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


def _localise(gray: np.ndarray):
    """((left hull, right hull), note) as (n, 2) int point arrays at N, or (None, reason)."""
    g = cv2.resize(gray, (N, N), interpolation=cv2.INTER_AREA)
    lo, hi = np.percentile(g, [1, 99])
    if hi - lo < MIN_RANGE:
        return None, "no contrast (a blank or nearly uniform image)"
    g = np.clip((g - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    plain = cv2.GaussianBlur(g, (0, 0), SMOOTH)  # for the contrast check, before CLAHE
    clahe = cv2.createCLAHE(clipLimit=CLAHE_CLIP, tileGridSize=(CLAHE_TILES, CLAHE_TILES))
    g = clahe.apply(np.round(g * 255).astype(np.uint8)).astype(np.float32) / 255.0
    o = cv2.morphologyEx(g, cv2.MORPH_OPEN, np.ones((RIB_LINE, 1), np.uint8))
    o = cv2.GaussianBlur(o, (0, 0), 1.5)
    t = _otsu(o[_CENTRAL])
    markers = np.zeros((N, N), np.int32)
    for k, core in enumerate(_CORES):
        q = np.percentile(o[core], SEED_QUANTILE)
        seeds = core & (o <= min(q, t))
        inland = seeds & _inland(o <= min(q, t))
        if inland.sum() >= MIN_SEED:  # prefer seeds not joined by dark to the edge
            seeds = inland
        markers[seeds] = k + 1
    markers[o > t + BRIGHT * (float(o[_CENTRAL].max()) - t)] = 3
    markers[0, :] = markers[-1, :] = markers[:, 0] = markers[:, -1] = 3
    basins = watershed(cv2.GaussianBlur(g, (0, 0), SMOOTH), markers)
    mid = _midline(o)
    regions = []
    for k in (1, 2):
        basin = basins == k
        if k == 1:
            basin &= _xx < mid - MID_GAP
        else:
            basin &= _xx > mid + MID_GAP
        tk = max(t, _otsu(o[basin])) if basin.sum() > 50 else t
        r = (basin & (o < tk)).astype(np.uint8)
        r = _seeded(cv2.morphologyEx(r, cv2.MORPH_OPEN, _disc(OPEN_R)), markers == k)
        regions.append(r)
    names = ("image-left", "image-right")
    for r, name in zip(regions, names):
        if r.sum() < MIN_SIDE_AREA * N * N:
            return None, f"no {name} lung found (no sizeable dark region on that side)"
    hulls = [_hull_points(r) for r in regions]
    fields = [_fill(h) for h in hulls]
    hulls, fields, note = _complete(hulls, fields, names, mid)
    reason = _check(fields, regions, plain)
    if reason:
        return None, reason
    return (hulls, note), ""


def _midline(o: np.ndarray) -> float:
    """Column of the mediastinum and spine: the brightest column band in the middle of the
    chest (smoothed column means over the middle half of the height)."""
    prof = o[int(0.25 * N):int(0.75 * N)].mean(axis=0)
    prof = cv2.GaussianBlur(prof.reshape(1, -1).astype(np.float32), (0, 0), 0.03 * N).ravel()
    x0, x1 = int(MID_RANGE[0] * N), int(MID_RANGE[1] * N)
    return float(x0 + int(np.argmax(prof[x0:x1])))


def _complete(hulls, fields, names, mid):
    """Complete a side much shorter or smaller than the other with the other mirrored."""
    ext = [_extent(f) for f in fields]
    heights = [e[3] - e[2] for e in ext]
    areas = [int(f.sum()) for f in fields]
    small = None
    if min(heights) < MIRROR_HEIGHT * max(heights):
        small = int(np.argmin(heights))
    elif min(areas) < MIRROR_AREA * max(areas):
        small = int(np.argmin(areas))
    if small is None:
        return hulls, fields, ""
    big = 1 - small
    mirrored = hulls[big].copy()
    mirrored[:, 0] = np.round(2 * mid - mirrored[:, 0])
    pts = np.vstack([hulls[small], mirrored])
    if small == 0:
        pts[:, 0] = np.clip(pts[:, 0], 0, mid - MID_GAP)
    else:
        pts[:, 0] = np.clip(pts[:, 0], mid + MID_GAP, N - 1)
    hull = cv2.convexHull(pts.astype(np.int32)).reshape(-1, 2)
    hulls, fields = list(hulls), list(fields)
    hulls[small], fields[small] = hull, _fill(hull)
    return hulls, fields, f"{names[small]} field completed from the mirrored {names[big]} field"


def _check(fields, regions, plain) -> str:
    """The first failed sanity check, as a sentence, or ""."""
    left, right = fields
    both = left | right
    share = both.mean()
    if not AREA_RANGE[0] <= share <= AREA_RANGE[1]:
        return (f"implausible field area ({share:.0%} of the frame; expected "
                f"{AREA_RANGE[0]:.0%}-{AREA_RANGE[1]:.0%})")
    areas = left.sum(), right.sum()
    if min(areas) < MIN_AREA_RATIO * max(areas):
        return f"left and right fields too unequal (area ratio {min(areas) / max(areas):.2f})"
    overlap = (left & right).sum()
    if overlap > 0.05 * min(areas):
        return "the two fields overlap"
    cx = []
    for f, name in zip(fields, ("image-left", "image-right")):
        x0, x1, y0, y1 = _extent(f)
        if (y1 - y0) < MIN_HEIGHT * N:
            return f"{name} field too short ({(y1 - y0) / N:.0%} of the frame's height)"
        if (y1 - y0) < MIN_ASPECT * (x1 - x0):
            return f"{name} field too squat (height/width {(y1 - y0) / (x1 - x0):.2f})"
        mom = cv2.moments(f.astype(np.uint8), binaryImage=True)
        cy = (mom["m01"] / mom["m00"] + 0.5) / N
        if not CENTROID_Y[0] <= cy <= CENTROID_Y[1]:
            return f"{name} field off the chest's height (centre at {cy:.0%} of the height)"
        outline = f & ~cv2.erode(f.astype(np.uint8), _disc(1)).astype(bool)
        border = (outline & _EDGE).sum() / max(1, outline.sum())
        if border > MAX_BORDER:
            return f"{name} field runs along the frame's edge ({border:.0%} of its outline)"
        cx.append((mom["m10"] / mom["m00"] + 0.5) / N)
    if not cx[0] < cx[1] - 0.15:
        return "the fields are not one each side of the midline"
    gap = _extent(right)[0] - _extent(left)[1]
    if gap < MIN_GAP * N:
        return f"no mediastinum between the fields (gap {max(gap, 0) / N:.0%} of the width)"
    inside = (both & _ENVELOPE).sum() / both.sum()
    if inside < MIN_TEMPLATE_OVERLAP:
        return f"fields far from where lungs lie ({inside:.0%} inside the grown template)"
    # The aerated lung must be darker than the tissue between the two fields (mediastinum).
    el, er = _extent(left), _extent(right)
    x_in0, x_in1, y0, y1 = el[1], er[0], max(el[2], er[2]), min(el[3], er[3])
    lung = plain[regions[0] | regions[1]].mean()
    if x_in1 - x_in0 >= 2 and y1 - y0 >= 4:
        between = plain[y0:y1, x_in0:x_in1].mean()
    else:  # fields touch: compare with everything outside them
        between = plain[~both].mean()
    if between - lung < MIN_CONTRAST:
        return f"fields not darker than the tissue between them (contrast {between - lung:.2f})"
    return ""


def _disc(r: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _inland(m: np.ndarray) -> np.ndarray:
    """`m` without its pieces that reach the frame's edge (air outside the body, a gap beside
    an arm: as dark as lung, but no lung seed may sit there)."""
    n, lab = cv2.connectedComponents(m.astype(np.uint8), connectivity=4)
    edge = np.unique(lab[_EDGE])
    return m & ~np.isin(lab, edge[edge > 0])


def _seeded(m: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The piece of `m` holding most of the seed pixels (the largest piece if none does): the
    lung, not a dark gap beside the arm that happens to be bigger."""
    n, lab, st, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=4)
    if n <= 1:
        return np.zeros(m.shape, bool)
    hits = np.bincount(lab[seeds], minlength=n)[1:]
    if hits.max() > 0:
        return lab == 1 + int(np.argmax(hits))
    return lab == 1 + int(np.argmax(st[1:, cv2.CC_STAT_AREA]))


def _otsu(values: np.ndarray) -> float:
    v = np.clip(np.round(values * 255), 0, 255).astype(np.uint8).reshape(-1, 1)
    t, _ = cv2.threshold(v, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(t) / 255.0


def _hull_points(m: np.ndarray) -> np.ndarray:
    cnts, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return cv2.convexHull(np.vstack(cnts)).reshape(-1, 2)


def _fill(hull: np.ndarray) -> np.ndarray:
    m = np.zeros((N, N), np.uint8)
    cv2.fillPoly(m, [hull.astype(np.int32)], 1)
    return m.astype(bool)


def _extent(m: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1), ends exclusive."""
    x, y, w, h = cv2.boundingRect(m.astype(np.uint8))
    return x, x + w, y, y + h


# The heatmap comes from a 7 x 7 map (one cell is 1/7 of the frame), so the note judges it
# against this film's fields widened by a margin, not against their exact outline.
NOTE_MARGIN = 0.04  # of the frame's longer side


def note_fields(image: np.ndarray, margin: float = NOTE_MARGIN) -> tuple[LungFields, np.ndarray]:
    """(this film's lung fields, the mask the off-lung note judges the heatmap against: the
    fields widened by `margin` of the frame). Measured on calibration/ (328 films, the gen5
    candidate of docs/experiments.md as trained, LiteRT, Grad-CAM, one view): the note fires on
    5.8% of films with the 4% margin, 12.8% without."""
    fields = lung_fields(image)
    h, w = fields.mask.shape
    k = max(3, 2 * int(round(margin * max(h, w))) + 1)
    return fields, _widened(fields, k)


def _widened(fields: LungFields, k: int) -> np.ndarray:
    """The fields dilated by a disc of diameter `k` px. A localised field is a convex polygon,
    whose dilation by a disc is the polygon plus its outline drawn `k` px thick with round
    joints: drawn so, it costs about a millisecond where `cv2.dilate` with a 70-px disc on a
    900-px film took 25 ms (the two differ only in edge pixels: docs/experiments.md)."""
    h, w = fields.mask.shape
    if not (fields.localised and fields.outlines):
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        return cv2.dilate(fields.mask.astype(np.uint8), disc) > 0
    widened = fields.mask.astype(np.uint8)
    for frac in fields.outlines:
        pts = np.round(frac * (w, h) - 0.5).astype(np.int32)
        cv2.polylines(widened, [pts], isClosed=True, color=1, thickness=k - 1, lineType=cv2.LINE_8)
    return widened > 0
