"""Image perturbations for robustness evaluation: what happens to a photo on its way to a user.

Evaluation only. Each perturbation maps a decoded RGB image to another RGB image and is applied
*before* the one preprocessing (``preprocessing.build_transform``), exactly as a re-saved or
resized upload would reach the service. Training augmentations live in ``preprocessing``; these
are fixed, named conditions so that tables from different models are comparable.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F


@dataclass(frozen=True)
class Jpeg:
    """Re-encode as JPEG at a fixed quality (4:2:0 chroma subsampling, Pillow's default).

    Attributes:
        quality: JPEG quality, 1-100.
    """

    quality: int

    def __post_init__(self) -> None:
        if not 1 <= self.quality <= 100:
            raise ValueError(f"JPEG quality must be in 1..100, got {self.quality}")

    def __call__(self, image: Image.Image) -> Image.Image:
        """The image after one JPEG round trip."""
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=self.quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            return decoded.convert("RGB")


@dataclass(frozen=True)
class Downscale:
    """Shrink by a factor with an antialiasing filter (Pillow's bicubic, widened on reduction).

    Attributes:
        factor: Scale factor in ``(0, 1]``; ``0.5`` halves each side.
    """

    factor: float

    def __post_init__(self) -> None:
        if not 0.0 < self.factor <= 1.0:
            raise ValueError(f"downscale factor must be in (0, 1], got {self.factor}")

    def __call__(self, image: Image.Image) -> Image.Image:
        """The image resized to ``round(side * factor)`` on each side (at least 1 px)."""
        size = (
            max(1, round(image.width * self.factor)),
            max(1, round(image.height * self.factor)),
        )
        return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=None)


@dataclass(frozen=True)
class GaussianBlur:
    """Gaussian blur with a fixed standard deviation (kernel truncated at 3 sigma).

    Attributes:
        sigma: Standard deviation in pixels.
    """

    sigma: float

    def __post_init__(self) -> None:
        if not self.sigma > 0.0:
            raise ValueError(f"blur sigma must be positive, got {self.sigma}")

    def __call__(self, image: Image.Image) -> Image.Image:
        """The blurred image (edges reflected)."""
        size = 2 * math.ceil(3.0 * self.sigma) + 1
        return F.gaussian_blur(image, kernel_size=[size, size], sigma=[self.sigma, self.sigma])


@dataclass(frozen=True)
class Demosaic:
    """Bayer mosaic + demosaic: what a camera's colour filter array leaves at native resolution.

    The detector's invariance check: honest camera photos carry period-2 interpolation traces in
    the same frequency band as generator upsampling, so a model that learned "period 2 means
    fake" flags reals that went through this (measured once: FPR 0.065 -> 0.76).

    Attributes:
        method: A demosaicing method of :func:`deepfakenet.data.camera.demosaic`.
        pattern: The Bayer layout, e.g. ``RGGB``.
    """

    method: str = "bilinear"
    pattern: str = "RGGB"

    def __call__(self, image: Image.Image) -> Image.Image:
        """The image sampled through the colour filter array and interpolated back."""
        from deepfakenet.data.camera import mosaic_demosaic  # OpenCV only when used

        pixels = np.asarray(image.convert("RGB"))
        return Image.fromarray(mosaic_demosaic(pixels, method=self.method, pattern=self.pattern))


@dataclass(frozen=True)
class Identity:
    """No perturbation: the native image (the reference condition)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        """The image, unchanged."""
        return image


class PerturbedTransform:
    """``transform(perturbation(image))``: a perturbation in front of the one preprocessing.

    A class rather than a lambda so data loader worker processes can pickle it.

    Args:
        perturbation: Image-to-image function applied first.
        transform: The evaluation transform from ``preprocessing.build_transform``.
    """

    def __init__(
        self,
        perturbation: Callable[[Image.Image], Image.Image],
        transform: Callable[[Image.Image], torch.Tensor],
    ) -> None:
        self.perturbation = perturbation
        self.transform = transform

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """The preprocessed tensor of the perturbed image."""
        return self.transform(self.perturbation(image))
