"""scripts/install_bundle.py: a bundle copied to another folder (as a trained run is copied into
models/default) still names the same films in its tables, and its manifest still verifies."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pneumo.bundle import read_film_table, read_manifest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install_bundle.py"


def _install():
    spec = importlib.util.spec_from_file_location("install_bundle", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.install


def test_an_installed_bundle_names_the_same_films(tiny_bundle, tmp_path):
    dest = tmp_path / "deeper" / "than" / "the" / "run"  # another depth: a plain copy would break
    dest.parent.mkdir(parents=True)
    (dest / "stale").mkdir(parents=True)  # what was there is replaced
    _install()(tiny_bundle, dest)
    assert not (dest / "stale").exists()
    read_manifest(dest, verify=True)
    for name in ("split.csv", "predictions.csv"):
        before, after = read_film_table(tiny_bundle, name), read_film_table(dest, name)
        assert len(after) == len(before) > 0
        assert list(after["path"]) == list(before["path"])
        assert all(Path(p).is_file() for p in after["path"])
    raw = (dest / "split.csv").read_text()
    assert raw != (tiny_bundle / "split.csv").read_text()  # the stored paths were rewritten
