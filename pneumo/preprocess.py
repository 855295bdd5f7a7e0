"""The one preprocessing function between a decoded image and the model.

The training images were squashed (aspect ratio not kept) to 224x224 and stored as 8-bit
RGB JPEG at quality 75 (the IJG tables; read off the files' quantisation tables) with three
equal channels. So every image, in training and at serving time, is squashed to the model size
with area interpolation, quantised to 8 bits, passed once through JPEG at quality 75 and
repeated over three channels. The ResNet-specific normalisation (BGR, mean subtraction) lives
inside the model.

Why the JPEG pass: without it a full-size upload reaches the network smoother than every
training film (no 8x8 block quantisation). The classifier hardly cares, but the early
ImageNet features the out-of-population gate reads do: measured on the shipped model, the 16
full-size official val films were all "unlike the training films" at conv3/conv4 without it
and 0/16 at conv4 with it. On a training film (already a q75 JPEG at 224) the pass is almost
the identity (mean change 0.001 grey levels, measured on 27 films), so training is unchanged.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import cv2
import numpy as np

JPEG_QUALITY = 75  # the quality of the training films (PIL's default)


def to_model_input(gray: np.ndarray, size: int = 224, thorax: bool = False) -> np.ndarray:
    """Turn a grayscale image in [0, 1] (H, W) into the model's input (size, size, 3) uint8.

    Area interpolation for shrinking (it averages, as a downsampled film should), linear for
    the rare enlargement. uint8 because that is what training saw. `thorax`: then cropped to
    the film's lung fields (`pneumo.thorax`), for a bundle trained that way.
    """
    if gray.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale array, received shape {gray.shape}")
    h, w = gray.shape
    if (h, w) != (size, size):
        shrinking = h >= size and w >= size
        interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        gray = cv2.resize(gray.astype(np.float32), (size, size), interpolation=interp)
    quantised = np.clip(np.rint(gray * 255.0), 0, 255).astype(np.uint8)
    x = np.repeat(jpeg_roundtrip(quantised)[:, :, None], 3, axis=2)
    if thorax:
        from .thorax import thorax_crop

        x = thorax_crop(x)[0]
    return x


def jpeg_roundtrip(gray_u8: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """Encode and decode a uint8 grayscale image as JPEG (libjpeg's IJG tables): ~0.3 ms."""
    ok, buffer = cv2.imencode(".jpg", gray_u8, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # cv2 only fails on empty input, which to_model_input never passes
        raise ValueError("JPEG encoding failed")
    return cv2.imdecode(buffer, cv2.IMREAD_GRAYSCALE)


def load_model_input(source, size: int = 224, thorax: bool = False) -> np.ndarray:
    """Read any supported image and preprocess it: the path shared by training and serving."""
    from .imageio import read_image

    return to_model_input(read_image(source, model_size=size).pixels, size, thorax)


def load_images(
    paths: list[str], size: int, progress: Callable[[int], None] | None = None,
    thorax: bool = False,
) -> np.ndarray:
    """Decode and preprocess every path into one uint8 array (N, size, size, 3)."""
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)

    def work(i: int) -> int:
        out[i] = load_model_input(paths[i], size, thorax)
        return i

    with ThreadPoolExecutor(max_workers=2) as pool:  # PIL and cv2 release the GIL
        for _ in pool.map(work, range(len(paths))):
            if progress:
                progress(1)
    return out


def frame_images(frame, size: int, progress: Callable[[int], None] | None = None,
                 thorax: bool = False) -> np.ndarray:
    """`load_images` over a data table's `path` column."""
    return load_images(frame["path"].tolist(), size, progress, thorax)


def thorax_of(manifest: dict) -> bool:
    """Whether a bundle's model reads films cropped to the thorax (`data.thorax_crop`)."""
    return bool(manifest.get("thorax_crop", False))


# manifest["gate_input"] of a bundle whose out-of-population gate reads the whole squashed film,
# also where the model reads it cropped to the thorax.
GATE_FULL_FRAME = "full_frame"


def gate_reads_crop(manifest: dict) -> bool:
    """Whether a bundle's gate reads the model's cropped input: only a thorax bundle whose gate
    was fitted before gates read the whole film (no `gate_input` key; `refit-gate` converts it).

    Why the whole film: the crop takes away what tells a child from an adult and an upright
    film from an inverted one (body size, framing, shoulders, abdomen). Measured with gen9 seed
    7 (docs/experiments.md): gate on the crop, 5 of 300 internal test films refused, 76% of
    inverted films named inverted, adults of one source caught 51 of 54; on the whole film
    (the run trained again), 4 of 783 validation films refused, 107 of 110 inverted films named
    inverted, 54 of 54."""
    return thorax_of(manifest) and manifest.get("gate_input") != GATE_FULL_FRAME


def gate_reads_own_input(manifest: dict) -> bool:
    """Whether the gate reads exactly what the model reads (no separate whole-film row)."""
    return not thorax_of(manifest) or gate_reads_crop(manifest)
