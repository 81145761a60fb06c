"""THE preprocessing: one function builds the transform for training, evaluation and serving.

A detector looks at high-frequency traces (upsampling, re-compression), so images are cropped at
native resolution, never downscaled to a fixed size: interpolation would smooth away the evidence
(Wang et al., CNNDetection, 2020). Only images smaller than the crop are resized (up), because a
batch needs one shape. The same code path is used everywhere so the model never sees two pipelines.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class AugmentConfig:
    """Training-only augmentations; each applied with its own probability to BOTH classes.

    Applying them to real and fake images alike is what stops "was re-compressed / blurred /
    resampled" from becoming a shortcut cue for "fake".

    Attributes:
        hflip_p: Probability of a horizontal flip.
        jpeg_p: Probability of JPEG re-compression.
        jpeg_quality: Inclusive range the JPEG quality is drawn from.
        blur_p: Probability of a Gaussian blur.
        blur_sigma: Range the blur sigma is drawn from.
        downscale_p: Probability of an antialiased downscale before cropping.
        downscale_range: Range of the downscale factor (never below what the crop needs).
        color_jitter_p: Probability of a light brightness/contrast/saturation jitter.
        grayscale_p: Probability of dropping colour (grey photos are real too: a model that
            never saw one flags them, as the leave-one-source-out protocol shows).
    """

    hflip_p: float = 0.5
    jpeg_p: float = 0.1
    jpeg_quality: tuple[int, int] = (65, 100)
    blur_p: float = 0.1
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    downscale_p: float = 0.0
    downscale_range: tuple[float, float] = (0.5, 0.95)
    color_jitter_p: float = 0.0
    grayscale_p: float = 0.0


class EnsureMinSize(v2.Transform):
    """Upscale only images whose short side is below ``size``; larger images are left untouched."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Resize so the short side equals ``size`` when it is smaller, else pass through."""
        height, width = F.get_size(inpt)
        short = min(height, width)
        if short >= self.size:
            return inpt
        scale = self.size / short
        new_size = [max(self.size, round(height * scale)), max(self.size, round(width * scale))]
        return F.resize(inpt, new_size, interpolation=v2.InterpolationMode.BILINEAR, antialias=True)


