"""`read_image` over a generated corpus of good and bad inputs, and `to_model_input`'s contract."""

from __future__ import annotations

import io
import json
import logging
import tracemalloc
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import missing_shared
from PIL import Image

from corpus import CASE_NAMES, SECRETS, Case, build_corpus, film8, names
from pneumo.errors import ImageError
from pneumo.imageio import TECHNICAL_TAGS, XrayImage, read_image
from pneumo.preprocess import load_model_input, to_model_input


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, Case]:
    return {c.name: c for c in build_corpus(tmp_path_factory.mktemp("corpus"))}


OK_NAMES, ERR_NAMES = names("ok"), names("error")
DICOM_OK, DICOM_ERR = names("ok", "dicom_"), names("error", "dicom_")


def assert_valid(img: XrayImage) -> None:
    assert isinstance(img, XrayImage)
    assert img.pixels.dtype == np.float32 and img.pixels.ndim == 2
    assert np.all(np.isfinite(img.pixels))
    assert img.pixels.min() >= 0.0 and img.pixels.max() <= 1.0


def test_corpus_is_complete(corpus):
    assert list(corpus) == CASE_NAMES and len(CASE_NAMES) >= 40
    assert len(OK_NAMES) >= 20 and len(ERR_NAMES) >= 12 and len(DICOM_OK) >= 5


@pytest.mark.parametrize("name", OK_NAMES)
def test_ok_case(corpus, name):
    case = corpus[name]
    img = read_image(case.path)
    assert_valid(img)
    assert img.format == case.expected_format
    if case.check:
        case.check(img)


@pytest.mark.parametrize("name", ERR_NAMES)
def test_error_case(corpus, name):
    case = corpus[name]
    with pytest.raises(ImageError) as info:  # any other exception type fails the test
        read_image(case.path)
    message = str(info.value)
    assert message.strip() and str(case.path) in message
    assert case.message.lower() in message.lower(), message


@pytest.mark.parametrize("name", ["bomb_png_50000", "bomb_png_8000", "dicom_bomb_rows"])
def test_bombs_are_refused_without_allocating(corpus, name):
    data = corpus[name].data
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match="bomb"):
            read_image(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.0f} MiB while refusing a bomb"


def sources(path: Path):
    """The same file as a path, a str, bytes, bytearray, BytesIO and an open binary file."""
    data = path.read_bytes()
    yield path
    yield str(path)
    yield data
    yield bytearray(data)
    yield io.BytesIO(data)
    with open(path, "rb") as fh:
        yield fh


@pytest.mark.parametrize("name", OK_NAMES)
def test_every_source_kind_gives_identical_pixels(corpus, name):
    path = corpus[name].path
    results = [read_image(src) for src in sources(path)]
    for other in results[1:]:
        assert other.format == results[0].format and other.bit_depth == results[0].bit_depth
        np.testing.assert_array_equal(other.pixels, results[0].pixels)


@pytest.mark.parametrize("name", [n for n in ERR_NAMES if n != "over_64_mb"])
def test_every_source_kind_raises_image_error(corpus, name):
    for src in sources(corpus[name].path):
        with pytest.raises(ImageError):
            read_image(src, name="upload.png")


def test_over_limit_file_object_and_bytes_are_refused():
    data = b"\x89PNG\r\n\x1a\n" + b"\x00" * (64 * 2**20 + 1)
    for src in (data, io.BytesIO(data)):
        with pytest.raises(ImageError, match="64 MB limit"):
            read_image(src)


@pytest.mark.parametrize("src, match", [
    (Path("/nonexistent/film.png"), "not found"),
    ("bad\x00name.png", "not found|cannot read"),
    ("x" * 5000 + ".png", "cannot read|not found"),
    (io.StringIO("not binary"), "binary mode"),
    (12345, "cannot read a int"),
], ids=["missing", "nul-in-name", "name-too-long", "text-stream", "int"])
def test_unusable_sources_raise_image_error(src, match):
    with pytest.raises(ImageError, match=match):
        read_image(src)


def test_closed_file_object_raises_image_error(tmp_path):
    path = tmp_path / "film.png"
    Image.fromarray(film8()).save(path)
    with open(path, "rb") as fh:
        pass
    with pytest.raises(ImageError, match="cannot read from the file object"):
        read_image(fh)


