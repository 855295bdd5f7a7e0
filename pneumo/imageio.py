"""Read one image (PNG, JPEG, TIFF, BMP, WebP or DICOM) into a normalised grayscale array.

Training and serving both start here, so an upload and a training image become the same kind
of array: float32, shape (H, W), values in [0, 1], 0 = black. Anything that is not a readable
image raises `ImageError` with a message a user can act on.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

ImageSource = Union[str, Path, bytes, bytearray, IO[bytes], np.ndarray]

MAX_FILE_BYTES = 64 * 1024 * 1024  # larger than any chest film; matches the app's upload limit
MAX_PIXELS = 60_000_000  # ~7,700 px square; a film is ~3,000 px; stops decompression bombs
MIN_SIDE = 32  # below this there is nothing to see
# Compression never packs a real film tighter than ~1,000 pixels a byte (deflate's limit on a
# blank image); a tiny file declaring a big image would make the decoder invent the pixels.
MAX_PIXELS_PER_BYTE = 2048
FREE_PIXELS = 4_000_000  # images up to this size are decoded whatever their file size
PIL_FORMATS = {"PNG", "JPEG", "MPO", "TIFF", "BMP", "WEBP"}
DICOM_MAGIC_OFFSET = 128

# Technical DICOM tags a user may look at; identifying tags are never copied out of the file.
TECHNICAL_TAGS = (
    "Modality", "BodyPartExamined", "ViewPosition", "PhotometricInterpretation", "Rows",
    "Columns", "BitsStored", "PixelSpacing", "WindowCenter", "WindowWidth", "RescaleSlope",
    "RescaleIntercept", "Manufacturer", "NumberOfFrames", "TransferSyntaxUID",
)


@dataclass
class XrayImage:
    """A decoded image: `pixels` float32 (H, W) in [0, 1], plus facts about where it came from."""

    pixels: np.ndarray
    format: str
    bit_depth: int
    colourfulness: float = 0.0  # mean chroma in [0, 1]; X-rays are ~0
    technical: dict[str, Any] = field(default_factory=dict)  # DICOM technical tags only

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the original image."""
        return self.pixels.shape[0], self.pixels.shape[1]


def read_image(source: ImageSource, name: str | None = None,
               model_size: int | None = None) -> XrayImage:
    """Decode `source` (path, bytes, file-like object or array) into an `XrayImage`.

    model_size: the side the image will be squashed to. A JPEG more than twice that in both
    directions is then decoded at a reduced scale (libjpeg's DCT scaling, 1/2 to 1/8) that
    still leaves at least twice `model_size` per side: a 1776x1416 film decodes at 888x708,
    about a quarter of the work, and the squash to the model input barely changes
    (docs/experiments.md, "Decode at the size the model needs"). Other formats are decoded in
    full. None: always in full (what the display of a film alone would want).

    Raises:
        ImageError: empty, truncated, unsupported, too large or too small input, or a DICOM
            file without readable pixel data. The message names the input and what to do.
    """
    label = name or (str(source) if isinstance(source, (str, Path)) else "input")
    if isinstance(source, np.ndarray):
        return _from_array(source, label)
    data = _read_bytes(source, label)
    if _is_dicom(data):
        return _read_dicom(data, label)
    return _read_pil(data, label, model_size)


# --- bytes in ------------------------------------------------------------------------------------

