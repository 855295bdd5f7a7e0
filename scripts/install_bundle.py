"""Copy a trained (and calibrated) bundle into another folder, e.g. `models/default`, keeping
its film tables pointing at the same films (their paths are stored relative to the bundle
folder, so a plain copy would point them elsewhere) and its manifest's hashes right.

Usage: python scripts/install_bundle.py SOURCE DEST   (DEST is replaced)
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pneumo.bundle import (read_film_table, read_manifest, refresh_hashes,  # noqa: E402
                           write_film_table)

FILM_TABLES = ("split.csv", "predictions.csv", "val_predictions.csv", "site_predictions.csv")


def install(source: Path, dest: Path) -> None:
    """Copy `source` to `dest` (replacing it), rewrite the film tables' paths, refresh hashes."""
    source = source.resolve()
    read_manifest(source)  # refuse a tampered or half-written bundle before touching dest
    tables = {name: read_film_table(source, name) for name in FILM_TABLES
              if (source / name).is_file()}
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest)
    for name, table in tables.items():
        write_film_table(dest, name, table)
    refresh_hashes(dest)
    read_manifest(dest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("dest", type=Path)
    args = parser.parse_args()
    install(args.source, args.dest)
    print(f"installed {args.source} -> {args.dest}")


if __name__ == "__main__":
    main()
