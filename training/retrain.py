"""Retrain from feedback: ``python training/retrain.py [collect.min_new_labels=N] [...]``.

Exit codes (:mod:`deepfakenet.cli`): 0 done (promoted, kept, or nothing to do); 2 refused with
one line (no champion yet, an unknown or invalid config key, bad ``train_overrides``); 75 another
run holds the lock (try later; systemd: ``SuccessExitStatus=75``); 1 unexpected error, with its
traceback: nothing was promoted and the job's MLflow run is marked FAILED.
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

import hydra
from hydra import compose
from hydra.errors import HydraException
from omegaconf import DictConfig

from deepfakenet.cli import run_job
from deepfakenet.config import RetrainSchema, validate
from deepfakenet.errors import ConfigError
from deepfakenet.retrain import RetrainReport, retrain

log = logging.getLogger(__name__)


def _terminate(signum: int, _frame: FrameType | None) -> None:
    """Turn SIGTERM (systemd stop, cron kill) into an exception, so that cleanup runs.

    The job then marks its MLflow run FAILED and releases the lock instead of vanishing with a
    run that stays RUNNING forever.
    """
    raise SystemExit(128 + signum)


def _job(cfg: DictConfig) -> RetrainReport:
    settings = validate(cfg, RetrainSchema, "conf/retrain.yaml")
    try:
        train_cfg = compose("train.yaml", overrides=list(settings.train_overrides))
    except HydraException as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"train_overrides {list(settings.train_overrides)}: {first}") from err
    return retrain(cfg, train_cfg)


@hydra.main(version_base="1.3", config_path="../conf", config_name="retrain.yaml")
def main(cfg: DictConfig) -> None:
    """Run one retraining cycle and exit with its code."""
    signal.signal(signal.SIGTERM, _terminate)
    report = run_job("retrain", lambda: _job(cfg))
    log.info("retrain %s:\n  %s", report.status, "\n  ".join(report.reasons))
    sys.exit(0)


if __name__ == "__main__":
    main()
