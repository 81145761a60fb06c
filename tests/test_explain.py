"""Grad-CAM computing and drawing (the trained-model sanity check lives in test_gradcam_sanity)."""

import numpy as np
import pytest
import torch

from deepfakenet.explain import grad_cam, overlay, png_bytes, resolve_layer
from deepfakenet.models import DeepfakeNet


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return DeepfakeNet(crop_size=64).eval()


def test_batch_first_maps_normalised_per_image(net):
    x = torch.randn(3, 3, 64, 96)
    result = grad_cam(net, x, "layer4")
    assert result.cams.shape == (3, 2, 3) and result.upsampled.shape == (3, 64, 96)
    for maps in (result.cams, result.upsampled):
        assert maps.min() >= 0 and maps.max() <= 1
    assert result.targets.tolist() == net(x).argmax(1).tolist()
    assert grad_cam(net, x, "layer3").cams.shape == (3, 4, 6)


def test_explicit_target_and_gradients_under_inference_mode(net):
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():  # callers may run in inference mode; Grad-CAM needs gradients
        result = grad_cam(net, x.clone(), "layer4", target=1)
    assert result.targets.tolist() == [1, 1]
    real = grad_cam(net, x, "layer4", target=0).cams
    assert not torch.allclose(real, result.cams), "the map depends on the explained class"
    # Captum removed its hooks: the layer has none left after the call.
    assert not resolve_layer(net, "layer4")._forward_hooks


def test_unknown_layer_is_a_clear_error(net):
    with pytest.raises(ValueError, match="no layer"):
        resolve_layer(net, "layer9")


def test_overlay_checks_ranges_and_returns_uint8():
    image = np.full((4, 5, 3), 0.5)
    cam = np.zeros((4, 5))
    cam[0, 0] = 1.0
    out = overlay(image, cam, alpha=0.5)
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3)
    assert not np.array_equal(out[0, 0], out[3, 4]), "hot and cold pixels differ"
    with pytest.raises(ValueError, match="differ in size"):
        overlay(image, np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        overlay(image * 300, cam)
    assert png_bytes(out)[:4] == b"\x89PNG"
