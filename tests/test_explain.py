"""pneumo.explain on the tiny model at 64 px: shapes, ranges, localisation, agreement, overlay."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import keras  # noqa: E402  (a required package: a missing install must fail, not skip)

from pneumo.config import ModelConfig  # noqa: E402
from pneumo.errors import ConfigError, ImageError, PneumoError  # noqa: E402
from pneumo.explain import ALL_METHODS, METHODS, Explainer, finish_cam  # noqa: E402
from pneumo.render import overlay, save_heatmap_png  # noqa: E402
from pneumo.model import build_model  # noqa: E402

SIZE = 64
RADIUS = 6
POSITIONS = ((16, 16), (47, 46))  # (row, col) of the blob centre in the two localisation probes


def blob_image(rng, centre=None) -> np.ndarray:
    """A dim noisy 'film' (uint8 RGB), with a bright disc at `centre` if given."""
    img = rng.uniform(20, 90, (SIZE, SIZE)).astype(np.float32)
    if centre is not None:
        yy, xx = np.mgrid[:SIZE, :SIZE]
        img[(yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= RADIUS**2] = 250.0
    return np.repeat(np.rint(img).astype(np.uint8)[:, :, None], 3, axis=2)


@pytest.fixture(scope="module")
def trained():
    """The tiny model trained for a few steps to say 'pneumonia' when a bright blob is present."""
    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(backbone="tiny", weights="none", dropout=0.0), SIZE, "float32")
    for layer in model.layers:  # BN in inference mode: train and test behave alike
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    rng = np.random.default_rng(0)
    n = 256
    labels = (np.arange(n) % 2).astype(np.float32)
    images = np.stack([
        blob_image(rng, tuple(rng.integers(RADIUS + 2, SIZE - RADIUS - 2, 2)) if y else None)
        for y in labels
    ])
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy",
                  metrics=["accuracy"])
    hist = model.fit(images.astype(np.float32), labels, batch_size=32, epochs=4, verbose=0)
    assert hist.history["accuracy"][-1] > 0.9, hist.history
    return model, Explainer(model)


@pytest.fixture(scope="module")
def untrained():
    model = build_model(ModelConfig(backbone="tiny", weights="none"), SIZE, "float32")
    return Explainer(model)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_heatmap_shape_dtype_range(trained, method):
    _, explainer = trained
    x = blob_image(np.random.default_rng(1), (30, 20))
    for size in [(100, 80), None]:
        heat = explainer.explain(x, method=method, output_size=size)
        assert heat.shape == (size or (SIZE, SIZE))
        assert heat.dtype == np.float32
        assert np.isfinite(heat).all()
        assert heat.min() >= 0.0 and heat.max() <= 1.0
        assert heat.max() == pytest.approx(1.0)


@pytest.mark.parametrize("method", METHODS)
def test_heatmap_moves_with_the_evidence(trained, method):
    model, explainer = trained
    rng = np.random.default_rng(2)
    peaks = []
    for centre in POSITIONS:
        x = blob_image(rng, centre)
        assert float(model(x[None].astype(np.float32))[0, 0]) > 0.5
        heat = explainer.explain(x, method=method, output_size=(SIZE, SIZE))
        peak = np.unravel_index(np.argmax(heat), heat.shape)
        peaks.append(peak)
        assert np.hypot(peak[0] - centre[0], peak[1] - centre[1]) <= 12, (method, centre, peak)
    assert peaks[0] != peaks[1]


def test_compiled_gradcam_matches_tf_keras_vis(trained, untrained):
    for model_explainer in (trained[1], untrained):
        rng = np.random.default_rng(3)
        for centre in POSITIONS:
            x = blob_image(rng, centre)
            fast = model_explainer.explain(x, "gradcam", output_size=(SIZE, SIZE))
            ref = model_explainer.explain(x, "gradcam-tfkv", output_size=(SIZE, SIZE))
            if ref.max() == 0:  # logit has no positive evidence: both maps are all zero
                assert fast.max() == 0
                continue
            assert np.allclose(fast, ref, atol=1e-4), np.abs(fast - ref).max()
            assert np.corrcoef(fast.ravel(), ref.ravel())[0, 1] > 0.99


def test_forward_with_cam_one_pass(trained):
    model, explainer = trained
    rng = np.random.default_rng(4)
    batch = np.stack([blob_image(rng, POSITIONS[0]), blob_image(rng), blob_image(rng, (40, 20))])
    out = explainer.forward_with_cam(batch)
    assert set(out) == {"probability", "logit", "features", "cam"}
    assert out["probability"].shape == (3,) and out["logit"].shape == (3,)
    assert out["features"].shape == (3, 32) and out["cam"].shape == (3, 8, 8)
    expected = model.predict(batch.astype(np.float32), verbose=0)[:, 0]
    np.testing.assert_allclose(out["probability"], expected, atol=1e-5)
    np.testing.assert_allclose(out["probability"], 1 / (1 + np.exp(-out["logit"])), atol=1e-5)
    assert out["probability"][0] > 0.5 > out["probability"][1]
    assert np.isfinite(out["cam"]).all() and out["cam"].min() >= 0 and out["cam"].max() <= 1
    # Per-image, batch-independent: the batched CAM equals the single-image CAM.
    single = explainer.forward_with_cam(batch[2])
    np.testing.assert_allclose(out["cam"][2], single["cam"][0], atol=1e-5)


def test_threads_share_one_explainer(trained):
    _, explainer = trained
    x = blob_image(np.random.default_rng(5), POSITIONS[1])
    expected = explainer.explain(x)
    results, errors = [], []

    def work():
        try:
            results.append(explainer.explain(x))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 4
    for r in results:
        np.testing.assert_allclose(r, expected, atol=1e-6)


def test_all_zero_map_gives_zeros_not_nan(trained, untrained):
    # No blob: the trained model is confident "normal" (negative logit), ReLU leaves nothing.
    _, explainer = trained
    x = blob_image(np.random.default_rng(6))
    out = explainer.forward_with_cam(x)
    assert out["logit"][0] < 0 and np.isfinite(out["cam"]).all() and out["cam"].max() == 0
    for method in ALL_METHODS:
        heat = explainer.explain(x, method=method, output_size=(20, 30))
        assert heat.shape == (20, 30) and heat.dtype == np.float32
        assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1
    assert explainer.explain(x, "gradcam").max() == 0
    assert explainer.explain(x, "gradcam-tfkv").max() == 0
    # The guard itself: flat, zero and non-finite maps.
    for flat in (np.zeros((7, 7)), np.full((7, 7), 3.0), np.full((7, 7), np.nan)):
        heat = finish_cam(flat, (14, 21))
        assert heat.shape == (14, 21) and heat.dtype == np.float32 and not heat.any()
    # A black image through the untrained model stays finite too.
    heat = untrained.explain(np.zeros((SIZE, SIZE, 3), np.uint8), "scorecam")
    assert np.isfinite(heat).all()


def test_unknown_method_and_bad_input(untrained):
    x = np.zeros((SIZE, SIZE, 3), np.uint8)
    with pytest.raises(ConfigError, match="gradcam\\+\\+"):
        untrained.explain(x, method="lime")
    with pytest.raises(ValueError):
        untrained.explain(x, method="lime")
    with pytest.raises(ImageError):
        untrained.explain(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(PneumoError):
        untrained.explain(np.zeros((2, SIZE, SIZE, 3), np.uint8))
    with pytest.raises(ConfigError):
        Explainer(untrained.model, cam_layer="no_such_layer")


def test_overlay_opacity_extremes(tmp_path):
    gray = np.linspace(0, 1, 12 * 10, dtype=np.float32).reshape(12, 10)
    heat = np.zeros((12, 10), np.float32)
    heat[3:6, 4:8] = 1.0
    g8 = np.rint(gray * 255).astype(np.uint8)

    none = overlay(gray, heat, opacity=0.0)
    assert none.dtype == np.uint8 and none.shape == (12, 10, 3)
    np.testing.assert_array_equal(none, np.repeat(g8[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(overlay(g8, heat, opacity=0.0), none)  # uint8 input too

    pure = overlay(gray, heat, opacity=1.0)
    np.testing.assert_array_equal(pure[4, 5], [128, 0, 0])  # jet at 1.0: dark red
    np.testing.assert_array_equal(pure[0, 0], [0, 0, 128])  # jet at 0.0: dark blue
    assert (pure[0, 0] == pure[11, 9]).all()  # the film does not show through

    half = overlay(gray, heat, opacity=0.4).astype(int)
    assert (np.abs(half - (0.6 * none + 0.4 * pure)) <= 1).all()
    # A heatmap of another size is resized onto the film.
    assert overlay(gray, np.ones((3, 3)), opacity=0.5).shape == (12, 10, 3)
    with pytest.raises(ConfigError):
        overlay(gray, heat, opacity=1.5)
    with pytest.raises(ConfigError):
        overlay(gray, heat, colormap="rainbowish")

    path = save_heatmap_png(tmp_path / "sub" / "heat.png", gray, heat, opacity=0.4)
    import cv2

    back = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(back, overlay(gray, heat, opacity=0.4))


def test_mixed_precision_model_compiled_only():
    # The compiled path casts to float32 and works on a bf16 model; tf-keras-vis does not.
    model = build_model(ModelConfig(backbone="tiny", weights="none"), SIZE, "mixed_bfloat16")
    explainer = Explainer(model)
    x = blob_image(np.random.default_rng(7), POSITIONS[0])
    out = explainer.forward_with_cam(x)
    assert out["cam"].dtype == np.float32 and np.isfinite(out["cam"]).all()
    heat = explainer.explain(x, "gradcam", output_size=(30, 40))
    assert heat.shape == (30, 40) and np.isfinite(heat).all()
    with pytest.raises(ConfigError, match="float32"):
        explainer.explain(x, "gradcam++")


def test_display_pictures_keep_the_aspect_and_the_heat_where_it_was():
    """`render.fit_within` (the one display resize) and `render.thumbnail`: the longer side
    bounded, the aspect kept, a small image left alone, and the heatmap's hot corner still
    the picture's reddest corner after the shrink."""
    from pneumo.render import fit_within, thumbnail

    film = np.linspace(0, 1, 900 * 600, dtype=np.float32).reshape(900, 600)
    assert fit_within(film, 300).shape == (300, 200)
    assert fit_within(film, 1000).shape == film.shape
    heat = np.zeros((7, 7), np.float32)
    heat[0, 0] = 1.0  # top left hot
    picture = thumbnail(film, heat, 300)
    assert picture.shape == (300, 200, 3) and picture.dtype == np.uint8
    red_minus_blue = picture[..., 0].astype(int) - picture[..., 2].astype(int)
    assert red_minus_blue[:40, :40].mean() > red_minus_blue[-40:, -40:].mean() + 50
    alone = thumbnail(film, None, 300)
    assert alone.shape == (300, 200, 3)
    assert np.ptp(alone.astype(int) - alone[..., :1].astype(int)) == 0  # gray: R = G = B
