import numpy as np
import torch
from PIL import Image

from deepfakenet.preprocessing import (
    AugmentConfig,
    RandomDownscale,
    build_transform,
    denormalize,
    preprocess,
)


def _image(h: int, w: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_eval_crop_keeps_native_pixels():
    # A large image is centre-cropped, never resized: every pixel survives unchanged.
    img = _image(100, 120)
    out = build_transform(32, train=False)(img)
    assert out.shape == (3, 32, 32)
    expected = np.asarray(img)[34:66, 44:76].astype(np.float32) / 255
    restored = denormalize(out).permute(1, 2, 0).numpy()
    assert np.abs(restored - expected).max() < 1e-5


def test_small_images_are_resized_up_to_the_crop():
    out = build_transform(64, train=False)(_image(40, 50))
    assert out.shape == (3, 64, 64)


def test_full_image_mode_keeps_the_size():
    out = build_transform(32, train=False, center_crop=False)(_image(70, 90))
    assert out.shape == (3, 70, 90)


def test_train_transform_without_augmentation_is_a_native_crop():
    img = _image(64, 64)
    no_aug = AugmentConfig(hflip_p=0, jpeg_p=0, blur_p=0)
    out = build_transform(64, train=True, augment=no_aug)(img)
    restored = denormalize(out).permute(1, 2, 0).numpy()
    assert np.abs(restored - np.asarray(img) / 255).max() < 1e-5


def test_train_augmentations_change_pixels_and_keep_shape():
    img = _image(80, 80)
    always = AugmentConfig(hflip_p=0, jpeg_p=1.0, blur_p=1.0, downscale_p=1.0, color_jitter_p=1.0)
    torch.manual_seed(0)
    out = build_transform(48, train=True, augment=always)(img)
    assert out.shape == (3, 48, 48)
    assert out.dtype == torch.float32


def test_grayscale_augmentation_drops_colour():
    only_grey = AugmentConfig(hflip_p=0, jpeg_p=0, blur_p=0, grayscale_p=1.0)
    out = denormalize(build_transform(32, train=True, augment=only_grey)(_image(40, 40)))
    assert torch.allclose(out[0], out[1], atol=1e-5) and torch.allclose(out[1], out[2], atol=1e-5)


def test_random_downscale_never_goes_below_the_crop():
    t = RandomDownscale((0.1, 0.2), min_size=40)
    for _ in range(20):
        out = t(torch.zeros(3, 50, 90, dtype=torch.uint8))
        assert min(out.shape[1:]) >= 40


def test_preprocess_batches_for_serving():
    batch = preprocess([_image(70, 90), _image(20, 20, seed=1)], crop_size=32)
    assert batch.shape == (2, 3, 32, 32)
