"""Write the TF SavedModel of a bundle: it serves raw 0-255 RGB pixels, (N, S, S, 3) float32."""

from __future__ import annotations

import shutil
from pathlib import Path

import keras


def export_saved_model(model: keras.Model, directory: str | Path) -> Path:
    """Export `model` as a SavedModel with a `serve` endpoint returning the probability."""
    directory = Path(directory)
    if directory.exists():
        shutil.rmtree(directory)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serve",
        fn=lambda pixels: model(pixels, training=False),
        input_signature=[keras.InputSpec(shape=(None, *model.input_shape[1:]), dtype="float32")],
    )
    archive.write_out(str(directory), verbose=False)
    return directory
