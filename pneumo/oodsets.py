"""Images the model must not answer confidently, made from what a machine without internet has.

Used to measure the out-of-population gate (scripts/gate_report.py) and to test it: real
photographs shipped inside scikit-image and matplotlib, rendered text and charts, noise, and
chest films turned into something else (rotated, upside down). No adult chest X-rays can be had
offline; the README says so next to the figures.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw

SKIMAGE_PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "brick", "grass", "gravel", "moon",
                  "coins", "page", "text", "retina", "cell", "rocket", "hubble_deep_field",
                  "horse", "logo", "motorcycle_left", "microaneurysms", "clock")


def photographs() -> Iterator[tuple[str, np.ndarray]]:
    """Real photographs (colour and grayscale) shipped with scikit-image and matplotlib."""
    from skimage import data

    for name in SKIMAGE_PHOTOS:
        loader = getattr(data, name, None)
        if loader is None:
            continue
        try:
            image = np.asarray(loader())
        except Exception:  # a loader that needs a download: skip it offline
            continue
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        if image.dtype != np.uint8:
            image = (255 * (image - image.min()) / max(1e-9, float(np.ptp(image)))).astype(np.uint8)
        if image.ndim == 3 and image.shape[2] == 4:
            image = image[..., :3]
        yield f"skimage:{name}", image
    import matplotlib.cbook as cbook

    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        yield "matplotlib:grace_hopper", np.asarray(Image.open(handle).convert("RGB"))


def gray_faces(n: int = 40) -> Iterator[tuple[str, np.ndarray]]:
    """Grayscale faces (LFW subset in scikit-image), enlarged to 128 px."""
    from skimage import data

    faces = data.lfw_subset()
    for i in range(min(n, len(faces))):
        face = (255 * faces[i]).astype(np.uint8)
        yield f"lfw:{i}", np.asarray(Image.fromarray(face).resize((128, 128), Image.BICUBIC))


def rendered_text(n: int = 10, seed: int = 0) -> Iterator[tuple[str, np.ndarray]]:
    """Screenshots of text: dark-on-light and light-on-dark pages."""
    rng = np.random.default_rng(seed)
    words = "patient report chest radiograph findings impression normal lungs clear".split()
    for i in range(n):
        light = i % 2 == 0
        img = Image.new("L", (600, 400), 245 if light else 15)
        draw = ImageDraw.Draw(img)
        for line in range(14):
            text = " ".join(rng.choice(words, 6))
            draw.text((20, 20 + 26 * line), text, fill=20 if light else 230)
        yield f"text:{i}", np.asarray(img)


def charts(n: int = 6, seed: int = 0) -> Iterator[tuple[str, np.ndarray]]:
    """Screenshots of plots (what a user might upload by mistake)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    for i in range(n):
        fig, ax = plt.subplots(figsize=(5, 4), dpi=80)
        ax.plot(np.cumsum(rng.standard_normal(100)))
        ax.set_title(f"chart {i}")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        yield f"chart:{i}", np.asarray(Image.open(buffer).convert("RGB"))


