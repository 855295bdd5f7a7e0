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
    """A Compose of affine (rotate/scale/shift), brightness/contrast and optional flip."""
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
    if cfg.horizontal_flip:
        transforms.append(A.HorizontalFlip(p=0.5))
    return A.Compose(transforms, seed=seed)


def augment_image(augmenter: A.Compose | None, image: np.ndarray) -> np.ndarray:
    """Apply `augmenter` to one uint8 (H, W, 3) image; identity when there is none."""
    if augmenter is None:
        return image
    return augmenter(image=image)["image"]
