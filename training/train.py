"""Train a detector: ``python training/train.py [experiment=demo] [trainer=gpu] [key=value]``.

Exit codes (:mod:`deepfakenet.cli`): 0 trained and registered; 2 refused with one line (the data
tree is missing, empty or lacks a class); 1 unexpected error, with its traceback.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from deepfakenet.cli import run_job
from deepfakenet.pipeline import train


@hydra.main(version_base="1.3", config_path="../conf", config_name="train.yaml")
def main(cfg: DictConfig) -> float | None:
    """Run the training job; return the best validation AUROC for Hydra sweepers."""
    metrics, _ = run_job("train", lambda: train(cfg))
    return metrics.get("val/auroc_best")


if __name__ == "__main__":
    main()
