"""Serve the previous champion again: ``python training/rollback.py`` (``make rollback``).

Exit codes (:mod:`deepfakenet.cli`): 0 rolled back; 2 refused with one line (no ``previous``
alias to roll back to, an invalid config); 75 a retraining run holds the lock (try later);
1 unexpected error (e.g. the registry cannot be read), with its traceback.
"""

from __future__ import annotations

import logging

import filelock
import hydra
from omegaconf import DictConfig

from deepfakenet import registry
from deepfakenet.cli import run_job
from deepfakenet.config import RollbackSchema, validate
from deepfakenet.errors import JobLockedError
from deepfakenet.retrain import notify_service

log = logging.getLogger(__name__)


def rollback(cfg: DictConfig) -> tuple[str, str]:
    """Swap ``champion`` and ``previous`` under the retraining lock; tell the service.

    Returns:
        ``(champion, previous)`` after the swap.

    Raises:
        ConfigError: The config has an unknown key or a bad value.
        JobLockedError: A retraining run holds the lock (a rollback never interleaves with a
            promotion).
        RegistryError: There is no ``previous`` (or no ``champion``) to swap.
    """
    settings = validate(cfg, RollbackSchema, "conf/rollback.yaml")
    client = registry.use(registry.registry_config(cfg))
    lock = filelock.FileLock(settings.lock_file)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout as err:
        raise JobLockedError(
            f"a retraining run holds {settings.lock_file}; try the rollback again later"
        ) from err
    try:
        champion, previous = registry.rollback(client, settings.registry.model_name)
    finally:
        lock.release()
    log.info("rolled back: champion is version %s again (previous: %s)", champion, previous)
    notify_service(cfg.notify)
    return champion, previous


@hydra.main(version_base="1.3", config_path="../conf", config_name="rollback.yaml")
def main(cfg: DictConfig) -> None:
    """Run the rollback (exit codes in the module docstring)."""
    run_job("rollback", lambda: rollback(cfg))


if __name__ == "__main__":
    main()
