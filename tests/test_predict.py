"""Predictor: every input kind, the result contract, flags, batch with errors in place."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pneumo import ImageError, PneumoError, Predictor
from pneumo.predict import NOT_ASSESSED
from pneumo.predict import tta_views


@pytest.fixture(scope="module")
def predictor(tiny_bundle):
    return Predictor.load(tiny_bundle)


@pytest.fixture(scope="module")
def film(synthetic_data):
    return sorted((synthetic_data / "PNEUMONIA").iterdir())[0]


def test_every_source_kind_gives_the_same_answer(predictor, film):
    data = film.read_bytes()
    array = np.asarray(Image.open(film).convert("L"))
    answers = [predictor.predict(s, cam="none").probability
               for s in (film, str(film), data, io.BytesIO(data), array)]
    np.testing.assert_allclose(answers, answers[0], atol=1e-6)


def test_result_contract(predictor, film):
    result = predictor.predict(film)
    d = result.to_dict()
    for key in ("probability", "label", "threshold", "in_population", "ood_score", "uncertainty",
                "needs_review"):
        assert key in d
    assert 0 <= result.probability <= 1
    assert result.label in (("NORMAL", "PNEUMONIA") if result.in_population else (NOT_ASSESSED,))
    assert (result.label == "PNEUMONIA") == (result.probability >= result.threshold)
    assert result.heatmap.shape == (96, 96) and result.heatmap.dtype == np.float32
    assert 0 <= result.heatmap.min() and result.heatmap.max() <= 1
    assert result.needs_review == bool(result.reasons)


def test_colour_and_blank_images_are_out_of_population(predictor):
    rng = np.random.default_rng(0)
    colour = np.zeros((96, 96, 3), np.uint8)
    colour[..., 0] = 200
    colour[..., 1] = rng.integers(0, 255, (96, 96))
    for image in (colour, np.zeros((96, 96), np.uint8), np.full((96, 96), 255, np.uint8)):
        result = predictor.predict(image)
        assert not result.in_population and result.needs_review and result.reasons


def test_tta_gives_views_and_a_spread(predictor, film):
    x = np.zeros((64, 64, 3), np.uint8)
    x[20:40, 20:40] = 255
    views = tta_views(x)
    assert views.shape == (3, 64, 64, 3) and np.array_equal(views[0], x)
    assert not np.array_equal(views[1], x)
    assert predictor.predict(film, tta=False).uncertainty == 0.0
    # With the views: the spread of the probabilities of exactly those views.
    from pneumo.imageio import read_image
    from pneumo.preprocess import to_model_input

    model_input = to_model_input(read_image(film).pixels, predictor.image_size)
    spread = float(np.std(predictor.probabilities(tta_views(model_input))))
    assert spread > 0  # the shifted views do move this film's score
    assert predictor.predict(film, tta=True).uncertainty == pytest.approx(spread, abs=1e-6)


def test_batch_answers_in_order_with_errors_in_place(predictor, synthetic_data, film):
    films = sorted((synthetic_data / "NORMAL").iterdir())[:3]
    sources = [films[0], b"not an image", films[1], b"", films[2]]
    results = predictor.predict_batch(sources, batch_size=2)
    assert [type(r).__name__ for r in results] == [
        "PredictionResult", "ImageError", "PredictionResult", "ImageError", "PredictionResult"]
    single = [predictor.predict(f, cam="none", tta=False).probability for f in films]
    np.testing.assert_allclose([results[i].probability for i in (0, 2, 4)], single, atol=1e-5)


def test_each_cam_method_through_the_predictor(predictor, film):
    for cam in ("gradcam", "gradcam++", "scorecam"):
        heatmap = predictor.predict(film, cam=cam, tta=False).heatmap
        assert heatmap.shape == (96, 96) and np.isfinite(heatmap).all()
    assert predictor.predict(film, cam="none").heatmap is None
    with pytest.raises(PneumoError, match="cam must be"):
        predictor.predict(film, cam="lime")


def test_bad_input_raises_the_documented_error(predictor):
    with pytest.raises(ImageError, match="empty"):
        predictor.predict(b"")


def test_batch_with_tta_gives_the_spread_and_flags_of_predict(predictor, synthetic_data):
    """The Batch page scores with the shifted views: each film gets the same probability,
    spread and review reasons ("unstable" included) as `predict` gives it."""
    films = sorted((synthetic_data / "PNEUMONIA").iterdir())[:3] + \
        sorted((synthetic_data / "NORMAL").iterdir())[:3]
    single = [predictor.predict(f, cam="gradcam") for f in films]
    batched = predictor.predict_batch(films, cam="gradcam", tta=True, batch_size=12)  # 4 a call
    for one, many in zip(single, batched):
        assert many.uncertainty == pytest.approx(one.uncertainty, abs=1e-5)
        assert many.probability == pytest.approx(one.probability, abs=1e-5)
        assert many.reasons == one.reasons and many.label == one.label
        # The batch's gate scores come from one product, split a row a film: each film's own.
        assert many.ood_score == pytest.approx(one.ood_score, rel=1e-5)
        assert many.flags == one.flags
        np.testing.assert_allclose(many.heatmap, one.heatmap, atol=1e-4)
    assert predictor.gate_layer  # the population gate, whose batch path is checked here
    assert len({round(r.ood_score, 6) for r in batched}) > 1  # rows differ: a mix-up shows
    assert any(r.uncertainty > 0 for r in batched)  # the shifted views were scored
    plain = predictor.predict_batch(films, cam="none")
    assert all(r.uncertainty == 0 for r in plain)  # evaluation keeps one view


def test_the_operating_point_is_the_served_models(predictor, tiny_bundle):
    """One rule for the Predictor and every surface: LiteRT's own point where it has one,
    the manifest's when the float point changed since the export or Keras serves."""
    from pneumo.bundle import read_manifest
    from pneumo.predict import operating_point, served_runtime

    manifest = read_manifest(tiny_bundle, verify=False)
    t, T = float(manifest["threshold"]), float(manifest.get("temperature", 1.0))
    served = {**manifest["litert"], "threshold": 0.123, "temperature": 2.5,
              "float_threshold": t, "float_temperature": T}
    own = {**manifest, "litert": served}
    point = operating_point(own, "litert")
    assert (point.threshold, point.temperature, point.litert_own) == (0.123, 2.5, True)
    assert (operating_point(own, "keras").threshold, operating_point(own, "keras").runtime) \
        == (t, "keras")
    stale = {**own, "threshold": min(1.0, t + 0.1)}  # the float threshold moved by hand
    assert operating_point(stale, "litert").threshold == stale["threshold"]
    assert served_runtime(own, "keras") == "keras"
    assert served_runtime(own, litert_installed=True) == "litert"
    assert served_runtime({**own, "litert": {**served, "head": "mlp"}}, litert_installed=True) == "keras"
    assert predictor.operating_point == operating_point(manifest, predictor.runtime)
    assert predictor.threshold == predictor.operating_point.threshold


