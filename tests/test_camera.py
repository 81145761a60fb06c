"""Camera-pipeline simulation: Bayer mosaic / demosaic, and the random camera for reals."""

from __future__ import annotations

import numpy as np
import pytest

from deepfakenet.data.camera import (
    BAYER_PATTERNS,
    DEMOSAIC_METHODS,
    RESIZE_KERNELS,
    CameraConfig,
    bayer_mosaic,
    cfa_channel_map,
    demosaic,
    jpeg_compress,
    mosaic_demosaic,
    resize,
    simulate_camera,
)

#: Every probability off: simulate_camera must then be the identity.
NOTHING = {
    "p_mosaic": 0.0,
    "p_noise": 0.0,
    "p_color": 0.0,
    "p_sharpen": 0.0,
    "p_jpeg": 0.0,
    "p_double_jpeg": 0.0,
    "p_resize": 0.0,
}


def _image(height: int = 48, width: int = 40, seed: int = 0) -> np.ndarray:
    """A textured but smooth-ish test image (noise blurred by a 3x3 box, then stretched)."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, size=(height + 2, width + 2, 3))
    box = sum(noise[i : i + height, j : j + width] for i in range(3) for j in range(3)) / 9.0
    box = (box - box.min()) / (box.max() - box.min()) * 235 + 10
    return np.rint(box).astype(np.uint8)


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_mosaic_samples_one_colour_per_pixel_in_the_named_layout(pattern):
    image = _image(6, 8)
    mosaic = bayer_mosaic(image, pattern)
    assert mosaic.shape == (6, 8) and mosaic.dtype == np.uint8
    letters = {"R": 0, "G": 1, "B": 2}
    for (dy, dx), letter in zip([(0, 0), (0, 1), (1, 0), (1, 1)], pattern, strict=True):
        np.testing.assert_array_equal(mosaic[dy::2, dx::2], image[dy::2, dx::2, letters[letter]])
    assert cfa_channel_map((2, 2), pattern).ravel().tolist() == [letters[c] for c in pattern]


@pytest.mark.parametrize("shape", [(32, 32), (33, 31), (7, 5)])
@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_bilinear_demosaic_keeps_the_sampled_sites_exactly(pattern, shape):
    """Guards OpenCV's Bayer naming: a wrong code would put colours at the wrong sites."""
    mosaic = bayer_mosaic(_image(*shape), pattern)
    rgb = demosaic(mosaic, pattern, "bilinear")
    assert rgb.shape == (*shape, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(bayer_mosaic(rgb, pattern), mosaic)


@pytest.mark.parametrize("method", DEMOSAIC_METHODS)
def test_every_method_keeps_shape_and_a_flat_image_flat(method):
    flat = np.empty((33, 34, 3), np.uint8)
    flat[:] = (200, 90, 30)
    out = mosaic_demosaic(flat, method=method, pattern="GBRG")
    assert out.shape == flat.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - flat).max() <= 1


@pytest.mark.parametrize("method", DEMOSAIC_METHODS)
def test_every_method_reconstructs_a_photo_closely(method):
    import skimage.data

    photo = np.ascontiguousarray(skimage.data.astronaut()[::4, ::4][30:70, 40:80])
    out = mosaic_demosaic(photo, method=method)
    error = np.abs(out.astype(float) - photo).mean()
    bilinear = np.abs(mosaic_demosaic(photo).astype(float) - photo).mean()
    assert 0 < error < 15
    assert method in {"bilinear", "edge_aware"} or error < bilinear


def test_unknown_pattern_or_method_is_a_value_error():
    with pytest.raises(ValueError, match="pattern"):
        bayer_mosaic(_image(), "RGBG")
    with pytest.raises(ValueError, match="method"):
        demosaic(np.zeros((4, 4), np.uint8), "RGGB", "ahd")


def test_jpeg_and_resize_helpers():
    image = _image(32, 40)
    assert jpeg_compress(image, 80).shape == image.shape
    for kernel in RESIZE_KERNELS:
        assert resize(image, 0.5, kernel).shape == (16, 20, 3)


def test_simulate_camera_is_deterministic_per_seed_and_changes_pixels():
    image = _image()
    a = simulate_camera(image, np.random.default_rng(5))
    b = simulate_camera(image, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    always = CameraConfig(p_mosaic=1.0, p_resize=0.0, p_double_jpeg=0.0)
    outs = [simulate_camera(image, np.random.default_rng(s), always) for s in range(4)]
    for out in outs:
        assert out.shape == image.shape
        assert not np.array_equal(out, image)
    assert not np.array_equal(outs[0], outs[1])


def test_simulate_camera_with_every_step_off_is_the_identity():
    image = _image()
    out, steps = simulate_camera(image, np.random.default_rng(0), CameraConfig(**NOTHING), True)
    np.testing.assert_array_equal(out, image)
    assert steps == ""


def test_describe_names_the_steps_applied():
    config = CameraConfig(**{**NOTHING, "p_mosaic": 1.0, "p_jpeg": 1.0, "patterns": ["BGGR"]})
    _, steps = simulate_camera(_image(), np.random.default_rng(0), config, describe=True)
    assert steps.startswith("mosaic=BGGR/") and "+jpeg=" in steps


def test_input_side_covers_the_worst_crop_and_downscale():
    config = CameraConfig(p_jpeg=1.0, p_double_jpeg=1.0, p_resize=1.0, p_upscale=0.0)
    need = config.input_side(32)
    for seed in range(6):
        out = simulate_camera(_image(need, need), np.random.default_rng(seed), config)
        assert min(out.shape[:2]) >= 32


def test_config_takes_hydra_lists_and_rejects_bad_values():
    config = CameraConfig(jpeg_quality=[70, 90], demosaic_methods=["vng"], jpeg_subsampling=[2])
    assert config.jpeg_quality == (70.0, 90.0) and config.demosaic_methods == ("vng",)
    out = simulate_camera(_image(), np.random.default_rng(0), config)
    assert out.dtype == np.uint8
    with pytest.raises(ValueError, match="p_jpeg"):
        CameraConfig(p_jpeg=1.5)
    with pytest.raises(ValueError, match="demosaic"):
        CameraConfig(demosaic_methods=["ahd"])
    with pytest.raises(ValueError, match="jpeg_quality"):
        CameraConfig(jpeg_quality=[90, 70])
