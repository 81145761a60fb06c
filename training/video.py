"""Choose and measure the video rule of a registered model (``make video-eval``).

``python training/video.py [model_ref=champion]``: clips made from the data tree's validation
images choose the rule, clips from its test images report it (:mod:`deepfakenet.video_eval`);
the rule is tagged on the model version, where the service reads it.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from deepfakenet.cli import run_job
from deepfakenet.video_eval import run_video


@hydra.main(version_base="1.3", config_path="../conf", config_name="video.yaml")
def main(cfg: DictConfig) -> float | None:
    """Run the video job; return the test clips' AUROC."""
    return run_job("video", lambda: run_video(cfg)["test"]["auroc"])


if __name__ == "__main__":
    main()
