"""Fake families (fixed-kernel and learned decoders) and the fakes' post-processing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from deepfakenet.data import decoders
from deepfakenet.data.fakes import (
    FAKE_FAMILIES,
    FIXED_FAMILIES,
    LEARNED_FAMILIES,
    FakePostConfig,
    postprocess,
)

NOTHING = {"p_jpeg": 0.0, "p_double_jpeg": 0.0, "p_resize": 0.0, "p_noise": 0.0}


def _photo(height: int = 48, width: int = 40) -> np.ndarray:
    """A small natural image (a downscaled crop of scikit-image's astronaut)."""
    import skimage.data

    return np.ascontiguousarray(
        skimage.data.astronaut()[::4, ::4][20 : 20 + height, 30 : 30 + width]
    )


TONE = 5
"""Cycles per 64 px of the test tone: below the Nyquist frequency of a /4 latent (8 cycles)."""


def _tone(side: int = 64, seed: int = 0) -> np.ndarray:
    """Two colour cosines (TONE cycles along x and along y), periodic in the frame.

    A 2x (4x) upsampler that is not an ideal interpolator mirrors a tone at ``f`` to
    ``k/2 +- f`` (``k/4 +- f``): spectral replicas where this input has no energy at all, the
    spectral-peak trace generators leave.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side]
    phase_x, phase_y = rng.uniform(0, 2 * np.pi, size=2)
    wave = np.cos(2 * np.pi * TONE * xx / side + phase_x)
    wave = wave + np.cos(2 * np.pi * TONE * yy / side + phase_y)
    gains, offsets = rng.uniform(35, 55, size=3), rng.uniform(110, 140, size=3)
    return np.rint(offsets + gains * wave[..., None]).astype(np.uint8)


def _replica_energy(image: np.ndarray, bins: tuple[int, ...]) -> float:
    """Luma spectral power at the given frequency bins along the x and y axes."""
    luma = image.astype(float) @ np.array([0.299, 0.587, 0.114])
    power = np.abs(np.fft.fft2(luma - luma.mean())) ** 2
    return float(sum(power[0, b] + power[b, 0] for b in bins))


#: Replicas of the tone after a 2x upsampler (32 - 5) and after a 4x one (16 -+ 5).
X2_BINS, X4_BINS = (32 - TONE,), (16 - TONE, 16 + TONE)


@pytest.mark.parametrize("name", list(FAKE_FAMILIES))
def test_each_family_keeps_shape_is_seeded_and_changes_the_image(name):
    family = FAKE_FAMILIES[name]
    image = _photo(37, 42)
    a = family(image, np.random.default_rng(3))
    b = family(image, np.random.default_rng(3))
    c = family(image, np.random.default_rng(4))
    assert a.shape == image.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, image)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("name", FIXED_FAMILIES)
def test_fixed_families_leave_2x_spectral_replicas(name):
    for seed in range(3):
        image = _tone(seed=seed)
        fake = FAKE_FAMILIES[name](image, np.random.default_rng(seed), multi_stage=0.0)
        assert _replica_energy(fake, X2_BINS) > 100 * _replica_energy(image, X2_BINS)


@pytest.mark.parametrize("name", FIXED_FAMILIES)
def test_two_stage_fixed_families_leave_4x_spectral_replicas(name):
    image = _tone()
    fake = FAKE_FAMILIES[name](image, np.random.default_rng(0), multi_stage=1.0)
    single = FAKE_FAMILIES[name](image, np.random.default_rng(0), multi_stage=0.0)
    assert not np.array_equal(fake, single)
    assert _replica_energy(fake, X4_BINS) > 100 * _replica_energy(image, X4_BINS)


@pytest.mark.parametrize("name", LEARNED_FAMILIES)
def test_learned_families_leave_4x_spectral_replicas(name):
    for seed in range(3):
        image = _tone(seed=seed)
        fake = FAKE_FAMILIES[name](image, np.random.default_rng(seed))
        assert _replica_energy(fake, X4_BINS) > 100 * _replica_energy(image, X4_BINS)


@pytest.mark.parametrize("name", LEARNED_FAMILIES)
def test_learned_strength_zero_returns_the_input(name):
    image = _photo()
    out = FAKE_FAMILIES[name](image, np.random.default_rng(0), strength=0.0)
    np.testing.assert_array_equal(out, image)


def test_shipped_decoder_weights_are_small_and_reconstruct():
    figures = json.loads((decoders.WEIGHTS_DIR / decoders.TRAINING_JSON).read_text())
    for name in LEARNED_FAMILIES:
        path = decoders.weights_path(name)
        assert path.stat().st_size < 1_000_000
        assert figures[name]["psnr_db"] >= 24.0
        assert decoders.load_decoder(name) is decoders.load_decoder(name)


def test_family_registry():
    assert set(FAKE_FAMILIES) == set(FIXED_FAMILIES) | set(LEARNED_FAMILIES)
    assert set(FIXED_FAMILIES) >= {"transposed_conv", "nearest_conv", "bilinear_conv"}


def test_postprocess_with_every_step_off_is_the_identity():
    image = _photo()
    out, steps = postprocess(image, np.random.default_rng(0), FakePostConfig(**NOTHING), True)
    np.testing.assert_array_equal(out, image)
    assert steps == ""


@pytest.mark.parametrize(
    ("switch", "word"), [("p_jpeg", "jpeg="), ("p_resize", "resize="), ("p_noise", "noise=")]
)
def test_postprocess_runs_a_step_with_probability_one(switch, word):
    image = _photo()
    config = FakePostConfig(**{**NOTHING, switch: 1.0})
    out, steps = postprocess(image, np.random.default_rng(1), config, describe=True)
    assert steps.startswith(word) and "+" not in steps
    assert out.dtype == np.uint8
    assert out.shape != image.shape or not np.array_equal(out, image)
    again = postprocess(image, np.random.default_rng(1), config)
    np.testing.assert_array_equal(out, again)


def test_postprocess_resize_changes_the_shape_and_input_side_covers_it():
    config = FakePostConfig(
        **{**NOTHING, "p_resize": 1.0, "p_upscale": 0.0, "resize_down": [0.5, 0.5]}
    )
    out = postprocess(_photo(40, 40), np.random.default_rng(0), config)
    assert out.shape == (20, 20, 3)
    worst = FakePostConfig(p_jpeg=1.0, p_double_jpeg=1.0, p_resize=1.0, p_upscale=0.0)
    side = worst.input_side(16)
    for seed in range(4):
        image = np.ascontiguousarray(np.resize(_photo(), (side, side, 3)))
        assert min(postprocess(image, np.random.default_rng(seed), worst).shape[:2]) >= 16


def _highpass_energy(image: np.ndarray) -> float:
    """Energy of the luma minus its Gaussian blur (sigma 1): the fine-detail band."""
    import cv2

    luma = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return float(np.mean((luma - cv2.GaussianBlur(luma, (0, 0), 1.0)) ** 2))


@pytest.mark.parametrize("name", LEARNED_FAMILIES)
def test_learned_fakes_are_not_simply_blurrier_than_their_input(name):
    """Sharpening brings them near the input's sharpness (blur must not be the cue).

    The transposed-conv decoder is the blurriest (its bare decodings keep 0.35 of the input's
    fine-detail energy) and stops at the sharpening cap, a little below the others.
    """
    image = _photo(64, 64)
    ratios = [
        _highpass_energy(FAKE_FAMILIES[name](image, np.random.default_rng(seed)))
        / _highpass_energy(image)
        for seed in range(4)
    ]
    assert 0.5 < np.mean(ratios) < 1.35


@pytest.mark.parametrize("upsampler", sorted(set(decoders.UPSAMPLERS.values())))
def test_autoencoder_maps_a_multiple_of_4_to_the_same_shape(upsampler):
    model = decoders.TinyAutoencoder(upsampler)
    assert model.encoder(torch.zeros(1, 3, 24, 32)).shape == (1, decoders.LATENT_CHANNELS, 6, 8)
    assert model(torch.zeros(2, 3, 24, 32)).shape == (2, 3, 24, 32)
    with pytest.raises(ValueError, match="upsampler"):
        decoders.TinyAutoencoder("bicubic")


def test_decoder_training_runs_and_is_seeded():
    a, figures = decoders.train_decoder("ae_resize_conv", steps=2, batch=2, side=16, pool=4)
    b, _ = decoders.train_decoder("ae_resize_conv", steps=2, batch=2, side=16, pool=4)
    assert figures["steps"] == 2 and figures["params"] > 0
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key])


@pytest.mark.parametrize("name", FIXED_FAMILIES)
def test_fixed_families_can_match_the_input_sharpness(name):
    image = _photo(64, 64)
    fake = FAKE_FAMILIES[name](image, np.random.default_rng(0), sharpness=(1.0, 1.0))
    bare = FAKE_FAMILIES[name](image, np.random.default_rng(0), sharpness=(0.0, 0.0))
    ratio = _highpass_energy(fake) / _highpass_energy(image)
    bare_ratio = _highpass_energy(bare) / _highpass_energy(image)
    # Sharpened with its own detail up to the input's level, or as far as the cap allows when
    # the /2 latent lost most of it (this test photo is mostly fine detail).
    assert ratio > min(0.8, 5 * bare_ratio) and ratio >= bare_ratio - 1e-3
