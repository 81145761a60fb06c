"""Batch scoring of a data loader with a :class:`DeepfakeNet` (evaluation, benchmarks)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from deepfakenet.models.net import DeepfakeNet


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
