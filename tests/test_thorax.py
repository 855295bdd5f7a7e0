"""The input cropped to the thorax (`pneumo.thorax`, `data.thorax_crop`): the crop holds the lung
fields, the heatmap goes back where the crop came from, and training and serving read the same
cropped film."""

from __future__ import annotations

import json
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


def _gate_on_crops(bundle, tmp_path):
    """A copy of `bundle` as a thorax bundle fitted before gates read the whole film: its
    manifest has no `gate_input`, so its gate reads the crop."""
    copy = tmp_path / "gate_on_crops"
    shutil.copytree(bundle, copy)
    refresh_hashes(copy, thorax_crop=True, gate_input=None)
    return copy


def _films(tmp_path, n=3):
    films = []
    for seed in range(n):
        path = tmp_path / f"gate_film{seed}.png"
        film = synthetic_film(seed=seed + 10, dx=0.04 * (seed - 1), scale=1.0 - 0.05 * seed)[0]
        cv2.imwrite(str(path), cv2.resize(film, (300, 260)))
        films.append(str(path))
    return films


@pytest.mark.parametrize("tta", [False, True])
def test_the_gate_reads_the_whole_film_beside_the_crop(tiny_bundle, thorax_bundle, tmp_path, tta):
    """A thorax bundle's gate scores the whole film, as the uncropped bundle's gate does, in
    `predict` and in batches, while its probability stays the crop's; a bundle whose gate was
    fitted on crops still reads crops."""
    from pneumo.predict import Predictor

    films = _films(tmp_path)
    cropped, whole = Predictor.load(thorax_bundle), Predictor.load(tiny_bundle)
    on_crops = Predictor.load(_gate_on_crops(tiny_bundle, tmp_path))
    assert cropped.gate_whole and not whole.gate_whole and not on_crops.gate_whole

    def scores(predictor):
        single = [predictor.predict(f, tta=tta) for f in films]
        batch = predictor.predict_batch(films, tta=tta)
        return (np.array([r.ood_score for r in single]), np.array([r.ood_score for r in batch]),
                np.array([r.probability for r in single]))

    crop_single, crop_batch, crop_prob = scores(cropped)
    whole_single, whole_batch, whole_prob = scores(whole)
    old_single, old_batch, old_prob = scores(on_crops)
    np.testing.assert_allclose(crop_single, whole_single, rtol=1e-4)
    np.testing.assert_allclose(crop_batch, whole_batch, rtol=1e-4)
    # The model itself reads the crop: its probabilities are the gate-on-crops copy's.
    np.testing.assert_allclose(crop_prob, old_prob, atol=1e-6)
    assert np.abs(crop_prob - whole_prob).max() > 1e-4
    # A gate on crops scores other features: the check above can tell the two apart.
    assert np.abs(old_single - whole_single).max() > 1e-3 * np.abs(whole_single).max()
    np.testing.assert_allclose(old_single, old_batch, rtol=1e-4)


def test_refit_gate_fits_a_thorax_bundles_gate_on_whole_films(tiny_bundle, tmp_path):
    """`refit-gate` on a thorax bundle whose gate read crops gives the gate the uncropped
    bundle's refit gives, array by array, and records that it reads the whole film."""
    from pneumo.bundle import read_manifest
    from pneumo.gatefit import refit_gate
    from pneumo.preprocess import GATE_FULL_FRAME, gate_reads_crop

    old = _gate_on_crops(tiny_bundle, tmp_path)
    plain = tmp_path / "plain"
    shutil.copytree(tiny_bundle, plain)
    assert gate_reads_crop(read_manifest(old))
    refit_gate(old)
    refit_gate(plain)
    manifest = read_manifest(old, verify=True)
    assert manifest["gate_input"] == GATE_FULL_FRAME and not gate_reads_crop(manifest)
    converted, reference = np.load(old / "gate.npz"), np.load(plain / "gate.npz")
    assert sorted(converted.files) == sorted(reference.files)
    for key in reference.files:
        if reference[key].dtype.kind in "fiu":
            np.testing.assert_allclose(converted[key], reference[key], rtol=1e-5, atol=1e-7,
                                       err_msg=key)
        else:
            assert (converted[key] == reference[key]).all(), key


def test_calibrate_sets_a_thorax_bundles_gate_cutoffs_on_whole_films(tiny_bundle, thorax_bundle,
                                                                      tmp_path):
    """A site calibration raises the gate's cut-offs to pass the site's films as the gate reads
    them: whole films for a thorax bundle, so its calibrated gate is the uncropped bundle's; a
    bundle whose gate reads crops gets other cut-offs (so the comparison can fail)."""
    from conftest import write_synthetic_xrays
    from pneumo.calibrate import calibrate_bundle

    site = write_synthetic_xrays(tmp_path / "site", per_class=32, seed=11)
    for path in site.rglob("*.png"):  # another site's exposure: the cut-offs must rise
        film = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(path), (255 * (film / 255.0) ** 0.4).astype(np.uint8))
    bundles = {"whole": tiny_bundle, "thorax": thorax_bundle,
               "on_crops": _gate_on_crops(tiny_bundle, tmp_path)}
    gates, raised = {}, []
    for name, bundle in bundles.items():
        summary = calibrate_bundle(bundle, site, tmp_path / name, adapt="none", bootstrap=20)
        raised.append(summary["site"]["gate"]["site_flag_rate_before"] > 0)
        with np.load(tmp_path / name / "gate.npz") as gate:
            gates[name] = {k: gate[k] for k in gate.files if gate[k].dtype.kind in "fiu"}
    for key, value in gates["whole"].items():
        np.testing.assert_allclose(gates["thorax"][key], value, rtol=1e-5, atol=1e-7,
                                   err_msg=key)
    assert all(raised)
    assert any(not np.allclose(gates["on_crops"][k], v, rtol=1e-5, atol=1e-7)
               for k, v in gates["whole"].items())


def test_the_model_card_says_the_film_is_cut_to_the_thorax(tiny_bundle):
    """A thorax bundle's card names the crop and what the gate reads; a whole-film bundle's
    card says neither."""
    from pneumo.bundle import read_manifest
    from pneumo.modelcard import model_card
    from pneumo.preprocess import GATE_FULL_FRAME

    manifest = read_manifest(tiny_bundle)
    metrics = json.loads((tiny_bundle / "metrics.json").read_text())
    assert "lung fields' box" not in model_card(manifest, metrics)
    cropped = {k: v for k, v in manifest.items() if k != "gate_input"} | {"thorax_crop": True}
    assert "the out-of-population gate reads its crop" in model_card(cropped, metrics)
    whole = dict(cropped, gate_input=GATE_FULL_FRAME)
    card = model_card(whole, metrics)
    assert "lung fields' box" in card and "gate reads the whole film" in card
