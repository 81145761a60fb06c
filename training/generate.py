"""Write the embedded default data set offline: ``python training/generate.py [synth.n_real=N]``."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="generate.yaml")
def main(cfg: DictConfig) -> None:
    """Generate the real/fake tree described by ``cfg.synth``."""
    manifest = hydra.utils.instantiate(cfg.synth)
    log.info("wrote %d images to %s", len(manifest), cfg.synth.out_dir)


if __name__ == "__main__":
    main()
