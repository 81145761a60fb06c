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
from torch.nn import functional as F
from torchvision.models import ResNet18_Weights, resnet18

from deepfakenet.labels import LABELS  # index of each label in the logits

log = logging.getLogger(__name__)


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


class HighPass(nn.Module):
    """Fixed residual input filter: the image minus its 3x3 binomial blur, times ``gain``.

    Generator traces live in the top octave of the spectrum (period-2 patterns, missing or
    replicated fine detail), where photo content has little energy; the first convolution of a
    randomly initialised ResNet has to discover a high-pass filter before it can see them, and on
    a CPU budget it barely gets there (on the embedded data: validation AUROC about 0.90 after
    ten epochs with the plain stem, about 0.98 with this one). Feeding the residual removes most
    of the content (colour, brightness, smooth shading), which is also what a detector should
    not key on when the photo source changes. The kernel is a fixed, non-persistent buffer: no
    weights, no state-dict keys.

    Args:
        gain: Scale of the residual, which is small next to the normalised pixels.
    """

    def __init__(self, gain: float = 4.0) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = torch.outer(taps, taps) / 16.0
        self.register_buffer("kernel", kernel.expand(3, 1, 3, 3).clone(), persistent=False)
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``gain * (x - blur(x))`` per channel, edges reflected; same shape as ``x``."""
        blur = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.kernel, groups=x.shape[1])
        return self.gain * (x - blur)


def calibrated_prob(
    logits: torch.Tensor, temperature: torch.Tensor | float, bias: torch.Tensor | float
) -> torch.Tensor:
    """The one calibrated probability: ``P(fake) = sigmoid((fake - real) / temperature + bias)``.

    A free function so that fitting the calibration (:mod:`deepfakenet.calibration`, with
    candidate values) and serving it (:meth:`DeepfakeNet.prob_from_logits`, with the stored
    buffers) run the same formula.
    """
    return torch.sigmoid((logits[:, 1] - logits[:, 0]) / temperature + bias)


#: Input filters :class:`DeepfakeNet` accepts (``conf/model``: ``net.input_filter``).
INPUT_FILTERS = ("none", "highpass")


class DeepfakeNet(nn.Module):
    """ResNet18 classifier returning logits over (real, fake).

    Args:
        weights: None for random init, or local ImageNet weights (see ``_load_backbone_weights``).
        crop_size: The side the model is evaluated and served at (``data.eval_crop_size``;
            training crops may be smaller, the network is fully convolutional).
        input_filter: ``"none"`` feeds the normalised image to the ResNet; ``"highpass"`` feeds
            its high-frequency residual (see :class:`HighPass`). Part of the model, not of the
            preprocessing, so it travels with the weights and every scorer applies it.
    """

    def __init__(
        self, weights: str | None = None, crop_size: int = 64, input_filter: str = "none"
    ) -> None:
        super().__init__()
        if input_filter not in INPUT_FILTERS:
            raise ValueError(f"input_filter must be one of {INPUT_FILTERS}, got {input_filter!r}")
        self.input_filter: nn.Module = HighPass() if input_filter == "highpass" else nn.Identity()
        backbone = resnet18(weights=None)
        if weights:
            _load_backbone_weights(backbone, weights)
        else:
            log.info("ResNet18 starts from random initialisation (no weights configured)")
        backbone.fc = nn.Linear(backbone.fc.in_features, len(LABELS))
        self.backbone = backbone
        self.crop_size = crop_size
        # Buffers, so they are saved and loaded with the weights; set after training by
        # deepfakenet.calibration (temperature and logit offset on validation, then threshold).
        self.register_buffer("temperature", torch.ones(()))
        self.register_buffer("logit_bias", torch.zeros(()))
        self.register_buffer("threshold", torch.tensor(0.5))

    def __setstate__(self, state: dict) -> None:
        # Models pickled before the input filter / logit offset existed load as models without
        # them (an identity filter, a zero offset), so older registered versions keep working.
        super().__setstate__(state)
        if "input_filter" not in self._modules:
            self.input_filter = nn.Identity()
        if "logit_bias" not in self._buffers:
            self.register_buffer("logit_bias", torch.zeros((), device=self.temperature.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Uncalibrated logits, ``N x 2``."""
        return self.backbone(self.input_filter(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 512-d penultimate-layer vector (after global average pooling), ``N x 512``."""
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(self.input_filter(x)))))
        x = b.layer4(b.layer3(b.layer2(b.layer1(x))))
        return torch.flatten(b.avgpool(x), 1)

    def prob_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated ``P(fake)`` from logits: ``sigmoid((fake - real) / temperature + bias)``.

        With a zero ``logit_bias`` this is the softmax of the temperature-scaled logits.
        """
        return calibrated_prob(logits, self.temperature, self.logit_bias)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Calibrated ``P(fake)``, ``N``."""
        return self.prob_from_logits(self(x))

    def decide(self, prob_fake: torch.Tensor) -> torch.Tensor:
        """0/1 decisions (1 = fake) at the stored threshold."""
        return (prob_fake >= self.threshold).long()
