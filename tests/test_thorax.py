"""The input cropped to the thorax (`pneumo.thorax`, `data.thorax_crop`): the crop holds the lung
fields, the heatmap goes back where the crop came from, and training and serving read the same
cropped film."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from pneumo.bundle import refresh_hashes
from pneumo.preprocess import load_images, to_model_input
from pneumo.thorax import MIN_SHARE, THORAX_MARGIN, _widen, crop_to, paste_back, thorax_box
from test_lungs import synthetic_film  # tests/ is on the path (no package)


def _extent(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h


@pytest.mark.parametrize("kw", [{}, {"dx": 0.06}, {"scale": 0.85, "dy": -0.05}])
def test_the_crop_holds_both_lung_fields_and_its_margin(kw):
    film, lungs, _ = synthetic_film(**kw)
    x = to_model_input(film / 255.0, 224)
    box = thorax_box(x)
    fx0, fy0, fx1, fy1 = _extent(lungs)
    slack = 0.02  # the localiser's outline is a convex hull at 192 px
    assert box[0] <= fx0 + slack and box[1] <= fy0 + slack
    assert box[2] >= fx1 - slack and box[3] >= fy1 - slack
    # ... and not the whole frame: the margin is a share of the fields' box, not more.
    width = fx1 - fx0
    assert box[2] - box[0] <= width * (1 + 2 * THORAX_MARGIN) + 0.05
    assert box[2] - box[0] < 0.95


@pytest.mark.parametrize("lo, hi", [(0.0, 0.2), (0.85, 1.0), (0.4, 0.45), (-0.1, 1.2),
                                    (0.1, 0.9)])
def test_a_widened_side_stays_in_the_frame_and_long_enough(lo, hi):
    a, b = _widen(lo, hi, THORAX_MARGIN)
    assert 0.0 <= a < b <= 1.0
    assert b - a >= min(1.0, MIN_SHARE) - 1e-9
    assert a <= max(lo, 0.0) and b >= min(hi, 1.0)  # never cuts the fields


def test_a_point_of_the_crop_goes_back_where_it_came_from():
    size = (300, 400)  # the full frame (H, W): not square, not the model's size
    box = (0.2, 0.1, 0.8, 0.7)
    x = np.zeros((224, 224, 3), np.uint8)
    # A spot in the model input at (x 0.6, y 0.5) of the frame: inside the box.
    cv2.circle(x, (int(0.6 * 224), int(0.5 * 224)), 3, (255, 255, 255), -1)
    crop = crop_to(x, box)
    cy, cx = np.unravel_index(np.argmax(crop[..., 0]), crop.shape[:2])
    heat = np.zeros((7, 7), np.float32)
    heat[int(cy / 224 * 7), int(cx / 224 * 7)] = 1.0
    back = paste_back(heat, box, size)
    assert back.shape == size
    y, xx = np.unravel_index(np.argmax(back), size)
    assert abs(xx / size[1] - 0.6) < 0.06 and abs(y / size[0] - 0.5) < 0.06
    rows, cols = np.nonzero(back > 0)
    assert rows.min() >= int(0.1 * 300) - 1 and rows.max() < round(0.7 * 300) + 1
    assert cols.min() >= int(0.2 * 400) - 1 and cols.max() < round(0.8 * 400) + 1


@pytest.fixture(scope="module")
def thorax_bundle(tiny_bundle, tmp_path_factory):
    """The tiny bundle, told that its model reads films cropped to the thorax."""
    bundle = tmp_path_factory.mktemp("thorax") / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    refresh_hashes(bundle, thorax_crop=True)
    return bundle


def test_serving_reads_the_film_training_read(tiny_bundle, thorax_bundle, tmp_path):
    from pneumo.predict import Predictor

    films = []
    for seed, kw in enumerate([{}, {"dx": 0.05}, {"scale": 0.9}]):
        path = tmp_path / f"film{seed}.png"
        cv2.imwrite(str(path), cv2.resize(synthetic_film(seed=seed, **kw)[0], (320, 280)))
        films.append(str(path))
    cropped = Predictor.load(thorax_bundle)
    whole = Predictor.load(tiny_bundle)
    size = cropped.image_size
    # The training path's films (load_images, as the trainer and the gate read them).
    trained_on = cropped.probabilities(load_images(films, size, thorax=True))
    uncropped = whole.probabilities(load_images(films, size))
    served = [cropped.predict(f, tta=False) for f in films]
    batch = cropped.predict_batch(films, cam="gradcam")
    np.testing.assert_allclose([r.probability for r in served], trained_on, atol=1e-5)
    np.testing.assert_allclose([r.probability for r in batch], trained_on, atol=1e-5)
    assert np.abs(trained_on - uncropped).max() > 1e-4  # the crop reaches the model
    for result in served + batch:
        heat = result.heatmap
        assert heat.shape == result.image.size
        # Zero outside the crop: the frame's corners lie outside any lung box.
        assert heat[:5, :5].max() == 0 and heat[-5:, -5:].max() == 0
        assert heat.max() > 0


def test_the_manifest_names_the_crop_before_the_model():
    from pneumo.finalize import preprocessing_text

    plain, cropped = preprocessing_text(False), preprocessing_text(True)
    assert "crop" not in plain and "crop (data.thorax_crop)" in cropped
    # the steps in the order they run: squash, crop, then the network's own preprocessing
    assert cropped.index("to_model_input") < cropped.index("crop (") < cropped.index("-> model:")
