"""pneumo.lungs: the per-film lung-field localiser, on synthetic films with known fields, on
inputs it must refuse (template fallback with a reason), and on a few real films."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pneumo.heatcheck import lung_mask
from pneumo.lungs import LungFields, lung_fields, template_fields

LUNG_CENTRES = (0.30, 0.70)  # x of the synthetic lungs before shifting/scaling
LUNG_CY, LUNG_RX, LUNG_RY = 0.47, 0.13, 0.30


def synthetic_film(height=256, width=256, dx=0.0, dy=0.0, scale=1.0, patch=False, seed=0):
    """(uint8 film, bool lungs, bool consolidated patch): a bright body ellipse on a dark
    background, two dark elliptical lungs with faint ribs, blurred and noisy. With `patch`, a
    white (consolidated) blob in the image-left lung - still lung: True or "lower" puts it in
    the lower lobe, "hilar" bites it out of the lung's inner edge, mid-height."""
    yy, xx = np.mgrid[0:height, 0:width]
    u, v = (xx + 0.5) / width, (yy + 0.5) / height
    img = np.full((height, width), 0.05, np.float32)
    img[((u - 0.5 - dx) / 0.47) ** 2 + ((v - 0.55 - dy) / 0.52) ** 2 <= 1.0] = 0.75
    lungs = np.zeros((height, width), bool)
    for cx in LUNG_CENTRES:
        cx = 0.5 + (cx - 0.5) * scale + dx
        lungs |= (((u - cx) / (LUNG_RX * scale)) ** 2
                  + ((v - LUNG_CY - dy) / (LUNG_RY * scale)) ** 2 <= 1.0)
    img[lungs] = 0.30
    img += 0.08 * (np.sin(v * 2 * np.pi * 9) > 0.6) * lungs  # ribs
    consolidated = np.zeros_like(lungs)
    if patch:
        cx = 0.5 + (LUNG_CENTRES[0] - 0.5) * scale + dx
        if patch == "hilar":
            px, py, rx, ry = cx + 0.11 * scale, LUNG_CY + dy, 0.07 * scale, 0.09 * scale
        else:
            px, py, rx, ry = cx, 0.60 + dy, 0.07 * scale, 0.10 * scale
        consolidated = (((u - px) / rx) ** 2 + ((v - py) / ry) ** 2 <= 1.0) & lungs
        img[consolidated] = 0.75
    img = cv2.GaussianBlur(img, (0, 0), 0.008 * max(height, width))
    img += np.random.default_rng(seed).normal(0.0, 0.02, img.shape).astype(np.float32)
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8), lungs, consolidated


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize("kw", [
    {}, {"dx": 0.06}, {"dx": -0.05, "dy": -0.06}, {"scale": 0.85}, {"scale": 1.1, "dy": 0.04},
    {"seed": 3},
], ids=["centred", "shifted-right", "shifted-up-left", "smaller", "larger-lower", "seed3"])
def test_synthetic_fields_are_found(kw):
    film, lungs, _ = synthetic_film(**kw)
    result = lung_fields(film)
    assert result.source == "localised", result.reason
    assert result.reason == ""
    assert iou(result.mask, lungs) >= 0.8
    # The template does not do as well: the test tells localisation from falling back.
    assert iou(lung_mask(*film.shape), lungs) < 0.8
    # Each side holds its own lung.
    w = film.shape[1]
    assert result.left[:, w // 2:].sum() == 0 and result.right[:, :w // 2].sum() == 0
    assert iou(result.left | result.right, result.mask) == 1.0


@pytest.mark.parametrize("where", ["lower", "hilar"])
def test_consolidated_patch_stays_inside_the_field(where):
    film, lungs, patch = synthetic_film(patch=where)
    assert patch.sum() > 500
    result = lung_fields(film)
    assert result.source == "localised", result.reason
    assert iou(result.mask, lungs) >= 0.8
    # A lower-lobe patch is wholly inside (convex hull, or the side completed from the mirrored
    # other side); one bitten out of the inner edge is inside up to the hull's chord.
    share = 0.95 if where == "lower" else 0.65
    assert result.mask[patch].mean() >= share
    assert result.left[patch].mean() >= share


@pytest.mark.parametrize("image, words", [
    (np.full((256, 256), 128, np.uint8), "no contrast"),
    (np.zeros((300, 200), np.uint8), "no contrast"),
    (np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8), ""),
    (np.random.default_rng(1).integers(0, 256, (224, 224, 3), dtype=np.uint8), ""),
    (np.random.default_rng(2).integers(0, 256, (20, 20), dtype=np.uint8), "too small"),
    (np.tile(np.linspace(0, 255, 256).astype(np.uint8), (256, 1)), ""),
], ids=["uniform", "black", "noise", "rgb-noise", "tiny", "ramp"])
def test_what_is_not_a_chest_falls_back_to_the_template(image, words):
    result = lung_fields(image)
    assert result.source == "template"
    assert result.reason and words in result.reason
    assert result.mask.shape == image.shape[:2]
    assert np.array_equal(result.mask, lung_mask(*image.shape[:2]))
    assert np.array_equal(result.left | result.right, result.mask)
    assert result.outlines == ()


