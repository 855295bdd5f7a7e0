"""Where the evidence lies, on the page: the film's lung fields, the off-lung note as a review
flag (never "No flags" beside it), and the outline drawn over the heatmap."""

from __future__ import annotations

import numpy as np
import pytest

from pneumo import verdict
from pneumo.heatcheck import OUTSIDE_NOTE
from pneumo.lungs import note_fields
from pneumo.predict import Predictor
from pneumo.render import draw_outline


@pytest.fixture(scope="module")
def predictor(tiny_bundle):
    return Predictor.load(tiny_bundle)


def _film(size: int = 160) -> np.ndarray:
    """A synthetic frontal film: bright body, two dark lungs either side of a bright spine."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    film = np.full((size, size), 30, np.uint8)
    film[((xx - 0.5) / 0.45) ** 2 + ((yy - 0.5) / 0.48) ** 2 <= 1] = 170
    for cx in (0.31, 0.69):
        film[((xx - cx) / 0.14) ** 2 + ((yy - 0.47) / 0.27) ** 2 <= 1] = 60
    return film


def test_note_fields_widen_the_films_own_fields():
    fields, judged = note_fields(_film())
    assert judged.shape == fields.mask.shape
    assert (judged | ~fields.mask).all()  # every field pixel is judged inside
    assert judged.sum() > fields.mask.sum()  # and a margin around it


def test_heat_off_the_lungs_is_a_review_flag(predictor, monkeypatch):
    import pneumo.predict as predict

    monkeypatch.setattr(predict, "hottest_outside_lungs", lambda heat, mask: True)
    flagged = predictor.predict(_film(), cam="gradcam", tta=False)
    assert OUTSIDE_NOTE in flagged.reasons and flagged.needs_review
    assert flagged.lung_fields is not None and flagged.lung_fields.mask.shape == (160, 160)
    assert verdict.review_flag(flagged).endswith("heat off the lungs")
    monkeypatch.setattr(predict, "hottest_outside_lungs", lambda heat, mask: False)
    clean = predictor.predict(_film(), cam="gradcam", tta=False)
    assert OUTSIDE_NOTE not in clean.reasons
    no_map = predictor.predict(_film(), cam="none", tta=False)
    assert no_map.lung_fields is None and OUTSIDE_NOTE not in no_map.reasons


def test_outline_is_drawn_on_the_fields_border_only():
    mask = np.zeros((100, 100), bool)
    mask[20:80, 30:70] = True
    rgb = np.zeros((200, 200, 3), np.uint8)
    drawn = draw_outline(rgb, mask)
    changed = drawn.any(axis=2)
    assert changed.any()
    assert not changed[70:130, 80:120].any()  # the inside stays as it was
    assert not changed[:20].any() and not changed[:, :40].any()  # far outside too


def test_heat_grid_cleans_a_map_with_nan_or_inf_as_before():
    """Averaged first, cleaned only when something non-finite reaches the grid: a map with a
    NaN and an inf gives the grid of its nan_to_num copy; a finite map is untouched."""
    import cv2

    from pneumo.heatcheck import GRID, heat_grid

    rng = np.random.default_rng(0)
    heat = rng.random((300, 200)).astype(np.float32)
    clean = heat_grid(heat)
    expected = cv2.resize(heat, (GRID, GRID), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(clean, expected)
    dirty = heat.copy()
    dirty[10, 10], dirty[200, 150] = np.nan, np.inf
    grid = heat_grid(dirty)
    assert np.isfinite(grid).all()
    np.testing.assert_array_equal(grid, cv2.resize(np.nan_to_num(dirty), (GRID, GRID),
                                                   interpolation=cv2.INTER_AREA))
    assert heat_grid(np.full((50, 50), 0.3, np.float32)) is None  # flat: no "where"