def _read_bytes(source: ImageSource, label: str) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    elif isinstance(source, (str, Path)):
        data = _read_path(Path(source), label)
    elif hasattr(source, "read"):
        data = _read_stream(source, label)
    else:
        raise ImageError(
            f"{label}: cannot read a {type(source).__name__}; pass a path, bytes, a binary "
            "file object or a numpy array"
        )
    if not data:
        raise ImageError(f"{label}: the file is empty")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{label}: file is over the {MAX_FILE_BYTES // 2**20} MB limit")
    return data


def _read_path(path: Path, label: str) -> bytes:
    try:
        if not path.is_file():
            raise ImageError(f"{label}: file not found")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ImageError(
                f"{label}: file is {size / 2**20:.0f} MB, over the "
                f"{MAX_FILE_BYTES // 2**20} MB limit; export a smaller PNG or JPEG"
            )
        return path.read_bytes()
    except ImageError:
        raise
    except (OSError, ValueError) as exc:  # permissions, a name too long, a NUL in the name
        raise ImageError(f"{label}: cannot read the file ({exc})") from None


def _read_stream(stream: IO[bytes], label: str) -> bytes:
    try:
        data = stream.read(MAX_FILE_BYTES + 1)
    except (OSError, ValueError) as exc:  # a closed file, a failing network stream
        raise ImageError(f"{label}: cannot read from the file object ({exc})") from None
    if isinstance(data, memoryview):
        data = data.tobytes()
    if not isinstance(data, (bytes, bytearray)):
        raise ImageError(f"{label}: file-like object must be opened in binary mode")
    return bytes(data)


def _is_dicom(data: bytes) -> bool:
    return data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM"


def _check_size(width: int, height: int, label: str, n_bytes: int | None = None) -> None:
    """Refuse absurd dimensions before decoding: too large, too small, or far too many pixels
    for the `n_bytes` of the file they come from."""
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{label}: {width}x{height} pixels is larger than any chest film "
            f"(limit {MAX_PIXELS / 1e6:.0f} megapixels); this looks like a decompression bomb "
            "or a wrong file"
        )
    if min(width, height) < MIN_SIDE:
        raise ImageError(
            f"{label}: {width}x{height} pixels is too small to be an X-ray "
            f"(at least {MIN_SIDE} px per side)"
        )
    if n_bytes is not None and width * height > max(FREE_PIXELS, MAX_PIXELS_PER_BYTE * n_bytes):
        raise ImageError(
            f"{label}: a {width}x{height} image cannot come from a {n_bytes}-byte file; it is "
            "truncated or a decompression bomb"
        )


# --- PNG, JPEG, TIFF, BMP, WebP via Pillow -------------------------------------------------------

def _read_pil(data: bytes, label: str, model_size: int | None = None) -> XrayImage:
    with warnings.catch_warnings():
        # PIL's own bomb warning is replaced by our explicit limit below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = _open_pil(data, label)
        fmt = img.format or "unknown"
        if fmt not in PIL_FORMATS:
            raise ImageError(
                f"{label}: {fmt} images are not supported; export the X-ray as PNG, JPEG or DICOM"
            )
        _check_size(img.width, img.height, label, len(data))  # before any pixel is decoded
        try:
            _reduce_decode(img, model_size)
            img.load()
            img = ImageOps.exif_transpose(img)  # phones store rotation in EXIF
            return _from_pil(img, "JPEG" if fmt == "MPO" else fmt, label)
        except ImageError:
            raise
        except Exception as exc:  # truncated or corrupt pixel data, an impossible mode
            raise ImageError(f"{label}: the {fmt} file is truncated or corrupt ({exc})") from None


def _reduce_decode(img: Image.Image, model_size: int | None) -> None:
    """Ask libjpeg to decode a large JPEG at a reduced scale that keeps >= 2 x model_size per
    side (Pillow's `draft` picks the largest such 1/2, 1/4 or 1/8). A no-op for other formats,
    for films not more than twice the model size, and without a model size."""
    if not model_size or img.format not in ("JPEG", "MPO"):
        return
    wanted = 2 * int(model_size)
    if img.width > wanted and img.height > wanted:
        img.draft(img.mode, (wanted, wanted))


def _open_pil(data: bytes, label: str) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise ImageError(_unidentified_message(data, label, exc)) from None
    except Exception as exc:  # PIL raises many types on malformed headers
        raise ImageError(f"{label}: not a readable image ({exc})") from None


