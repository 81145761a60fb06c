"""The part of the detector that sites train together: a head on the 512-d feature vector.

A site holds feature vectors (what the service stores, :mod:`deepfakenet.features`) and the
labels its users gave, never images; so what it can improve is the map from a vector to the two
logits. Two heads are offered, and measured in the README ("Federated"):

* ``linear``: the ResNet's own final layer (512 -> 2), started from the champion's, so round 0 is
  the champion and FedAvg fine-tunes it;
* ``adapter``: a small residual MLP on the vector (512 -> hidden -> 512, added back) before the
  champion's final layer, which can bend the decision surface where a linear map cannot.

Both are plain ``nn.Module`` objects that replace ``backbone.fc`` of :class:`DeepfakeNet`, so a
federated model version is an ordinary registered model: the service, Grad-CAM and the ONNX
export see a network like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from deepfakenet.features import FEATURE_DIM
from deepfakenet.labels import LABELS

log = logging.getLogger(__name__)

#: Heads :func:`make_head` builds.
HEADS = ("linear", "adapter")


class AdapterHead(nn.Module):
    """``fc(x + up(relu(down(x))))``: a residual bottleneck before the champion's final layer.

    ``up`` starts at zero, so an untrained adapter *is* the champion's head, and training moves
    away from it only as far as the sites' data asks.
    """

    def __init__(self, fc: nn.Linear, hidden: int = 64) -> None:
        super().__init__()
        self.down = nn.Linear(fc.in_features, hidden)
        self.up = nn.Linear(hidden, fc.in_features)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.fc = fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``N x 2`` from vectors ``N x 512``."""
        return self.fc(x + self.up(F.relu(self.down(x))))


def make_head(kind: str, champion_fc: nn.Linear, hidden: int = 64) -> nn.Module:
    """A head of ``kind`` started from the champion's final layer (a copy; the input is kept)."""
    if kind not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {kind!r}")
    fc = nn.Linear(champion_fc.in_features, champion_fc.out_features)
    fc.load_state_dict(champion_fc.state_dict())
    return fc if kind == "linear" else AdapterHead(fc, hidden)


def get_arrays(head: nn.Module) -> list[np.ndarray]:
    """The head's parameters as float32 arrays, in ``state_dict`` order (what is exchanged)."""
    return [t.detach().cpu().numpy().astype(np.float32) for t in head.state_dict().values()]


def set_arrays(head: nn.Module, arrays: list[np.ndarray]) -> None:
    """Load arrays from :func:`get_arrays` (of a head of the same kind) into ``head``."""
    keys = list(head.state_dict())
    if len(keys) != len(arrays):
        raise ValueError(f"expected {len(keys)} arrays for this head, got {len(arrays)}")
    state = {
        k: torch.as_tensor(np.asarray(a, dtype=np.float32))
        for k, a in zip(keys, arrays, strict=True)
    }
    head.load_state_dict(state, strict=True)


@dataclass(frozen=True)
class HeadTraining:
    """How a site trains the head in one round (also used for the central and local baselines).

    Attributes:
        epochs: Passes over the site's rows per round.
        lr: Adam learning rate.
        batch_size: Rows per step.
        weight_decay: L2 on the head's weights, so a small site cannot blow them up.
        seed: Shuffling seed (a site uses the round number, so rounds differ).
    """

    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 1e-4
    seed: int = 0

    @classmethod
    def from_run_config(cls, run: Mapping[str, Any], seed: int = 0) -> HeadTraining:
        """The Flower app's run config keys (``local-epochs``, ``lr``, ...) as a recipe."""
        return cls(
            epochs=int(run["local-epochs"]),
            lr=float(run["lr"]),
            batch_size=int(run["batch-size"]),
            weight_decay=float(run["weight-decay"]),
            seed=seed,
        )


def save_head(head: nn.Module, path: Path) -> Path:
    """Write the head's arrays (:func:`get_arrays`) to an ``.npz``, in order."""
    np.savez(path, *get_arrays(head))
    return path


def load_arrays(path: Path) -> list[np.ndarray]:
    """The arrays of :func:`save_head` (or of a site's audit file), in order."""
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(sum(k.startswith("arr_") for k in data.files))]


def train_head(
    head: nn.Module, features: np.ndarray, labels: np.ndarray, config: HeadTraining
) -> float:
    """Fit ``head`` on ``N x 512`` vectors and 0/1 labels in place; return the last epoch's loss.

    Classes are weighted by inverse frequency: a site whose users mostly report fakes would
    otherwise pull the shared head towards "fake" for everyone.
    """
    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    if x.ndim != 2 or x.shape[1] != FEATURE_DIM or len(x) != len(y):
        raise ValueError(f"expected N x {FEATURE_DIM} vectors and N labels, got {tuple(x.shape)}")
    counts = torch.bincount(y, minlength=len(LABELS)).float()
    weight = torch.where(counts > 0, counts.sum() / (len(LABELS) * counts.clamp(min=1)), 0.0)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    head.train()
    loss_value = float("nan")
    for _ in range(config.epochs):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), config.batch_size):
            batch = order[start : start + config.batch_size]
            loss = F.cross_entropy(head(x[batch]), y[batch], weight=weight)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        loss_value = total / max(len(x), 1)
    head.eval()
    return loss_value


@torch.no_grad()
def head_logits(head: nn.Module, features: np.ndarray) -> torch.Tensor:
    """Uncalibrated logits ``N x 2`` of ``head`` for ``N x 512`` vectors."""
    head.eval()
    return head(torch.as_tensor(np.asarray(features, dtype=np.float32))).float()
