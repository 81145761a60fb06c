"""The deployable network: torchvision's ResNet18 with a 2-class head, calibration and threshold.

This plain ``nn.Module`` (not the LightningModule) is what gets logged to MLflow and served, so
the temperature and decision threshold travel with the weights and every scorer applies them the
same way through :meth:`DeepfakeNet.predict_proba` and :meth:`DeepfakeNet.decide`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

log = logging.getLogger(__name__)

#: Index of each label in the logits; must match ``deepfakenet.data.split.CLASSES``.
LABELS: tuple[str, str] = ("real", "fake")


def _load_backbone_weights(model: nn.Module, weights: str) -> None:
    """Load ImageNet weights from a local file or from torch's hub cache, never the network.

    Args:
        model: A torchvision ResNet18.
        weights: A path to a ``state_dict`` file, or a ``ResNet18_Weights`` name such as
            ``IMAGENET1K_V1`` that must already be in ``torch.hub.get_dir()/checkpoints``.
    """
    path = Path(weights).expanduser()
    if not path.is_file() and weights in ResNet18_Weights.__members__:
        url = ResNet18_Weights[weights].url
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        if not path.is_file():
            raise FileNotFoundError(
                f"weights {weights!r} are not in the local cache ({path}); copy the file there "
                "or pass a path (nothing is downloaded at run time)"
            )
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"fc.weight", "fc.bias"}:
        raise ValueError(f"{path} is not a ResNet18 state_dict (unexpected keys: {unexpected[:5]})")
    log.info("loaded backbone weights from %s", path)


class DeepfakeNet(nn.Module):
    """ResNet18 classifier returning logits over (real, fake).

    Args:
        weights: None for random init, or local ImageNet weights (see ``_load_backbone_weights``).
        crop_size: Input side the model was trained on; serving crops to it.
    """

    def __init__(self, weights: str | None = None, crop_size: int = 64) -> None:
        super().__init__()
        backbone = resnet18(weights=None)
        if weights:
            _load_backbone_weights(backbone, weights)
        else:
            log.info("ResNet18 starts from random initialisation (no weights configured)")
        backbone.fc = nn.Linear(backbone.fc.in_features, len(LABELS))
        self.backbone = backbone
        self.crop_size = crop_size
        # Buffers, so they are saved and loaded with the weights; set after training.
        self.register_buffer("temperature", torch.ones(()))
        self.register_buffer("threshold", torch.tensor(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Uncalibrated logits, ``N x 2``."""
        return self.backbone(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 512-d penultimate-layer vector (after global average pooling), ``N x 512``."""
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        x = b.layer4(b.layer3(b.layer2(b.layer1(x))))
        return torch.flatten(b.avgpool(x), 1)

    def prob_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated ``P(fake)`` from logits: softmax of temperature-scaled logits."""
        return torch.softmax(logits / self.temperature, dim=1)[:, 1]

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Calibrated ``P(fake)``, ``N``."""
        return self.prob_from_logits(self(x))

    def decide(self, prob_fake: torch.Tensor) -> torch.Tensor:
        """0/1 decisions (1 = fake) at the stored threshold."""
        return (prob_fake >= self.threshold).long()
