"""Train the learned fake families' autoencoders and write their weights into the package.

``python training/train_decoders.py [--steps 2500] [--seed 0] [--out DIR]`` trains the three
decoders of :mod:`deepfakenet.data.decoders` single-threaded on the CPU (about two minutes each)
and writes ``<name>.pt`` (fp16 state dicts) and ``training.json`` to
``src/deepfakenet/data/decoder_weights/`` unless ``--out`` says otherwise. The shipped weights
were made with the defaults; re-running with them gives the same figures up to CPU kernels.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from deepfakenet.data.decoders import DECODER_NAMES, WEIGHTS_DIR, train_all

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, train, log the figures; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--steps", type=int, default=2500, help="optimiser steps per decoder")
    parser.add_argument(
        "--names", nargs="+", default=list(DECODER_NAMES), choices=DECODER_NAMES, help="decoders"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    figures = train_all(args.out, seed=args.seed, steps=args.steps, names=tuple(args.names))
    log.info("Training figures:\n%s", json.dumps(figures, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
