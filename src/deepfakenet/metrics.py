"""The detector's metrics, one definition for validation, test and offline evaluation.

Ranking metrics (AUROC, AP) and calibration error read the probability; accuracy and F1 read
the decision at the model's own threshold, which is why two collections are kept.

The expected calibration error has exactly one definition, torchmetrics' binary ECE with
:data:`ECE_BINS` equal-width bins on ``P(fake)`` and the L1 norm: the mean, weighted by bin
size, of ``|mean P(fake) - share of fakes|`` per bin. The training metrics
(:class:`StageMetrics`, the DDP-aware module form), :func:`expected_calibration_error` (the
functional form, used by calibration, the evaluation report and the admin dashboard's
calibration on people's verdicts) and every table built on them therefore report numbers that
can be compared. Any other bin count or norm would give a different number under the same name.
"""

from __future__ import annotations

import math

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
from torchmetrics.functional.classification import binary_calibration_error

#: Bins of the expected calibration error and the reliability diagram.
ECE_BINS = 15
#: Norm of the expected calibration error: L1, the bin-size-weighted mean gap.
ECE_NORM = "l1"


def expected_calibration_error(
    prob_fake: torch.Tensor, targets: torch.Tensor, n_bins: int = ECE_BINS
) -> float:
    """THE expected calibration error of ``P(fake)`` against 0/1 targets (see the module).

    Computed in float32, as the training metrics see the probability, so that the same inputs
    give the same number wherever they are scored.

    Args:
        prob_fake: Calibrated ``P(fake)``, any shape ``N``.
        targets: ``N`` labels, 0 (real) or 1 (fake).
        n_bins: Equal-width bins on ``[0, 1]``; leave the default for reported figures.

    Returns:
        The ECE, in ``[0, 1]``.
    """
    prob = torch.as_tensor(prob_fake).detach().cpu().float().reshape(-1).contiguous()
    labels = torch.as_tensor(targets).detach().cpu().long().reshape(-1).contiguous()
    return float(binary_calibration_error(prob, labels, n_bins=n_bins, norm=ECE_NORM))


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
                "ece": BinaryCalibrationError(n_bins=ECE_BINS, norm=ECE_NORM),
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


#: The keys of :func:`compute_metrics`.
METRIC_NAMES = ("auroc", "ap", "ece", "acc", "f1")
#: Metrics that need both classes: torchmetrics answers 0 for them on a one-class set.
TWO_CLASS_METRICS = ("auroc", "ap", "f1")


def defined_metrics(
    prob_fake: torch.Tensor, targets: torch.Tensor, threshold: float
) -> dict[str, float | None]:
    """:func:`compute_metrics`, with None wherever a metric means nothing.

    An empty set or a non-finite score gives no metric at all; a set with one class gives no
    AUROC, AP or F1 (torchmetrics would answer 0, which reads as a real, terrible score and, in a
    comparison of two models, as a tie).
    """
    targets = targets.long()
    metrics: dict[str, float | None] = dict.fromkeys(METRIC_NAMES)
    if len(targets) and bool(torch.isfinite(prob_fake).all()):
        metrics.update(compute_metrics(prob_fake, targets, threshold))
    if not (bool((targets == 0).any()) and bool((targets == 1).any())):
        metrics.update(dict.fromkeys(TWO_CLASS_METRICS))
    return {k: v if v is not None and math.isfinite(v) else None for k, v in metrics.items()}
