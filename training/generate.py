"""Write the embedded default data set offline: ``python training/generate.py [synth.n_real=N]``.

``make data ARGS="synth.n_real=200 synth.n_fake=200"`` passes its overrides here. Exit codes
are those of :mod:`deepfakenet.cli`.
"""

from __future__ import annotations

import logging

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from deepfakenet.cli import run_job
from deepfakenet.errors import ConfigError, DatasetError, JobRefused

log = logging.getLogger(__name__)


def generate(cfg: DictConfig) -> int:
    """Generate the real/fake tree described by ``cfg.synth``; return the number of images.

    Raises:
        ConfigError: ``cfg.synth`` cannot produce a data set (an unknown source or family, bad
            counts or sizes): what :func:`~deepfakenet.data.synth.generate_dataset` documents
            as its ``ValueError``.
        DatasetError: The data folder already holds images (``synth.overwrite=true`` replaces
            them), or a photo source cannot be fetched from its package registry.
    """
    try:
        manifest = hydra.utils.instantiate(cfg.synth)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, FileExistsError):
            raise DatasetError(
                f"{cfg.synth.out_dir} already holds images: synth.overwrite=true replaces them"
            ) from err
        if isinstance(cause, ValueError):
            raise ConfigError(f"synth: {cause}") from err
        if isinstance(cause, JobRefused):  # a photo source could not be fetched
            raise cause from err
        raise
    log.info("wrote %d images to %s", len(manifest), cfg.synth.out_dir)
    return len(manifest)


@hydra.main(version_base="1.3", config_path="../conf", config_name="generate.yaml")
def main(cfg: DictConfig) -> None:
    """Generate the real/fake tree described by ``cfg.synth``."""
    run_job("generate", lambda: generate(cfg))


if __name__ == "__main__":
    main()
