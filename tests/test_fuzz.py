"""Fuzz `read_image` with mutated PNG, JPEG and DICOM files.

Whatever the bytes, `read_image` must return a valid image (float32, 2-D, finite, in [0, 1])
or raise `ImageError`, never another exception (no time limit per input: a wall-clock
deadline flakes on two shared cores; the bomb tests check that nothing huge is decoded).
Mutations are byte-level (bit flips, truncation, insertion, deletion, overwrites)
and structural (header fields rewritten with valid checksums, so decoders get past them).
The run is derandomised and budgeted, so CI sees the same examples every time.
"""

from __future__ import annotations

import io
import json
import logging
import struct
import warnings
import zlib
from contextlib import contextmanager

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corpus import SECRETS, dicom_bytes, encode, film, film8, png_chunk, twelve_bit
from pneumo.errors import ImageError
from pneumo.imageio import read_image
from PIL import Image

FUZZ = settings(
    max_examples=150, derandomize=True, deadline=None, database=None, print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

PNG_SEED = encode(Image.fromarray(film8(48, 64)), "PNG")
JPEG_SEED = encode(Image.fromarray(film8(48, 64)), "JPEG", quality=80)
DICOM_SEED = dicom_bytes(twelve_bit(film(48, 64)), window=(2048, 4000))

SIZES = st.sampled_from([0, 1, 31, 32, 48, 64, 255, 256, 4097, 7000, 8000, 65535, 2**31 - 1,
                         2**32 - 1])


def assert_image_or_image_error(data: bytes) -> list[str]:
    """The one property: a valid grayscale image, or an ImageError with a message.

    Returns everything the reader let out: the error message or the technical tags, and any
    warnings and pydicom log lines, for the privacy check.
    """
    with reader_output() as said:
        try:
            img = read_image(data, name="fuzz")
        except ImageError as exc:
            assert str(exc).startswith("fuzz: ") and len(str(exc)) > len("fuzz: ")
            said.append(str(exc))
            return said
    px = img.pixels
    assert px.dtype == np.float32 and px.ndim == 2 and min(px.shape) >= 32
    assert np.all(np.isfinite(px)) and px.min() >= 0.0 and px.max() <= 1.0
    assert 0.0 <= img.colourfulness <= 1.0
    said.append(json.dumps(img.technical))
    return said


@contextmanager
def reader_output():
    """Collect the warnings and pydicom log lines emitted inside the block."""
    said: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: said.append(record.getMessage())
    logger = logging.getLogger("pydicom")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield said
    finally:
        logger.removeHandler(handler)
        said.extend(str(w.message) for w in caught)


# --- byte-level mutations ------------------------------------------------------------------------

@st.composite
def byte_mutations(draw, seed: bytes, header: int) -> bytes:
    """1-4 random edits, half of them aimed at the first `header` bytes where parsers live."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        end = len(data) - 1
        pos = draw(st.integers(0, min(header, end)) | st.integers(0, end))
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite"]))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        else:
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[pos : pos + len(chunk)] = chunk
    return bytes(data)


# --- structural mutations ------------------------------------------------------------------------

PNG_COLOUR_DEPTHS = [  # (colour type, bit depth): every valid pair, then some invalid ones
    (0, 1), (0, 2), (0, 4), (0, 8), (0, 16), (2, 8), (2, 16), (3, 1), (3, 2), (3, 4), (3, 8),
    (4, 8), (4, 16), (6, 8), (6, 16), (1, 8), (7, 8), (0, 3), (2, 4), (3, 16), (0, 255),
]
PNG_RAW = zlib.decompress(PNG_SEED[PNG_SEED.index(b"IDAT") + 4 : PNG_SEED.index(b"IEND") - 8])


def png_file(ihdr: bytes, raw: bytes, plte: bytes | None = None) -> bytes:
    chunks = png_chunk(b"IHDR", ihdr) + (png_chunk(b"PLTE", plte) if plte is not None else b"")
    return b"\x89PNG\r\n\x1a\n" + chunks + png_chunk(b"IDAT", zlib.compress(raw)) + \
        png_chunk(b"IEND", b"")


@st.composite
def png_headers(draw) -> bytes:
    """The seed's pixel data behind a rewritten IHDR (valid CRC): any size, depth, colour type."""
    colour, depth = draw(st.sampled_from(PNG_COLOUR_DEPTHS))
    size = SIZES | st.sampled_from([32, 48, 64, 96])
    ihdr = struct.pack(">IIBBBBB", draw(size), draw(size), depth, colour,
                       draw(st.sampled_from([0, 0, 0, 1])), draw(st.sampled_from([0, 0, 0, 1])),
                       draw(st.sampled_from([0, 0, 1, 2])))
    plte = draw(st.none() | st.binary(min_size=0, max_size=800))
    return png_file(ihdr, PNG_RAW, plte)


@st.composite
def png_pixel_mutations(draw) -> bytes:
    """Mutated filter bytes and rows inside a valid zlib stream and CRC: reaches the decoder."""
    ihdr = PNG_SEED[16:29]
    return png_file(ihdr, draw(byte_mutations(PNG_RAW, header=len(PNG_RAW))))


@st.composite
def jpeg_headers(draw) -> bytes:
    """The seed with a rewritten start-of-frame: type, precision, size, components, sampling."""
    data = bytearray(JPEG_SEED)
    sof = data.index(b"\xff\xc0")
    data[sof + 1] = draw(st.sampled_from([0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC9, 0xCF]))
    data[sof + 4] = draw(st.sampled_from([8, 12, 16, 0, 255]))
    struct.pack_into(">HH", data, sof + 5, draw(SIZES) & 0xFFFF, draw(SIZES) & 0xFFFF)
    data[sof + 9] = draw(st.sampled_from([1, 1, 0, 3, 4, 255]))
    data[sof + 11] = draw(st.sampled_from([0x11, 0x22, 0x00, 0xFF, 0x41]))
    data[sof + 12] = draw(st.sampled_from([0, 1, 3, 255]))
    return bytes(data)


TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90", "1.2.3.4",
]
DICOM_FIELDS = {
    "Rows": SIZES.map(lambda v: v & 0xFFFF),
    "Columns": SIZES.map(lambda v: v & 0xFFFF),
    "BitsAllocated": st.sampled_from([0, 1, 8, 12, 16, 32, 64]),
    "BitsStored": st.sampled_from([0, 1, 8, 12, 16, 17, 32]),
    "HighBit": st.sampled_from([0, 7, 11, 15, 31]),
    "PixelRepresentation": st.sampled_from([0, 1, 2]),
    "SamplesPerPixel": st.sampled_from([0, 1, 2, 3, 4]),
    "PlanarConfiguration": st.sampled_from([0, 1, 2]),
    "PhotometricInterpretation": st.sampled_from(
        ["MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR",
         "XYZ", ""]),
    "NumberOfFrames": st.sampled_from(["0", "1", "2", "1000", "-1", "abc"]),
    "WindowCenter": st.sampled_from(["2048", "0", "-5", "1e9", "nan", "x", "100\\200"]),
    "WindowWidth": st.sampled_from(["4000", "0", "0.5", "-10", "1e-9", "inf", "50\\60"]),
    "VOILUTFunction": st.sampled_from(["LINEAR", "LINEAR_EXACT", "SIGMOID", "BOGUS"]),
    "RescaleSlope": st.sampled_from(["1", "0", "-1", "1e30", "nan"]),
    "RescaleIntercept": st.sampled_from(["0", "-1024", "1e308"]),
}


