"""Training-time augmentation with Albumentations, built from `AugmentConfig`.

Transforms act on the preprocessed uint8 (size, size, 3) image, after `to_model_input`, so
the geometry the model sees at train and serve time is the same apart from the augmentation.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np

from .config import AugmentConfig
from .markers import EDGES, border_band, burn_marker, random_marker


class BurnedInText(A.ImageOnlyTransform):
    """One to three burned-in markers or words (`pneumo.markers`), mostly at corners and
    edges: every class gets them alike, so a marker carries no label."""

    def get_params(self) -> dict:
        return {"markers": [random_marker(self.py_random)
                            for _ in range(self.py_random.randint(1, 3))]}

    def apply(self, img: np.ndarray, markers=(), **params) -> np.ndarray:
        for marker in markers:
            img = burn_marker(img, marker)
        return img


class BorderBands(A.ImageOnlyTransform):
    """One or two dark or bright bands along the film's edges (collimation, film borders)."""

    def get_params(self) -> dict:
        rng = self.py_random
        sides = rng.sample(EDGES, rng.randint(1, 2))
        return {"bands": [(side, rng.uniform(0.02, 0.10), rng.choice((0, 0, rng.randint(180, 255))))
                          for side in sides]}

    def apply(self, img: np.ndarray, bands=(), **params) -> np.ndarray:
        for side, width, value in bands:
            img = border_band(img, side, width, value)
        return img


def build_augmenter(cfg: AugmentConfig, seed: int | None = None) -> A.Compose | None:
    """A Compose of affine (rotate/scale/shift), brightness/contrast, the intensity and texture
    transforms switched on in `cfg`, and an optional flip."""
    if not cfg.enabled:
        return None
    # Markers and borders first: they are part of the film, so the geometry moves them too.
    transforms = _shortcut_transforms(cfg)
    transforms += [
        A.Affine(
            rotate=(-cfg.rotate_limit, cfg.rotate_limit),
            scale=(1 - cfg.scale_limit, 1 + cfg.scale_limit),
            translate_percent=(-cfg.shift_limit, cfg.shift_limit),
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=0,
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


def _shortcut_transforms(cfg: AugmentConfig) -> list:
    """Burned-in text and border bands, so neither can stand in for the label."""
    optional = [(cfg.marker_p, BurnedInText), (cfg.border_p, BorderBands)]
    return [make(p=p) for p, make in optional if p > 0]


def augment_with_mask(augmenter: A.Compose | None, image: np.ndarray, mask: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """`augment_image` that also moves a float (H, W) mask (the lung fields) with the geometry."""
    if augmenter is None:
        return image, mask
    out = augmenter(image=np.ascontiguousarray(image[..., 0]), mask=mask)
    return np.repeat(out["image"][..., None], 3, axis=2), out["mask"]


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