def test_iter_predict_streams_in_order_and_reads_lazily(predictor, synthetic_data):
    """Results come out in input order while later inputs are not yet decoded: the stream
    never holds more than its look-ahead, whatever the number of films."""
    films = sorted((synthetic_data / "NORMAL").iterdir())[:6]
    pulled = []

    def sources():
        for i, f in enumerate(films * 30):  # 180 inputs, a bad one every 7th
            pulled.append(i)
            yield b"junk" if i % 7 == 3 else f

    stream = predictor.iter_predict(sources(), batch_size=4)
    first = next(stream)
    assert type(first).__name__ == "PredictionResult"
    assert len(pulled) < 100  # one batch plus the look-ahead, not the 180 inputs
    rest = list(stream)
    kinds = ["ImageError" if i % 7 == 3 else "PredictionResult" for i in range(180)]
    assert [type(r).__name__ for r in [first] + rest] == kinds
    single = predictor.predict(films[1], cam="none", tta=False).probability
    assert rest[0].probability == pytest.approx(single, abs=1e-5)


def test_prefetch_hands_the_producers_error_to_the_consumer():
    from pneumo.predict import _prefetch

    def broken():
        yield 1
        raise RuntimeError("disk gone")

    stream = _prefetch(broken(), depth=4)
    assert next(stream) == 1
    with pytest.raises(RuntimeError, match="disk gone"):
        next(stream)
