"""Evaluate a registered model: ``python training/evaluate.py model_ref=champion|previous|<N>``."""

from __future__ import annotations

import json
import logging

import hydra
from omegaconf import DictConfig

from deepfakenet.pipeline import evaluate

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate.yaml")
def main(cfg: DictConfig) -> float:
    """Run the evaluation job; return the test AUROC."""
    report = evaluate(cfg)
    log.info("test metrics of %s:\n%s", report["model"], json.dumps(report["metrics"], indent=2))
    return report["metrics"]["auroc"]


if __name__ == "__main__":
    main()
