"""Read one image (PNG, JPEG, TIFF, BMP, WebP or DICOM) into a normalised grayscale array.

Training and serving both start here, so an upload and a training image become the same kind
of array: float32, shape (H, W), values in [0, 1], 0 = black. Anything that is not a readable
image raises `ImageError` with a message a user can act on.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

ImageSource = Union[str, Path, bytes, bytearray, IO[bytes], np.ndarray]

MAX_FILE_BYTES = 64 * 1024 * 1024  # larger than any chest film; matches the app's upload limit
MAX_PIXELS = 60_000_000  # ~7,700 px square; a film is ~3,000 px; stops decompression bombs
MIN_SIDE = 32  # below this there is nothing to see
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


def read_image(source: ImageSource, name: str | None = None) -> XrayImage:
    """Decode `source` (path, bytes, file-like object or array) into an `XrayImage`.

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
    return _read_pil(data, label)


def _read_bytes(source: ImageSource, label: str) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"{label}: file not found")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ImageError(
                f"{label}: file is {path.stat().st_size / 2**20:.0f} MB, over the "
                f"{MAX_FILE_BYTES // 2**20} MB limit; export a smaller PNG or JPEG"
            )
        data = path.read_bytes()
    elif hasattr(source, "read"):
        data = source.read(MAX_FILE_BYTES + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise ImageError(f"{label}: file-like object must be opened in binary mode")
        data = bytes(data)
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


def _is_dicom(data: bytes) -> bool:
    return data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM"


def _check_size(width: int, height: int, label: str) -> None:
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


def _read_pil(data: bytes, label: str) -> XrayImage:
    with warnings.catch_warnings():
        # PIL's own bomb warning is replaced by our explicit limit below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
            raise ImageError(_unidentified_message(data, label, exc)) from None
        except Exception as exc:  # PIL raises many types on malformed headers
            raise ImageError(f"{label}: not a readable image ({exc})") from None
        fmt = img.format or "unknown"
        if fmt not in PIL_FORMATS:
            raise ImageError(
                f"{label}: {fmt} images are not supported; export the X-ray as PNG, JPEG or DICOM"
            )
        _check_size(img.width, img.height, label)
        try:
            img.load()
            img = ImageOps.exif_transpose(img)  # phones store rotation in EXIF
        except Exception as exc:  # truncated or corrupt pixel data
            raise ImageError(f"{label}: the {fmt} file is truncated or corrupt ({exc})") from None
    return _from_pil(img, fmt if fmt != "MPO" else "JPEG", label)


def _unidentified_message(data: bytes, label: str, exc: Exception) -> str:
    head = data[:512].lstrip().lower()
    if head.startswith(b"%pdf"):
        kind = "a PDF document"
    elif head.startswith((b"<!doctype html", b"<html")):
        kind = "an HTML page"
    elif isinstance(exc, Image.DecompressionBombError):
        return f"{label}: image dimensions are absurdly large (decompression bomb?)"
    else:
        try:
            data[:2048].decode("utf-8")
            kind = "a text file"
        except UnicodeDecodeError:
            kind = "not an image format pneumo reads"
    return f"{label}: this is {kind}; upload a chest X-ray as PNG, JPEG or DICOM"


def _from_pil(img: Image.Image, fmt: str, label: str) -> XrayImage:
    """Convert any PIL mode to grayscale [0, 1], keeping 16-bit precision where present."""
    mode = img.mode
    colourfulness = 0.0
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        bits = _effective_bits(arr)
        gray = arr / float(2**bits - 1)
        bit_depth = 16 if mode != "F" else 32
    else:
        if mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        if img.mode in ("RGBA", "LA", "PA"):
            img = img.convert("RGB" if img.mode == "RGBA" else "L")  # alpha carries no anatomy
        if img.mode in ("CMYK", "YCbCr", "LAB", "HSV", "1"):
            img = img.convert("RGB" if img.mode != "1" else "L")
        if img.mode == "RGB":
            rgb = np.asarray(img, dtype=np.float32) / 255.0
            colourfulness = _colourfulness(rgb)
            img = img.convert("L")
        if img.mode != "L":
            raise ImageError(f"{label}: unsupported pixel mode {mode}")
        gray = np.asarray(img, dtype=np.float32) / 255.0
        bit_depth = 8
    return XrayImage(_finite(gray, label), fmt, bit_depth, colourfulness)


def _effective_bits(arr: np.ndarray) -> int:
    """Bits actually used by integer data (12-bit films stored in 16-bit PNGs are common)."""
    peak = float(np.max(arr)) if arr.size else 0.0
    if peak <= 255:
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


def _from_array(arr: np.ndarray, label: str) -> XrayImage:
    """Accept (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) arrays: uint8, uint16 or float in [0, 1]."""
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        channels = arr.shape[2]
    elif arr.ndim == 2:
        channels = 0
    else:
        raise ImageError(f"{label}: expected an (H, W) or (H, W, C) array, received {arr.shape}")
    _check_size(arr.shape[1], arr.shape[0], label)
    if arr.dtype == np.uint8:
        scaled = arr.astype(np.float32) / 255.0
        bits = 8
    elif arr.dtype == np.uint16:
        bits = _effective_bits(arr)
        scaled = arr.astype(np.float32) / float(2**bits - 1)
    elif np.issubdtype(arr.dtype, np.floating):
        scaled = arr.astype(np.float32)
        if not np.all(np.isfinite(scaled)):
            raise ImageError(f"{label}: the array contains NaN or infinite values")
        if scaled.min() < 0 or scaled.max() > 1:
            raise ImageError(f"{label}: float arrays must hold values in [0, 1]")
        bits = 32
    else:
        raise ImageError(f"{label}: unsupported array dtype {arr.dtype}")
    colourfulness = 0.0
    if channels in (3, 4):
        rgb = scaled[..., :3]
        colourfulness = _colourfulness(rgb)
        scaled = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    elif channels == 1:
        scaled = scaled[..., 0]
    return XrayImage(_finite(scaled, label), "array", bits, colourfulness)


def _read_dicom(data: bytes, label: str) -> XrayImage:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:
        raise ImageError(f"{label}: the DICOM file is corrupt ({exc})") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise ImageError(
            f"{label}: this DICOM file has no pixel data (a structured report or "
            "presentation state?); export the image series instead"
        )
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    _check_size(cols, rows, label)
    try:
        arr = ds.pixel_array
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        raise ImageError(
            f"{label}: cannot decode the DICOM pixel data (transfer syntax {name}: {exc}); "
            "install a codec (pip install pylibjpeg pylibjpeg-libjpeg) or export uncompressed"
        ) from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1 and arr.ndim >= 3:
        arr = arr[0]  # multi-frame: the first frame is the film
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if arr.ndim == 3 and arr.shape[-1] == 3:
        return _from_array(arr.astype(np.uint8) if arr.dtype != np.uint8 else arr, label)
    if arr.ndim != 2:
        raise ImageError(f"{label}: unexpected DICOM pixel array shape {arr.shape}")
    try:
        values = apply_modality_lut(arr, ds)
        values = apply_voi_lut(values, ds, prefer_lut=True)
    except Exception as exc:
        raise ImageError(f"{label}: invalid DICOM LUT/window values ({exc})") from None
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ImageError(f"{label}: the DICOM pixel data contains NaN or infinite values")
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        gray = np.zeros_like(values, dtype=np.float32)  # a blank frame; the gate will flag it
    else:
        gray = (values - lo) / (hi - lo)
    if photometric == "MONOCHROME1":
        gray = 1.0 - gray  # MONOCHROME1 stores bone as dark: invert to the usual look
    technical = {tag: _plain(ds.get(tag)) for tag in TECHNICAL_TAGS if tag in ds}
    bits = int(ds.get("BitsStored", 16) or 16)
    return XrayImage(_finite(gray, label), "DICOM", bits, 0.0, technical)


def _plain(value: Any) -> Any:
    """DICOM values as JSON-friendly Python values."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_plain(v) for v in value]
    if isinstance(value, (int, float, str)):
        return value if not isinstance(value, str) else str(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
