"""Scoring with a :class:`DeepfakeNet`: the one code path from a batch to calibrated decisions.

Evaluation, benchmarks and the HTTP service all score through these functions, so every caller
applies the stored temperature and threshold the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from deepfakenet.labels import LABELS
from deepfakenet.models.net import DeepfakeNet


@dataclass(frozen=True)
class Scores:
    """The detector's answer for a batch.

    Attributes:
        logits: ``N x 2`` uncalibrated logits.
        prob_fake: ``N`` calibrated probabilities of ``fake``.
        labels: ``N`` decisions at the model's threshold, as ``"real"``/``"fake"``.
        features: ``N x 512`` penultimate-layer vectors (what the head sees).
    """

    logits: torch.Tensor
    prob_fake: torch.Tensor
    labels: list[str]
    features: torch.Tensor


@torch.inference_mode()
def scores_from_outputs(net: DeepfakeNet, logits: torch.Tensor, features: torch.Tensor) -> Scores:
    """THE calibration path: raw logits (from any backend) -> calibrated scores and decisions.

    Eager torch, ONNX fp32 and ONNX int8 (:mod:`deepfakenet.backends`) only produce logits and
    features; the temperature, offset and threshold stored in ``net`` are applied here, once, so
    a faster backend can change the arithmetic but never how a logit is read.

    Args:
        net: The network whose calibration buffers apply (its weights are not used).
        logits: ``N x 2`` uncalibrated logits (CPU).
        features: ``N x 512`` penultimate-layer vectors (passed through).
    """
    logits = logits.float()
    prob = net.prob_from_logits(logits)
    labels = [LABELS[int(d)] for d in net.decide(prob)]
    return Scores(logits=logits, prob_fake=prob, labels=labels, features=features.float())


@torch.inference_mode()
def score_batch(net: DeepfakeNet, batch: torch.Tensor) -> Scores:
    """Score a preprocessed batch in one forward pass (features and logits together)."""
    features = net.features(batch)
    return scores_from_outputs(net, net.backbone.fc(features), features)


@torch.inference_mode()
def predict_loader(
    net: DeepfakeNet, loader: DataLoader, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets for every batch of ``loader``.

    Returns:
        ``(logits N x 2, targets N)`` on the CPU; apply ``net.prob_from_logits`` for P(fake).
    """
    net = net.to(device).eval()
    logits, targets = [], []
    for x, y in loader:
        logits.append(net(x.to(device)).float().cpu())
        targets.append(torch.as_tensor(y))
    return torch.cat(logits), torch.cat(targets)
