"""The walkthrough notebook runs top to bottom on the shipped model (a small slice in CI)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "walkthrough.ipynb"


def test_walkthrough_notebook_executes(shared_data, tmp_path):
    if not (REPO / "models" / "default" / "manifest.json").is_file():
        pytest.skip("no shipped model in models/default")
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    os.environ["PNEUMO_NOTEBOOK_SLICE"] = os.environ.get("PNEUMO_NOTEBOOK_SLICE", "8")
    os.environ["PNEUMO_SHARED"] = str(shared_data.parent)
    os.environ["PNEUMO_REPO"] = str(REPO)
    # Run from somewhere else than the repository: paths must not depend on the directory.
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "right" in outputs and "max |served - bundle|" in outputs
    compared = int(outputs.split("films compared:")[1].split()[0])
    assert compared == int(os.environ["PNEUMO_NOTEBOOK_SLICE"]), "a slice of films, not zero"
    gap = float(outputs.split("max |served - bundle|:")[1].split()[0])
    assert gap < 2e-3
