"""Federated head updates: ``python training/federated.py [run.num-rounds=3] [compare_dp=true]``.

Run it with the federated environment's Python (``make federated-setup``; ``make
federated-demo`` does both). Exit codes (:mod:`deepfakenet.cli`): 0 a federated version was
registered (not aliased); 2 refused with one line (no champion, no Flower environment); 1 the
run failed, with its traceback: nothing was registered.
"""

from __future__ import annotations

import os
import signal
from types import FrameType

import hydra
from omegaconf import DictConfig

from deepfakenet.cli import run_job
from deepfakenet.federated.deployment import QUIET_ENV
from deepfakenet.federated.job import run_federated

os.environ.update(QUIET_ENV)  # before anything could import Flower in this process


def _terminate(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM (a scheduler, CI, Ctrl-C's cousin) unwinds the job, so Flower is stopped too."""
    raise SystemExit(128 + signum)


@hydra.main(version_base="1.3", config_path="../conf", config_name="federated.yaml")
def main(cfg: DictConfig) -> None:
    """Make the sites, run the rounds on loopback, register, compare."""
    signal.signal(signal.SIGTERM, _terminate)
    run_job("federated", lambda: run_federated(cfg))


if __name__ == "__main__":
    main()