def test_directory_raises_image_error(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        read_image(tmp_path)


# --- numpy arrays --------------------------------------------------------------------------------

def test_array_uint8():
    arr = film8()
    img = read_image(arr)
    assert_valid(img)
    np.testing.assert_allclose(img.pixels, arr / 255, atol=1e-6)
    assert img.format == "array" and img.bit_depth == 8


def test_array_uint16_uses_bits_in_use():
    arr = (film8().astype(np.uint16) * 16)  # 12-bit data: max 4080
    img = read_image(arr)
    assert img.bit_depth == 12
    np.testing.assert_allclose(img.pixels, arr / 4095, atol=1e-6)


def test_array_float_is_kept():
    arr = film8().astype(np.float64) / 255
    np.testing.assert_allclose(read_image(arr).pixels, arr, atol=1e-6)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_array_channels(channels):
    gray = film8()
    arr = np.repeat(gray[:, :, None], channels, axis=2)
    if channels == 4:
        arr[..., 3] = 7  # alpha is ignored
    img = read_image(arr)
    assert_valid(img)
    assert img.pixels.shape == gray.shape and img.colourfulness == 0.0
    np.testing.assert_allclose(img.pixels, gray / 255, atol=1e-5)


def test_array_rgb_colour_is_measured():
    arr = np.zeros((64, 64, 3), np.uint8)
    arr[..., 0] = 255  # pure red
    img = read_image(arr)
    assert img.colourfulness == pytest.approx(1.0)
    np.testing.assert_allclose(img.pixels, 0.299, atol=1e-5)


@pytest.mark.parametrize("arr, match", [
    (np.zeros((64, 64, 2), np.uint8), "expected an"),
    (np.zeros((4, 64, 64, 3), np.uint8), "expected an"),
    (np.zeros((8, 64), np.uint8), "too small"),
    (np.zeros((64, 64), np.int64), "dtype"),
    (np.zeros((64, 64), bool), "dtype"),
    (np.full((64, 64), np.nan), "NaN"),
    (np.full((64, 64), 2.0), r"\[0, 1\]"),
    (np.full((64, 64), -0.5), r"\[0, 1\]"),
])
def test_bad_arrays_raise_image_error(arr, match):
    with pytest.raises(ImageError, match=match):
        read_image(arr)


# --- privacy -------------------------------------------------------------------------------------

def test_secrets_are_really_in_the_dicom_files(corpus):
    """Guards the privacy tests below against passing because the fixture lost its secrets."""
    for name in DICOM_OK + DICOM_ERR:
        data = corpus[name].data
        for value in SECRETS.values():
            assert value.encode() in data, (name, value)


@pytest.mark.parametrize("name", DICOM_OK)
def test_technical_holds_no_identifying_tags(corpus, name):
    img = read_image(corpus[name].path)
    assert img.technical["Modality"] == "DX"  # technical tags do come through
    assert set(img.technical) <= set(TECHNICAL_TAGS)
    dumped = json.dumps(img.technical)  # also proves the values are plain JSON types
    for keyword, value in SECRETS.items():
        assert keyword not in dumped
        for part in value.split("^"):
            assert part not in dumped


@pytest.mark.parametrize("name", DICOM_ERR)
def test_dicom_error_messages_hold_no_identifying_values(corpus, name):
    with pytest.raises(ImageError) as info:
        read_image(corpus[name].path)
    for value in SECRETS.values():
        assert value not in str(info.value)


@pytest.mark.parametrize("name", DICOM_OK + DICOM_ERR)
def test_dicom_warnings_and_logs_hold_no_identifying_values(corpus, name, caplog):
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            read_image(corpus[name].path)
        except ImageError:
            pass
    said = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    for value in SECRETS.values():
        assert not any(value in text for text in said), f"{value!r} in warnings or logs"


def test_technical_reports_transfer_syntax(corpus):
    img = read_image(corpus["dicom_monochrome2"].path)
    assert img.technical["TransferSyntaxUID"] == "1.2.840.10008.1.2.1"
    assert img.technical["BitsStored"] == 12 and type(img.technical["BitsStored"]) is int


# --- to_model_input ------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(240, 320), (1000, 700), (50, 100), (224, 224)])
@pytest.mark.parametrize("size", [224, 64])
def test_model_input_shape_and_dtype(shape, size):
    gray = np.random.default_rng(0).random(shape, dtype=np.float32)
    out = to_model_input(gray, size)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])