class RandomDownscale(v2.Transform):
    """Antialiased downscale by a random factor, bounded so the result still covers the crop.

    The bound matters: an image shrunk below the crop would be upsampled again by
    :class:`EnsureMinSize`, which plants upsampling traces on a *real* image.
    """

    def __init__(self, factor_range: tuple[float, float], min_size: int) -> None:
        super().__init__()
        self.factor_range = factor_range
        self.min_size = min_size

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Downscale by a factor drawn from ``factor_range`` (clipped to keep ``min_size``)."""
        height, width = F.get_size(inpt)
        lowest = self.min_size / min(height, width)
        factor = max(random.uniform(*self.factor_range), lowest)
        if factor >= 1.0:
            return inpt
        new_size = [
            max(self.min_size, round(height * factor)),
            max(self.min_size, round(width * factor)),
        ]
        return F.resize(inpt, new_size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True)


def build_transform(
    crop_size: int,
    train: bool = False,
    augment: AugmentConfig | None = None,
    center_crop: bool = True,
) -> v2.Compose:
    """Build the transform from a PIL RGB image (or uint8 CHW tensor) to a normalised tensor.

    Args:
        crop_size: Side of the square crop taken at native resolution.
        train: Random crop plus augmentations when True; deterministic centre crop otherwise.
        augment: Augmentation settings (training only); defaults to :class:`AugmentConfig`.
        center_crop: For evaluation only: False keeps the whole image (batch size 1 then),
            used by the robustness protocol to compare crop and full-image scoring.

    Returns:
        A torchvision v2 transform producing a float32 ``3 x H x W`` tensor.
    """
    steps: list[v2.Transform] = []
    if train:
        steps.append(v2.ToImage())
        aug = augment or AugmentConfig()
        # What happens to an image before it reaches us (resizing, editing, re-compression) is
        # applied to the whole image, in that order, and only then cropped, as serving crops an
        # uploaded file: the crop then sits at any offset to the JPEG 8x8 block grid, as it
        # does at inference, instead of always on it.
        if aug.downscale_p > 0:
            steps.append(
                v2.RandomApply([RandomDownscale(aug.downscale_range, crop_size)], p=aug.downscale_p)
            )
        if aug.color_jitter_p > 0:
            jitter = v2.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02)
            steps.append(v2.RandomApply([jitter], p=aug.color_jitter_p))
        if aug.grayscale_p > 0:
            steps.append(v2.RandomGrayscale(p=aug.grayscale_p))
        if aug.blur_p > 0:
            blur = v2.GaussianBlur(kernel_size=5, sigma=aug.blur_sigma)
            steps.append(v2.RandomApply([blur], p=aug.blur_p))
        if aug.jpeg_p > 0:
            steps.append(v2.RandomApply([v2.JPEG(list(aug.jpeg_quality))], p=aug.jpeg_p))
        steps += [EnsureMinSize(crop_size), v2.RandomCrop(crop_size)]
        if aug.hflip_p > 0:
            steps.append(v2.RandomHorizontalFlip(p=aug.hflip_p))
    else:
        steps += _eval_crop_steps(crop_size, center_crop)
    steps += _normalize_steps()
    return v2.Compose(steps)


class PilCenterCrop(v2.Transform):
    """Take the centre crop of a large-enough PIL image before it becomes a tensor.

    The result is exactly :class:`v2.CenterCrop`'s (same box, same rounding), but a 12-megapixel
    upload is no longer copied whole into a tensor only to keep 96 x 96 of it: the crop is PIL's
    (a view, then a small copy). Images smaller than the crop, and tensors, pass through to the
    regular steps, which upscale them first.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, *inputs: Any) -> Any:
        """Crop a single PIL image; anything else passes through unchanged."""
        image = inputs[0] if len(inputs) == 1 else inputs
        if not isinstance(image, Image.Image) or min(image.size) < self.size:
            return image
        width, height = image.size
        top = round((height - self.size) / 2.0)  # as v2.functional.center_crop rounds
        left = round((width - self.size) / 2.0)
        return image.crop((left, top, left + self.size, top + self.size))


def _eval_crop_steps(crop_size: int, center_crop: bool = True) -> list[v2.Transform]:
    """The geometric half of the evaluation transform: pixels in, uint8 ``3 x H x W`` out."""
    steps: list[v2.Transform] = [PilCenterCrop(crop_size)] if center_crop else []
    steps += [v2.ToImage(), EnsureMinSize(crop_size)]
    if center_crop:
        steps.append(v2.CenterCrop(crop_size))
    return steps


def _normalize_steps() -> list[v2.Transform]:
    """The photometric half, shared by every path: uint8 ``[0, 255]`` to normalised float32."""
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def crop(images: list[Image.Image], crop_size: int) -> torch.Tensor:
    """The evaluation crops of decoded RGB images, still uint8 (``N x 3 x crop x crop``).

    The first half of :func:`preprocess`, for callers that move pixels between processes: a
    uint8 crop is a quarter of its float32 tensor, and :func:`normalize` finishes the job where
    the batch is scored. ``normalize(crop(x, s))`` equals ``preprocess(x, s)`` exactly.
    """
    transform = v2.Compose(_eval_crop_steps(crop_size))
    return torch.stack([transform(img).as_subclass(torch.Tensor) for img in images])


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """Normalise uint8 crops (``N x 3 x H x W`` or ``3 x H x W``) as :func:`preprocess` does."""
    return v2.Compose(_normalize_steps())(tv_tensors.Image(pixels)).as_subclass(torch.Tensor)


def preprocess(images: list[Image.Image], crop_size: int) -> torch.Tensor:
    """Turn decoded RGB images into one evaluation batch (``N x 3 x crop x crop``, float32)."""
    return normalize(crop(images, crop_size))


def denormalize(batch: torch.Tensor) -> torch.Tensor:
    """Invert the normalisation, giving ``[0, 1]`` pixels back (for overlays and plots)."""
    mean = torch.tensor(IMAGENET_MEAN, device=batch.device).view(-1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=batch.device).view(-1, 1, 1)
    return (batch * std + mean).clamp(0, 1)