def _damaged_format(data: bytes) -> str | None:
    """The format a file's magic bytes claim, for files Pillow could not even open."""
    if data.startswith(b"\x89PNG"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if data.startswith(b"BM") and data[6:10] == b"\x00\x00\x00\x00":  # reserved fields
        return "BMP"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WebP"
    return None


def _unidentified_message(data: bytes, label: str, exc: Exception) -> str:
    if isinstance(exc, Image.DecompressionBombError):
        return f"{label}: image dimensions are absurdly large (decompression bomb?)"
    known = _damaged_format(data)
    if known:
        return f"{label}: the {known} file is corrupt (its header cannot be read); export it again"
    head = data[:512].lstrip().lower()
    if head.startswith(b"%pdf"):
        kind = "a PDF document"
    elif head.startswith((b"<!doctype html", b"<html")):
        kind = "an HTML page"
    elif _looks_like_text(data[:2048]):
        kind = "a text file"
    else:
        kind = "not an image format pneumo reads"
    return f"{label}: this is {kind}; upload a chest X-ray as PNG, JPEG or DICOM"


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a character cut at the end of the sample is still text
        return exc.reason == "unexpected end of data"
    return True


def _from_pil(img: Image.Image, fmt: str, label: str) -> XrayImage:
    """Convert any PIL mode to grayscale [0, 1], keeping 16-bit precision where present."""
    if img.mode == "F":
        return XrayImage(_float_gray(np.asarray(img), label), fmt, 32)
    if img.mode.startswith("I"):  # I, I;16, I;16B, ...: 16-bit and 32-bit integer data
        arr = np.asarray(img, dtype=np.float64)
        return XrayImage(_finite(arr / float(2 ** _effective_bits(arr) - 1), label), fmt, 16)
    img = _to_rgb_or_l(img)
    colourfulness = 0.0
    if img.mode == "RGB":
        colourfulness = _colourfulness(np.asarray(img, dtype=np.float32) / 255.0)
        img = img.convert("L")
    gray = np.asarray(img, dtype=np.float32) / 255.0
    return XrayImage(_finite(gray, label), fmt, 8, colourfulness)


def _to_rgb_or_l(img: Image.Image) -> Image.Image:
    """8-bit modes to "L" or "RGB"; alpha carries no anatomy and is dropped."""
    if img.mode in ("L", "RGB"):
        return img
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA")  # apply the palette first: indices are not intensities
    if img.mode in ("1", "LA"):
        return img.convert("L")
    return img.convert("RGB")  # RGBA, RGBX, CMYK, YCbCr, ...; PIL raises for the impossible


def _float_gray(arr: np.ndarray, label: str) -> np.ndarray:
    """Float data in [0, 1] is kept; other float data is scaled like integers of its range."""
    arr = np.asarray(arr, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ImageError(f"{label}: the image contains NaN or infinite values")
    if arr.size and (arr.min() < 0 or arr.max() > 1):
        arr = arr / float(2 ** _effective_bits(arr) - 1)
    return _finite(arr, label)


def _effective_bits(arr: np.ndarray) -> int:
    """Bits actually used by integer data (12-bit films stored in 16-bit PNGs are common)."""
    peak = float(np.max(arr)) if arr.size else 0.0
    if not peak > 255:  # also NaN: the caller's finiteness check reports it
        return 8
    return int(min(16, max(8, np.ceil(np.log2(peak + 1)))))


def _colourfulness(rgb: np.ndarray) -> float:
    """Mean chroma (max - min over channels); 0 for a grayscale image stored as RGB."""
    step = max(1, max(rgb.shape[:2]) // 256)  # a subsample is plenty and keeps this cheap
    small = rgb[::step, ::step]
    return float(np.mean(small.max(axis=2) - small.min(axis=2)))


def _finite(gray: np.ndarray, label: str) -> np.ndarray:
    gray = np.asarray(gray, dtype=np.float32)
    if not np.all(np.isfinite(gray)):
        raise ImageError(f"{label}: the image contains NaN or infinite values")
    return np.clip(gray, 0.0, 1.0)


# --- numpy arrays --------------------------------------------------------------------------------

def _from_array(arr: np.ndarray, label: str) -> XrayImage:
    """Accept (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) arrays: uint8, uint16 or float in [0, 1]."""
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        arr = arr[..., :3] if arr.shape[2] == 4 else arr  # alpha carries no anatomy
    elif arr.ndim != 2:
        raise ImageError(f"{label}: expected an (H, W) or (H, W, C) array, received {arr.shape}")
    _check_size(arr.shape[1], arr.shape[0], label)
    scaled, bits = _scale_array(arr, label)
    colourfulness = 0.0
    if scaled.ndim == 3 and scaled.shape[2] == 3:
        colourfulness = _colourfulness(scaled)
        scaled = scaled @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    elif scaled.ndim == 3:
        scaled = scaled[..., 0]
    return XrayImage(_finite(scaled, label), "array", bits, colourfulness)


def _scale_array(arr: np.ndarray, label: str) -> tuple[np.ndarray, int]:
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0, 8
    if arr.dtype == np.uint16:
        bits = _effective_bits(arr)
        return arr.astype(np.float32) / float(2**bits - 1), bits
    if np.issubdtype(arr.dtype, np.floating):
        scaled = arr.astype(np.float32)
        if not np.all(np.isfinite(scaled)):
            raise ImageError(f"{label}: the array contains NaN or infinite values")
        if scaled.min() < 0 or scaled.max() > 1:
            raise ImageError(f"{label}: float arrays must hold values in [0, 1]")
        return scaled, 32
    raise ImageError(
        f"{label}: unsupported array dtype {arr.dtype}; pass uint8, uint16 or float in [0, 1]"
    )


# --- DICOM ---------------------------------------------------------------------------------------

def _read_dicom(data: bytes, label: str) -> XrayImage:
    from pydicom.config import disable_value_validation

    try:
        # pydicom's value validation quotes raw element bytes in warnings and the log; in a
        # corrupt file those bytes can be the patient's name: validation stays off here.
        with disable_value_validation():
            return _decode_dicom(data, label)
    except ImageError:
        raise
    except Exception as exc:  # pydicom parses lazily: a bad element can fail at any access
        raise ImageError(
            f"{label}: the DICOM file is corrupt ({_redacted(exc)}); export it again"
        ) from None


QUOTED = re.compile(r"b?'[^']*'" + r'|b?"[^"]*"')


def _redacted(exc: Exception) -> str:
    """An exception's type and text without quoted values: a corrupt element's value can run
    into the next elements and quote identifying data."""
    text = QUOTED.sub("'...'", str(exc))
    text = "".join(ch if ch.isprintable() else " " for ch in text)[:300]
    return f"{type(exc).__name__}: {text}"


def _decode_dicom(data: bytes, label: str) -> XrayImage:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise ImageError(
            f"{label}: this DICOM file has no pixel data (a structured report or "
            "presentation state?); export the image series instead"
        )
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    _check_size(cols, rows, label, len(data))
    arr = _first_frame(ds, label)
    technical = _technical(ds)
    if arr.ndim == 3 and arr.shape[-1] == 3:  # colour (pydicom already converted YBR to RGB)
        if arr.dtype not in (np.uint8, np.uint16):
            arr = np.clip(arr, 0, 65535).astype(np.uint16)
        return replace(_from_array(arr, label), format="DICOM", technical=technical)
    if arr.ndim != 2:
        raise ImageError(f"{label}: unexpected DICOM pixel array shape {arr.shape}")
    gray = _dicom_gray(arr, ds, label)
    bits = int(ds.get("BitsStored", 16) or 16)
    return XrayImage(_finite(gray, label), "DICOM", bits, 0.0, technical)


def _first_frame(ds: Any, label: str) -> np.ndarray:
    """Decode only the first frame: a multi-frame file's first frame is the film."""
    from pydicom.pixels import get_decoder, pixel_array
    from pydicom.uid import UID_dictionary

    try:
        return pixel_array(ds, index=0)
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        known = syntax in UID_dictionary  # else it may be garbage: never echo it
        name = syntax.name if known else "unknown"
        try:
            missing_codec = known and not get_decoder(syntax).is_available
        except Exception:  # a UID pydicom knows but cannot decode at all
            missing_codec = False
        hint = ("install a codec (pip install pylibjpeg pylibjpeg-libjpeg) or export it "
                "uncompressed" if missing_codec else "the pixel data is damaged; export it again")
        raise ImageError(
            f"{label}: cannot decode the DICOM pixel data (transfer syntax {name}; "
            f"{_redacted(exc)}); {hint}"
        ) from None


def _dicom_gray(arr: np.ndarray, ds: Any, label: str) -> np.ndarray:
    """Rescale, window and invert a monochrome frame into [0, 1], 0 = black."""
    from pydicom.pixels import apply_modality_lut

    values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ImageError(f"{label}: the DICOM pixel data contains NaN or infinite values")
    values, lo, hi = _apply_voi(values, ds)
    # hi < lo is a window under a negative rescale slope: the formula handles it as it is.
    gray = (values - lo) / (hi - lo) if hi != lo else np.zeros_like(values)  # blank frame
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")) == "MONOCHROME1":
        gray = 1.0 - np.clip(gray, 0.0, 1.0)  # MONOCHROME1 stores bone as dark: invert it
    return gray


def _apply_voi(values: np.ndarray, ds: Any) -> tuple[np.ndarray, float, float]:
    """Apply the file's VOI LUT or window; return the result and the values for black and white.

    A window maps its own range to black..white (data outside it saturates); with a VOI LUT
    or no VOI at all, the data's own min..max is used. An invalid window is ignored.
    """
    from pydicom.pixels import apply_voi_lut

    has_lut = bool(ds.get("VOILUTSequence"))
    has_window = "WindowCenter" in ds and "WindowWidth" in ds
    if has_window and not has_lut:
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                windowed = apply_voi_lut(values, ds, prefer_lut=True)
                black, white = apply_voi_lut(np.array([-np.inf, np.inf]), ds, prefer_lut=True)
            if np.all(np.isfinite(windowed)) and np.isfinite(black) and np.isfinite(white):
                return windowed, float(black), float(white)
        except Exception:  # width < 1, an unknown VOI function, a missing or non-numeric tag
            pass  # the window is unusable, the pixels are not: show the data as it is
    elif has_lut:
        values = np.asarray(apply_voi_lut(values, ds, prefer_lut=True), dtype=np.float64)
    return values, float(values.min()), float(values.max())


def _technical(ds: Any) -> dict[str, Any]:
    """The whitelisted technical tags. Unreadable or implausible values are left out: in a
    corrupt file a value can run on into the identifying elements that follow it."""
    technical = {}
    meta = getattr(ds, "file_meta", None)
    for tag in TECHNICAL_TAGS:
        source = meta if (tag == "TransferSyntaxUID" and meta is not None) else ds
        try:
            value = _plain(source.get(tag)) if tag in source else None
        except Exception:  # a corrupt element: drop it rather than fail the image
            continue
        if value is not None and _plausible(value):
            technical[tag] = value
    return technical


def _plausible(value: Any) -> bool:
    """Short printable text or numbers (DICOM's LO, CS and UI values are at most 64 chars)."""
    if isinstance(value, list):
        return len(value) <= 16 and all(_plausible(v) for v in value)
    if isinstance(value, float):
        return bool(np.isfinite(value))  # NaN is not JSON
    return not isinstance(value, str) or (len(value) <= 64 and value.isprintable())


def _plain(value: Any) -> Any:
    """DICOM values as JSON-friendly Python values."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_plain(v) for v in value]
    for kind in (bool, int, float, str):  # pydicom's IS, DSfloat, UID... become plain types
        if isinstance(value, kind):
            return kind(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
