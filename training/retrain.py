"""Retrain from feedback: ``python training/retrain.py [collect.min_new_labels=N] [...]``.

Exit codes: 0 done (promoted, kept, or nothing to do), 75 another run holds the lock, 1 error.
"""

from __future__ import annotations

import logging
import sys

import hydra
from hydra import compose
from omegaconf import DictConfig

from deepfakenet.retrain import ExitCode, RetrainLockedError, retrain

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="retrain.yaml")
def main(cfg: DictConfig) -> None:
    """Run one retraining cycle and exit with its code."""
    train_cfg = compose("train.yaml", overrides=list(cfg.train_overrides))
    eval_cfg = compose("evaluate.yaml")
    try:
        report = retrain(cfg, train_cfg, eval_cfg)
    except RetrainLockedError as err:
        log.warning("%s", err)
        sys.exit(ExitCode.LOCKED)
    except Exception:
        log.exception("retraining failed; the champion is unchanged")
        sys.exit(ExitCode.FAILED)
    log.info("retrain %s: %s", report.status, "; ".join(report.reasons))
    sys.exit(ExitCode.OK)


if __name__ == "__main__":
    main()
