"""Grad-CAM with Captum: where the detector looked, as a map and as an overlay on the input.

Computing and drawing are separate (as in pytorch-grad-cam): :func:`grad_cam` returns batch-first
maps normalised to ``[0, 1]`` per image; :func:`overlay` is a pure function from an image and a
map to uint8 pixels. The target is the class whose logit is explained: by default the predicted
one. Captum's hooks are registered and removed inside each ``attribute`` call, and gradients are
switched on explicitly (and inference mode off) because callers may run under
``inference_mode``.

Resolution: ResNet18's last block (``layer4``) has stride 32, so a 64 px crop gives a 2x2 map and a
224 px crop 7x7. The map is exactly that coarse; it is upsampled with
``LayerAttribution.interpolate`` only to draw it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import matplotlib
import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam
from PIL import Image
from torch import nn

from deepfakenet.models.net import DeepfakeNet


@dataclass(frozen=True)
class CamResult:
    """Grad-CAM of a batch.

    Attributes:
        cams: ``N x h x w`` maps at the layer's resolution, each min-max normalised to [0, 1].
        upsampled: ``N x H x W`` maps bilinearly upsampled to the input and renormalised.
        targets: The explained class index of each item.
    """

    cams: torch.Tensor
    upsampled: torch.Tensor
    targets: torch.Tensor


def resolve_layer(net: DeepfakeNet, name: str) -> nn.Module:
    """The backbone module called ``name`` (e.g. ``layer4``, ``layer3``, ``layer4.1``)."""
    try:
        return net.backbone.get_submodule(name)
    except AttributeError as err:
        raise ValueError(f"the ResNet has no layer {name!r} to explain") from err


def _normalise(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each map of an ``N x ...`` tensor; flat maps become zeros."""
    flat = maps.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - lo
    out = torch.where(span > 0, (flat - lo) / span.clamp_min(1e-12), torch.zeros_like(flat))
    return out.view_as(maps)


def grad_cam(
    net: DeepfakeNet,
    inputs: torch.Tensor,
    layer: str = "layer4",
    target: int | torch.Tensor | None = None,
    relu: bool = True,
) -> CamResult:
    """Grad-CAM of ``inputs`` (preprocessed ``N x 3 x H x W``) for the target class logits.

    Args:
        net: The detector, in eval mode.
        inputs: A preprocessed batch.
        layer: Backbone module to explain (see :func:`resolve_layer`).
        target: Class index (0 real, 1 fake) for every item, one index per item, or None for
            each item's predicted class.
        relu: Keep only positive evidence, as Grad-CAM defines it (and the service serves).
            False keeps the signed map: when an image speaks against the target everywhere
            (target ``fake`` on an image the model calls real) the ReLU'd map is flat, while the
            signed one still ranks the regions, least negative first (what benchmarks use).

    Returns:
        The maps and the explained targets.
    """
    module = resolve_layer(net, layer)
    # Gradients are needed even when the caller runs under inference_mode; a tensor made in
    # inference mode cannot enter autograd, so work on a normal copy.
    with torch.inference_mode(False), torch.enable_grad():
        inputs = inputs.clone()
        if target is None:
            with torch.no_grad():
                target = net(inputs).argmax(dim=1)
        targets = torch.as_tensor(target).expand(inputs.shape[0]).clone()
        attr = LayerGradCam(net, module).attribute(inputs, target=targets, relu_attributions=relu)
    attr = attr.detach()
    cams = _normalise(attr[:, 0])
    up = LayerAttribution.interpolate(attr, tuple(inputs.shape[-2:]), interpolate_mode="bilinear")
    return CamResult(cams=cams, upsampled=_normalise(up[:, 0]), targets=targets)


def overlay(
    image: np.ndarray, cam: np.ndarray, alpha: float = 0.45, colormap: str = "jet"
) -> np.ndarray:
    """Blend a heat map over an image.

    Args:
        image: ``H x W x 3`` floats in ``[0, 1]``.
        cam: ``H x W`` floats in ``[0, 1]`` (same size as the image).
        alpha: Weight of the heat map.
        colormap: A matplotlib colormap name.

    Returns:
        ``H x W x 3`` uint8 pixels.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be H x W x 3, got {image.shape}")
    if cam.shape != image.shape[:2]:
        raise ValueError(f"cam {cam.shape} and image {image.shape[:2]} differ in size")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if image.min() < 0 or image.max() > 1 or cam.min() < 0 or cam.max() > 1:
        raise ValueError("image and cam must hold values in [0, 1]")
    heat = matplotlib.colormaps[colormap](cam)[..., :3]
    blended = (1.0 - alpha) * image + alpha * heat
    return np.clip(np.rint(blended * 255.0), 0, 255).astype(np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    """Encode ``H x W x 3`` uint8 pixels as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
