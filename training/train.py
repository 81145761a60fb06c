"""Train a detector: ``python training/train.py [experiment=demo] [trainer=gpu] [key=value]``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from deepfakenet.pipeline import train


@hydra.main(version_base="1.3", config_path="../conf", config_name="train.yaml")
def main(cfg: DictConfig) -> float | None:
    """Run the training job; return the best validation AUROC for Hydra sweepers."""
    metrics, _ = train(cfg)
    return metrics.get("val/auroc_best")


if __name__ == "__main__":
    main()