@pytest.mark.parametrize("shape", [(200, 400), (400, 200), (60, 120)])
def test_model_input_squashes_without_letterbox(shape):
    h, w = shape
    gray = np.zeros(shape, np.float32)
    gray[:, : w // 2] = 1.0  # left half white
    out = to_model_input(gray, 224)[..., 0]
    # JPEG (quality 75, as the training films) rings within a block of the edge: compare away
    # from it, and over the full height (a letterbox would leave black rows).
    assert np.all(out[:, :104] >= 245), "left half must stay white over the full height"
    assert np.all(out[:, 120:] <= 10), "right half must stay black over the full height"


def test_model_input_matches_a_training_film():
    """A 224 px q75 JPEG (how every training film is stored) passes almost unchanged, while a
    smooth full-size image gets the 8x8 block quantisation the training films carry."""
    from PIL import Image

    rng = np.random.default_rng(3)
    smooth = cv2.GaussianBlur(rng.random((224, 224), dtype=np.float32), (0, 0), 3)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    raw = np.rint(smooth * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(raw).convert("RGB").save(buffer, "JPEG", quality=75)
    film = np.asarray(Image.open(buffer).convert("L"))
    again = to_model_input(film.astype(np.float32) / 255.0, 224)[..., 0]
    assert np.abs(again.astype(int) - film).mean() < 0.05  # idempotent on the training format
    assert np.abs(to_model_input(smooth, 224)[..., 0].astype(int) - raw).mean() > 0.2


def test_model_input_keeps_intensity():
    gray = np.full((300, 500), 0.5, np.float32)
    assert np.all(to_model_input(gray) == 128)


def test_model_input_rejects_colour():
    with pytest.raises(ValueError):
        to_model_input(np.zeros((224, 224, 3), np.float32))


def test_load_model_input_from_corpus_file(corpus):
    out = load_model_input(corpus["png_8bit"].path, 224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    expected = to_model_input(read_image(corpus["png_8bit"].path).pixels, 224)
    np.testing.assert_array_equal(out, expected)


# --- real films from the shared data -------------------------------------------------------------

def test_full_size_film_matches_training_images(shared_data):
    val = sorted((shared_data / "chest_xray" / "val" / "NORMAL").glob("*.jpeg"))
    train = sorted((shared_data / "chest_xray" / "train" / "NORMAL").glob("*.jpeg"))[:30]
    if not val or len(train) < 10:
        missing_shared(f"chest_xray val/NORMAL or train/NORMAL images missing under {shared_data}")
    train_means = np.array([load_model_input(p, 224).mean() for p in train])
    lo = train_means.mean() - 4 * train_means.std()
    hi = train_means.mean() + 4 * train_means.std()
    for path in val:
        img = read_image(path)
        assert img.format == "JPEG" and min(img.size) > 224 and img.colourfulness < 0.02
        x = to_model_input(img.pixels, 224)
        assert x.shape == (224, 224, 3) and x.dtype == np.uint8
        assert 60 < x.mean() < 200 and lo < x.mean() < hi, (path.name, x.mean(), lo, hi)
        assert 25 < x[..., 0].std() < 100, (path.name, x[..., 0].std())


def _jpeg(side_w: int, side_h: int) -> bytes:
    import io as _io

    from PIL import Image as _Image

    yy, xx = np.mgrid[0:side_h, 0:side_w]
    film = (0.5 + 0.4 * np.sin(xx / 37.0) * np.cos(yy / 23.0)) * 255
    buffer = _io.BytesIO()
    _Image.fromarray(film.astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_a_large_jpeg_decodes_at_a_reduced_scale_that_keeps_twice_the_model_size():
    from pneumo.preprocess import to_model_input

    data = _jpeg(1776, 1416)
    full = read_image(data)
    reduced = read_image(data, model_size=224)
    assert full.size == (1416, 1776)
    assert reduced.size == (708, 888)  # libjpeg's 1/2: the largest scale keeping >= 448 px
    a, b = to_model_input(full.pixels), to_model_input(reduced.pixels)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 1.0  # grey levels, of 255


def test_reduced_decode_leaves_small_jpegs_and_other_formats_alone():
    import io as _io

    from PIL import Image as _Image

    small = _jpeg(440, 900)  # not more than twice 224 in both directions
    assert read_image(small, model_size=224).size == (900, 440)
    buffer = _io.BytesIO()
    _Image.fromarray(np.full((1000, 1000), 128, np.uint8)).save(buffer, "PNG")
    assert read_image(buffer.getvalue(), model_size=224).size == (1000, 1000)
