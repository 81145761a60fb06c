"""Serve the previous champion again: ``python training/rollback.py`` (``make rollback``)."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from deepfakenet import registry
from deepfakenet.pipeline import registry_config
from deepfakenet.retrain import notify_service

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="rollback.yaml")
def main(cfg: DictConfig) -> None:
    """Swap the ``champion`` and ``previous`` aliases."""
    client = registry.use(registry_config(cfg))
    champion, previous = registry.rollback(client, cfg.registry.model_name)
    log.info("rolled back: champion is version %s again (previous: %s)", champion, previous)
    notify_service(cfg.notify)


if __name__ == "__main__":
    main()
