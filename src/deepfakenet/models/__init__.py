"""The network and its LightningModule."""

from deepfakenet.models.module import DetectorModule
from deepfakenet.models.net import LABELS, DeepfakeNet

__all__ = ["LABELS", "DeepfakeNet", "DetectorModule"]