def noise(n: int = 10, seed: int = 0) -> Iterator[tuple[str, np.ndarray]]:
    """Uniform and Gaussian noise images."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        if i % 2:
            arr = rng.integers(0, 256, (256, 256), dtype=np.uint8)
        else:
            arr = np.clip(rng.normal(128, 40, (256, 256)), 0, 255).astype(np.uint8)
        yield f"noise:{i}", arr


def transformed_films(paths: list[str | Path]) -> Iterator[tuple[str, np.ndarray]]:
    """Real films turned 90 degrees (lateral-looking) or upside down."""
    for i, path in enumerate(paths):
        film = np.asarray(Image.open(path).convert("L"))
        yield f"rot90:{Path(path).name}", np.rot90(film).copy()
        yield f"upside_down:{Path(path).name}", film[::-1].copy()


def rotated_films(paths: list[str | Path]) -> Iterator[tuple[str, np.ndarray]]:
    """Real films rotated by 90, 180 or 270 degrees (one each, in turn)."""
    for i, path in enumerate(paths):
        film = np.asarray(Image.open(path).convert("L"))
        turns = 1 + i % 3
        yield f"rot{90 * turns}:{Path(path).name}", np.rot90(film, turns).copy()


def inverted_films(paths: list[str | Path]) -> Iterator[tuple[str, np.ndarray]]:
    """Real films as negatives (bone dark, air bright), as some viewers export them."""
    for path in paths:
        film = np.asarray(Image.open(path).convert("L"))
        yield f"inverted:{Path(path).name}", (255 - film).astype(np.uint8)


def _window(values: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(values, [1, 99])
    return (255 * np.clip((values - lo) / max(hi - lo, 1e-9), 0, 1)).astype(np.uint8)


def _dicom_slices() -> Iterator[tuple[str, np.ndarray]]:
    """CT and MR slices among pydicom's own test files (those that decode offline)."""
    import warnings

    import pydicom
    from pydicom.data import get_testdata_files

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        files = get_testdata_files("*.dcm")
        for path in sorted(files):
            try:
                ds = pydicom.dcmread(path)
                if str(ds.get("Modality")) not in ("CT", "MR"):
                    continue
                arr = ds.pixel_array.astype(np.float32)
            except Exception:  # compressed syntaxes without a codec, broken test files
                continue
            frames = arr if arr.ndim == 3 and arr.shape[-1] not in (3, 4) else arr[None]
            for k, frame in enumerate(frames[:4]):
                if frame.ndim == 2 and min(frame.shape) >= 32 and np.ptp(frame) > 0:
                    yield f"dicom:{ds.Modality}:{Path(path).name}:{k}", _window(frame)


def _axial_phantom(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A synthetic axial chest CT slice: body ellipse, two dark lungs, heart, spine, table."""
    yy, xx = np.mgrid[-1:1:complex(size), -1:1:complex(size)]
    img = np.zeros((size, size), np.float32)

    def ellipse(cx, cy, ax, ay, value):
        img[((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1] = value

    ellipse(0, 0.05, rng.uniform(0.75, 0.9), rng.uniform(0.5, 0.65), 0.55)  # soft tissue
    for side in (-1, 1):
        ellipse(side * rng.uniform(0.3, 0.4), 0.0, rng.uniform(0.22, 0.3),
                rng.uniform(0.3, 0.42), 0.08)  # lungs
    ellipse(rng.uniform(-0.1, 0.05), -0.05, 0.18, 0.16, 0.62)  # heart
    ellipse(0, 0.45, 0.08, 0.08, 0.95)  # vertebra
    img[int(size * 0.83):int(size * 0.86), :] = 0.4  # table
    img += rng.normal(0, 0.03, img.shape).astype(np.float32)
    return _window(img)


def cross_sections(n_phantoms: int = 30, seed: int = 0) -> Iterator[tuple[str, np.ndarray]]:
    """CT and MR slices: pydicom's test files, Shepp-Logan and synthetic axial chest CTs."""
    yield from _dicom_slices()
    from skimage.data import shepp_logan_phantom

    yield "phantom:shepp_logan", _window(shepp_logan_phantom())
    rng = np.random.default_rng(seed)
    for i in range(n_phantoms):
        yield f"phantom:axial_ct:{i}", _axial_phantom(rng, int(rng.integers(192, 512)))


def all_sets(film_paths: list[str | Path]) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Every out-of-population set, by family."""
    return {
        "photographs": list(photographs()),
        "faces": list(gray_faces()),
        "text": list(rendered_text()),
        "charts": list(charts()),
        "noise": list(noise()),
        "rotated_or_inverted_films": list(transformed_films(film_paths)),
        "rotated_films": list(rotated_films(film_paths)),
        "inverted_films": list(inverted_films(film_paths)),
        "ct_mr_slices": list(cross_sections()),
    }
