"""Training-time augmentation with Albumentations, built from `AugmentConfig`.

Transforms act on the preprocessed uint8 (size, size, 3) image, after `to_model_input`, so
the geometry the model sees at train and serve time is the same apart from the augmentation.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np

from .config import AugmentConfig


def build_augmenter(cfg: AugmentConfig, seed: int | None = None) -> A.Compose | None:
    """A Compose of affine (rotate/scale/shift), brightness/contrast, the intensity and texture
    transforms switched on in `cfg`, and an optional flip."""
    if not cfg.enabled:
        return None
    transforms = [
        A.Affine(
            rotate=(-cfg.rotate_limit, cfg.rotate_limit),
            scale=(1 - cfg.scale_limit, 1 + cfg.scale_limit),
            translate_percent=(-cfg.shift_limit, cfg.shift_limit),
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            p=cfg.p,
        ),
        A.RandomBrightnessContrast(
            brightness_limit=cfg.brightness_limit, contrast_limit=cfg.contrast_limit, p=0.5
        ),
    ]
    transforms += _intensity_transforms(cfg)
    if cfg.horizontal_flip:
        transforms.append(A.HorizontalFlip(p=0.5))
    return A.Compose(transforms, seed=seed)


def _intensity_transforms(cfg: AugmentConfig) -> list:
    """Exposure and texture changes that a new site's films show; only those switched on."""
    optional = [
        (cfg.gamma_p, lambda p: A.RandomGamma(gamma_limit=(cfg.gamma_low, cfg.gamma_high), p=p)),
        (cfg.clahe_p, lambda p: A.CLAHE(clip_limit=(1.0, 3.0), tile_grid_size=(8, 8), p=p)),
        (cfg.blur_p, lambda p: A.GaussianBlur(blur_limit=(3, 5), p=p)),
        (cfg.noise_p, lambda p: A.GaussNoise(std_range=(0.01, 0.04), per_channel=False, p=p)),
    ]
    return [make(p) for p, make in optional if p > 0]


def augment_image(augmenter: A.Compose | None, image: np.ndarray) -> np.ndarray:
    """Apply `augmenter` to one uint8 (H, W, 3) film; identity when there is none.

    The film's three channels are equal (see `to_model_input`), so the transforms run on one
    channel and it is repeated: CLAHE on RGB goes through LAB and would make the channels
    differ, which a real upload never does.
    """
    if augmenter is None:
        return image
    gray = augmenter(image=np.ascontiguousarray(image[..., 0]))["image"]
    return np.repeat(gray[..., None], 3, axis=2)
