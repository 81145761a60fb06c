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


def test_the_served_crop_then_normalize_is_exactly_the_one_preprocessing():
    # The service ships uint8 crops to its batch scorer and normalises there: the two halves
    # must give bit for bit what training and evaluation get from the one transform, and the
    # PIL-level centre crop (a large upload is not turned into a tensor whole) must take exactly
    # torchvision's box, odd margins included.
    from torchvision.transforms import v2

    from deepfakenet.preprocessing import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        EnsureMinSize,
        build_transform,
        crop,
        normalize,
    )

    rng = np.random.default_rng(3)
    sides = ((40, 90), (64, 64), (20, 30), (49, 97), (48, 51), (300, 47))
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in sides]
    reference = v2.Compose(
        [
            v2.ToImage(),
            EnsureMinSize(48),
            v2.CenterCrop(48),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    expected = torch.stack([reference(image) for image in images])
    pixels = crop(images, 48)
    assert pixels.dtype == torch.uint8 and pixels.shape == (len(sides), 3, 48, 48)
    assert torch.equal(normalize(pixels), expected)
    assert torch.equal(preprocess(images, 48), expected)
    transform = build_transform(48, train=False)
    assert torch.equal(torch.stack([transform(image) for image in images]), expected)
    tensor = v2.functional.pil_to_tensor(images[0])  # tensors take the same path
    assert torch.equal(transform(tensor), expected[0])