def test_random_noise_never_localises():
    for seed in range(10):
        noise = np.random.default_rng(seed).integers(0, 256, (192, 256), dtype=np.uint8)
        assert lung_fields(noise).source == "template"


@pytest.mark.parametrize("shape", [(300, 400), (900, 700), (1024, 1280)])
def test_mask_has_the_input_shape_for_non_square_full_size_input(shape):
    film, lungs, _ = synthetic_film(*shape)
    result = lung_fields(film)
    assert result.source == "localised", result.reason
    for m in (result.mask, result.left, result.right):
        assert m.shape == shape and m.dtype == bool
    assert iou(result.mask, lungs) >= 0.8


def test_rgb_and_grayscale_give_the_same_mask():
    film, _, _ = synthetic_film(patch=True, seed=5)
    gray = lung_fields(film)
    for rgb in (np.repeat(film[:, :, None], 3, axis=2),
                np.concatenate([np.repeat(film[:, :, None], 3, axis=2),
                                np.full(film.shape + (1,), 255, np.uint8)], axis=2),
                film[:, :, None]):
        other = lung_fields(rgb)
        assert other.source == gray.source == "localised"
        assert np.array_equal(other.mask, gray.mask)


def test_16_bit_and_float_input_match_8_bit():
    film, _, _ = synthetic_film(seed=7)
    ref = lung_fields(film).mask
    as16 = lung_fields(film.astype(np.uint16) * 257).mask
    asfloat = lung_fields(film.astype(np.float32) / 255.0).mask
    assert iou(as16, ref) >= 0.98 and iou(asfloat, ref) >= 0.98


def test_deterministic():
    film, _, _ = synthetic_film(patch=True, seed=11)
    first, second = lung_fields(film), lung_fields(film.copy())
    assert np.array_equal(first.mask, second.mask)
    assert first.note == second.note


def test_box_and_outlines_describe_the_mask():
    film, lungs, _ = synthetic_film(300, 400, dx=0.04)
    result = lung_fields(film)
    x0, y0, x1, y1 = result.box()
    ys, xs = np.nonzero(result.mask)
    assert x0 == pytest.approx(xs.min() / 400) and x1 == pytest.approx((xs.max() + 1) / 400)
    assert y0 == pytest.approx(ys.min() / 300) and y1 == pytest.approx((ys.max() + 1) / 300)
    ys, xs = np.nonzero(lungs)
    assert abs(x0 - xs.min() / 400) < 0.04 and abs(y1 - (ys.max() + 1) / 300) < 0.04
    assert len(result.outlines) == 2
    for outline, side in zip(result.outlines, (result.left, result.right)):
        assert outline.ndim == 2 and outline.shape[1] == 2
        assert ((outline >= 0) & (outline <= 1)).all()
        cx = outline[:, 0].mean()
        assert (cx < 0.5) == (side is result.left)


def test_template_fields_match_heatcheck():
    t = template_fields(120, 90, "why")
    assert isinstance(t, LungFields) and t.source == "template" and t.reason == "why"
    assert np.array_equal(t.mask, lung_mask(120, 90))
    assert not (t.left & t.right).any()
    assert t.box() == pytest.approx((0.1, 0.17, 0.9, 0.83), abs=0.02)


def test_bad_array_shape_raises():
    with pytest.raises(ValueError):
        lung_fields(np.zeros((4, 64, 64), np.uint8))


# --------------------------------------------------------------------------- real films

def test_full_size_validation_films_are_localised(shared_data):
    """The 16 full-size films of val/ (abdomen and shoulders in view): fields found on nearly
    all, on the chest (mostly inside the template), each side on its own half."""
    films = sorted((shared_data / "chest_xray" / "val").glob("*/*.jpeg"))
    assert len(films) == 16
    localised = 0
    for path in films:
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        result = lung_fields(gray)
        assert result.mask.shape == gray.shape
        if not result.localised:
            continue
        localised += 1
        template = lung_mask(*gray.shape)
        assert (result.mask & template).sum() / result.mask.sum() >= 0.6, path.name
        w = gray.shape[1]
        assert result.left[:, int(0.6 * w):].sum() == 0, path.name
        assert result.right[:, :int(0.4 * w)].sum() == 0, path.name
        assert 0.10 <= result.mask.mean() <= 0.60, path.name
    assert localised >= 14
