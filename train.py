"""Train a model bundle: `python train.py ...` is `python -m pneumo train ...`."""

import sys

from pneumo.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
