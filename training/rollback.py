"""Serve the previous champion again: ``python training/rollback.py`` (``make rollback``)."""

from __future__ import annotations

import logging
import sys

import filelock
import hydra
from omegaconf import DictConfig

from deepfakenet import registry
from deepfakenet.retrain import ExitCode, notify_service

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="rollback.yaml")
def main(cfg: DictConfig) -> None:
    """Swap ``champion`` and ``previous`` (exit 75 while a retraining run holds the lock)."""
    client = registry.use(registry.registry_config(cfg))
    lock = filelock.FileLock(str(cfg.lock_file))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        log.warning("a retraining run holds %s; try the rollback again later", cfg.lock_file)
        sys.exit(ExitCode.LOCKED)
    try:
        champion, previous = registry.rollback(client, cfg.registry.model_name)
    finally:
        lock.release()
    log.info("rolled back: champion is version %s again (previous: %s)", champion, previous)
    notify_service(cfg.notify)


if __name__ == "__main__":
    main()