@st.composite
def dicom_headers(draw) -> bytes:
    """The seed with 1-4 image-pixel fields rewritten, maybe a new transfer syntax and
    truncated, extended or encapsulated pixel data."""
    from pydicom import dcmread
    from pydicom.encaps import encapsulate

    ds = dcmread(io.BytesIO(DICOM_SEED))
    for keyword in draw(st.lists(st.sampled_from(sorted(DICOM_FIELDS)), min_size=1,
                                 max_size=4, unique=True)):
        value = draw(DICOM_FIELDS[keyword])
        ds[keyword] = _element(ds, keyword, value)
    pixels = ds.PixelData
    cut = draw(st.sampled_from([None, 0, 1, 100, len(pixels) // 2, len(pixels) + 4096]))
    if cut is not None:
        pixels = (pixels + b"\x5a" * 4096)[:cut]
    if draw(st.booleans()) and pixels:
        ds.PixelData = encapsulate([pixels])
        ds["PixelData"].is_undefined_length = True
    else:
        ds.PixelData = pixels
    ds["PixelData"].VR = "OB"
    return _serialise(ds, draw(st.sampled_from(TRANSFER_SYNTAXES)))


DICOM_LENGTHS = [  # explicit-VR elements with a 2-byte length, tag + VR as in the seed
    b"\x02\x00\x02\x00UI", b"\x02\x00\x10\x00UI", b"\x08\x00\x60\x00CS",
    b"\x08\x00\x70\x00LO", b"\x10\x00\x10\x00PN", b"\x18\x00\x15\x00CS",
    b"\x28\x00\x04\x00CS", b"\x28\x00\x10\x00US", b"\x28\x00\x50\x10DS",
]
PIXEL_DATA = b"\xe0\x7f\x10\x00OW\x00\x00"  # then a 4-byte length


@st.composite
def dicom_lengths(draw) -> bytes:
    """The seed with element lengths rewritten: values that run on into (or stop short of)
    their neighbours, and pixel data of the wrong or undefined length."""
    data = bytearray(DICOM_SEED)
    length = st.integers(0, 1200) | st.sampled_from([0, 1, 2, 3, 0xFFFF])
    for element in draw(st.lists(st.sampled_from(DICOM_LENGTHS), min_size=1, max_size=2,
                                 unique=True)):
        struct.pack_into("<H", data, data.index(element) + 6, draw(length))
    if draw(st.booleans()):
        pixel_length = st.sampled_from([0, 1, 6143, 6145, 2**31, 0xFFFFFFFF]) | \
            st.integers(0, 2**32 - 1)
        struct.pack_into("<I", data, data.index(PIXEL_DATA) + 8, draw(pixel_length))
    return bytes(data)


def _element(ds, keyword: str, value):
    """A data element with a possibly invalid value, written as raw text where it is text."""
    from pydicom.dataelem import DataElement
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    tag = tag_for_keyword(keyword)
    vr = dictionary_VR(tag)
    if vr == "US":
        return DataElement(tag, vr, int(value))
    return DataElement(tag, "LO" if vr in ("IS", "DS") else vr, str(value))  # no validation


def _serialise(ds, transfer_syntax: str) -> bytes:
    """Write `ds` as explicit-VR little endian under any transfer syntax UID in the meta."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    fp = DicomBytesIO()
    fp.write(b"\x00" * 128 + b"DICM")
    meta = ds.file_meta
    meta.TransferSyntaxUID = transfer_syntax
    write_file_meta_info(fp, meta, enforce_standard=True)
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


# --- the tests -----------------------------------------------------------------------------------

def test_seeds_are_valid():
    """The mutations start from files that do decode, so a mutation is what breaks them."""
    for seed in (PNG_SEED, JPEG_SEED, DICOM_SEED):
        assert read_image(seed).pixels.shape == (48, 64)


@FUZZ
@given(st.one_of(byte_mutations(PNG_SEED, header=64), png_headers(),
                 png_pixel_mutations()))
def test_fuzz_png(data):
    assert_image_or_image_error(data)


@FUZZ
@given(st.one_of(byte_mutations(JPEG_SEED, header=700), jpeg_headers()))
def test_fuzz_jpeg(data):
    assert_image_or_image_error(data)


@FUZZ
@given(st.one_of(byte_mutations(DICOM_SEED, header=900), dicom_headers(), dicom_lengths()))
def test_fuzz_dicom(data):
    said = assert_image_or_image_error(data)
    for value in SECRETS.values():
        assert not any(value in text for text in said), f"{value!r} leaked: {said}"
