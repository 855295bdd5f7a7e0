"""Shared test fixtures: where the shared (never committed) data lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    """The shared folder: $PNEUMO_SHARED, or `../shared` next to the repository."""
    return Path(os.environ.get("PNEUMO_SHARED", REPO.parent / "shared"))


def missing_shared(message: str) -> None:
    """Skip a test whose shared data is absent - or fail it in CI (PNEUMO_REQUIRE_SHARED=1),
    where a missing folder means the test proved nothing."""
    if os.environ.get("PNEUMO_REQUIRE_SHARED") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`<shared>/data`, or skip the test when this machine has no shared data."""
    data = shared_root() / "data"
    if not data.is_dir():
        missing_shared(f"shared data not found at {data}; set PNEUMO_SHARED to the shared folder")
    return data


# --------------------------------------------------------------------------- synthetic data

SMOKE_CONFIG = REPO / "configs" / "smoke.yaml"


def write_synthetic_xrays(root: Path, per_class: int = 24, size: int = 96, seed: int = 0) -> Path:
    """A NORMAL/PNEUMONIA class-folder dataset of synthetic films with Kaggle-style names.

    Pneumonia films carry a bright opacity in one lung field, so a tiny model can learn them;
    patients have two films each, so patient-level splitting is exercised.
    """
    from PIL import Image
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for label, name in enumerate(("NORMAL", "PNEUMONIA")):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            film = 0.35 + 0.25 * np.exp(-((xx - 0.5) ** 2) / 0.02)  # mediastinum
            film += 0.05 * rng.standard_normal((size, size))
            if label:
                cx, cy = rng.choice([0.28, 0.72]), rng.uniform(0.35, 0.7)
                film += 0.45 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.01)
            pixels = np.clip(film * 255, 0, 255).astype(np.uint8)
            patient = i // 2
            fname = (f"person{patient}_bacteria_{i}.png" if label
                     else f"IM-{patient:04d}-{i % 2 + 1:04d}.png")
            Image.fromarray(pixels).convert("RGB").save(folder / fname)
    return root


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """Class folders of synthetic films (24 per class, 12 patients per class)."""
    return write_synthetic_xrays(tmp_path_factory.mktemp("synthetic") / "data")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, synthetic_data) -> Path:
    """A complete bundle trained with configs/smoke.yaml (tiny CNN, 64 px) on synthetic films."""
    from pneumo.config import load_config
    from pneumo.training import train

    cfg = load_config(SMOKE_CONFIG, {"train.cache_views": 2})
    return train(cfg, synthetic_data, tmp_path_factory.mktemp("bundles") / "tiny")
