"""The one preprocessing function between a decoded image and the model.

The training images were squashed (aspect ratio not kept) to 224x224 and stored as 8-bit
RGB with three equal channels. So every image, in training and at serving time, is squashed
to the model size with area interpolation, quantised to 8 bits and repeated over three
channels. The ResNet-specific normalisation (BGR, mean subtraction) lives inside the model.
"""

from __future__ import annotations

import cv2
import numpy as np


def to_model_input(gray: np.ndarray, size: int = 224) -> np.ndarray:
    """Turn a grayscale image in [0, 1] (H, W) into the model's input (size, size, 3) uint8.

    Area interpolation for shrinking (it averages, as a downsampled film should), linear for
    the rare enlargement. uint8 because that is what training saw.
    """
    if gray.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale array, received shape {gray.shape}")
    h, w = gray.shape
    if (h, w) != (size, size):
        shrinking = h >= size and w >= size
        interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        gray = cv2.resize(gray.astype(np.float32), (size, size), interpolation=interp)
    quantised = np.clip(np.rint(gray * 255.0), 0, 255).astype(np.uint8)
    return np.repeat(quantised[:, :, None], 3, axis=2)


def load_model_input(source, size: int = 224) -> np.ndarray:
    """Read any supported image and preprocess it: the path shared by training and serving."""
    from .imageio import read_image

    return to_model_input(read_image(source).pixels, size)
