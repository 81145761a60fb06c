"""The detector's metrics, one definition for validation, test and offline evaluation.

Ranking metrics (AUROC, AP) and calibration error read the probability; accuracy and F1 read
the decision at the model's own threshold, which is why two collections are kept.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryAveragePrecision,
    BinaryCalibrationError,
    BinaryF1Score,
)

#: Bins of the expected calibration error and the reliability diagram.
ECE_BINS = 15


class StageMetrics(nn.Module):
    """AUROC, AP, ECE, accuracy and F1 for one stage (``val``, ``test``, ...), DDP-aware.

    Args:
        prefix: Key prefix, e.g. ``"val/"``; keys come out as ``val/auroc`` etc.
    """

    def __init__(self, prefix: str = "") -> None:
        super().__init__()
        self.scores = MetricCollection(
            {
                "auroc": BinaryAUROC(),
                "ap": BinaryAveragePrecision(),
                "ece": BinaryCalibrationError(n_bins=ECE_BINS, norm="l1"),
            },
            prefix=prefix,
        )
        self.decisions = MetricCollection(
            {"acc": BinaryAccuracy(), "f1": BinaryF1Score()}, prefix=prefix
        )

    def update(self, prob_fake: torch.Tensor, targets: torch.Tensor, threshold: float) -> None:
        """Add a batch of calibrated ``P(fake)`` and 0/1 targets."""
        targets = targets.long()
        self.scores.update(prob_fake, targets)
        self.decisions.update((prob_fake >= threshold).long(), targets)

    def compute(self) -> dict[str, torch.Tensor]:
        """All metrics over what was added since the last reset."""
        return {**self.scores.compute(), **self.decisions.compute()}

    def reset(self) -> None:
        """Start a new epoch."""
        self.scores.reset()
        self.decisions.reset()


def compute_metrics(
    prob_fake: torch.Tensor, targets: torch.Tensor, threshold: float
) -> dict[str, float]:
    """Metrics of a whole set at once, as plain floats (for JSON reports)."""
    metrics = StageMetrics()
    metrics.update(prob_fake.float(), targets, threshold)
    return {k: float(v) for k, v in metrics.compute().items()}
