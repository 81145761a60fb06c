"""Fake families: AutoGAN-style fixed-kernel upsamplers, learned decoders, and post-processing.

Two kinds of family, both with the signature ``family(image, rng, strength=1.0) -> fake``
(:class:`FakeFamily`), an HxWx3 uint8 image in and a same-shape uint8 fake out:

* **Fixed-kernel families** (Zhang, Karaman & Chang, "Detecting and Simulating Artifacts in GAN
  Fake Images", 2019): downsample by two, then upsample by two through a generator-like path
  (transposed convolution, resize-convolution, sub-pixel convolution) with random hand-drawn
  kernels. Sometimes (:data:`MULTI_STAGE_P`) the latent is four times smaller and two such 2x
  stages, each with its own kernels, bring it back, as in a multi-block generator.
* **Learned families** (:data:`LEARNED_FAMILIES`): the image goes through one of the small conv
  autoencoders of :mod:`deepfakenet.data.decoders` (encoder /4, decoder x4 by transposed conv,
  nearest-upsample + conv, or pixel shuffle), like a latent-diffusion VAE round trip. Learned
  filters leave subtler traces than hand-drawn ones; a detector trained on the fixed families
  alone scored AUROC 0.61 / 0.85 on them.

After generation the data set writer calls :func:`postprocess` (JPEG, resize, noise, each with
a probability in :class:`FakePostConfig`), so that the editing traces the real class gets from
:func:`deepfakenet.data.camera.simulate_camera` appear on fakes too and are no label cue.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol, overload

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from deepfakenet.data.camera import (
    RESIZE_KERNELS,
    _check_image,
    _normalise_config,
    _to_uint8,
    draw_resize,
    edited_input_side,
    jpeg_compress,
    resize,
)

PHASE_GAIN_SPREAD = 0.02
"""Largest relative gain offset between the 2x2 sub-pixel phases (at ``strength=1``)."""
DETAIL_SKIP = (0.0, 0.8)
"""Range of the fraction of the input's fine detail a fake keeps (see ``_resynthesise``)."""
MULTI_STAGE_P = 0.25
"""Probability that a fixed-kernel fake is made from a /4 latent by two 2x stages."""
LEARNED_SHARPNESS = (0.7, 1.2)
"""Range of a fake's high-frequency energy relative to its input's.

Bare decodings and upsamplings are blurrier than any real (measured mean high-frequency energy
of the bare decodings at 0.35 / 0.70 / 0.38 of the input's for transposed / resize-conv /
pixel-shuffle, 0.30-0.44 for the fixed families), so "blurry means fake" would be a cheap, wrong
cue. Each fake instead draws a target sharpness here and is sharpened to it (``_sharpen_to``):
with its *own* high frequencies, the way a generator's last layers sharpen, never with the true
detail of the photo it was made from, which no generator has and which would bury the trace.
"""
FAKE_SHARPNESS: tuple[float, float] | None = LEARNED_SHARPNESS
"""The fixed families' target sharpness by default: the same as the learned ones."""
MAX_DETAIL_SKIP = 4.0
"""Upper bound of the solved sharpening amount (keeps a flat decoding from exploding)."""
_HIGHPASS_SIGMA = 1.0


class FakeFamily(Protocol):
    """Signature of a fake family: ``(image, rng, strength=1.0) -> fake of the same shape``.

    Callable as ``family(image, rng)``, i.e. it is also a
    ``Callable[[np.ndarray, np.random.Generator], np.ndarray]``.
    """

    def __call__(
        self, image: np.ndarray, rng: np.random.Generator, strength: float = 1.0
    ) -> np.ndarray:
        """Re-synthesise an HxWx3 uint8 ``image``; ``strength`` scales the artifacts."""
        ...


Upsampler = Callable[[torch.Tensor], torch.Tensor]
"""A 2x upsampler of 1x3xhxw float tensors (one generator block)."""


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def _gaussian_kernel(
    rng: np.random.Generator,
    size: int,
    sigma_range: tuple[float, float],
    center: tuple[float, float] | None = None,
    noise: float = 0.0,
) -> np.ndarray:
    """A random smooth ``size x size`` kernel: a rotated anisotropic Gaussian plus small noise.

    Stands in for a learned smooth filter: random widths, orientation and a little
    non-smooth noise, so no two images share the same kernel. Normalised to sum to one.
    """
    mid = (size - 1) / 2.0
    cy, cx = (mid, mid) if center is None else center
    sigma_y, sigma_x = rng.uniform(*sigma_range, size=2)
    theta = rng.uniform(0.0, math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dy, dx = yy - cy, xx - cx
    u = math.cos(theta) * dx + math.sin(theta) * dy
    v = -math.sin(theta) * dx + math.cos(theta) * dy
    kernel = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    kernel /= kernel.sum()
    if noise > 0.0:
        kernel = kernel + noise * kernel.max() * rng.normal(size=kernel.shape)
    return kernel / kernel.sum()


def _phase_gains(rng: np.random.Generator, strength: float, spread: float) -> np.ndarray:
    """Four zero-mean random gain offsets (one per 2x2 sub-pixel phase), shape (2, 2).

    Unequal phase gains are what make a flat input come out as a period-2 checkerboard after a
    stride-2 transposed convolution or a pixel shuffle. The offsets are zero-mean so the overall
    brightness (a trivial cue) is unchanged; a minimum size keeps the trace from vanishing.
    """
    mags = rng.uniform(0.5, 1.0, size=4) * spread * strength
    signs = rng.permutation(np.array([1.0, 1.0, -1.0, -1.0]))
    gains = mags * signs
    gains -= gains.mean()
    return gains.reshape(2, 2)


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 1x3xHxW float32 in [0, 1]."""
    return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)[None].float() / 255.0


def _to_image(x: torch.Tensor, height: int, width: int) -> np.ndarray:
    """1x3xHxW float in [0, 1] -> top-left ``height x width`` HxWx3 uint8."""
    out = x[0, :, :height, :width].permute(1, 2, 0).mul(255.0).clamp_(0.0, 255.0)
    return np.rint(out.numpy()).astype(np.uint8)


def _depthwise(x: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """Same-size depthwise conv of a 1x3xHxW tensor with one kernel (edge-replicate padding)."""
    pad = kernel.shape[0] // 2
    weight = torch.from_numpy(kernel.astype(np.float32))[None, None].repeat(3, 1, 1, 1)
    x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    return F.conv2d(x, weight, groups=3)


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Run torch single-threaded and restore the setting (measured 3.5x faster on crops)."""
    threads = torch.get_num_threads()
    if threads != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads != 1:
            torch.set_num_threads(threads)


def _downsample(padded: np.ndarray, factor: int) -> np.ndarray:
    """Lanczos-antialiased downsample by an integer factor (sides divisible by it)."""
    pil = Image.fromarray(padded)
    size = (pil.width // factor, pil.height // factor)
    return np.array(pil.resize(size, Image.Resampling.LANCZOS))


@functools.cache
def _gaussian_weight(sigma: float) -> torch.Tensor:
    """1x1xKxK normalised Gaussian kernel (K = 2 * ceil(3 sigma) + 1) for high-pass filtering."""
    radius = math.ceil(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = torch.outer(g, g)
    return (kernel / kernel.sum())[None, None]


def _highpass(x: torch.Tensor) -> torch.Tensor:
    """Luma minus its Gaussian blur (sigma 1): the band where upsampling traces and blur show."""
    luma = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    weight = _gaussian_weight(_HIGHPASS_SIGMA)
    pad = weight.shape[-1] // 2
    return luma - F.conv2d(F.pad(luma, (pad, pad, pad, pad), mode="replicate"), weight)


def _own_detail(x: torch.Tensor) -> torch.Tensor:
    """``x`` minus its Gaussian blur (sigma 1), per channel: the image's own fine detail."""
    weight = _gaussian_weight(_HIGHPASS_SIGMA).repeat(x.shape[1], 1, 1, 1)
    pad = weight.shape[-1] // 2
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    return x - F.conv2d(padded, weight, groups=x.shape[1])


def _sharpen_to(out: torch.Tensor, x: torch.Tensor, ratio: float) -> torch.Tensor:
    """Unsharp-mask ``out`` until its high-frequency energy is ``ratio`` times that of ``x``."""
    detail = _own_detail(out)
    amount = _solve_skip(out, detail, ratio * float(_highpass(x).pow(2).sum()))
    return out + amount * detail


def _solve_skip(decoded: torch.Tensor, detail: torch.Tensor, target: float) -> float:
    """The skip ``s`` in [0, MAX_DETAIL_SKIP] giving ``decoded + s * detail`` HF energy ``target``.

    The energy is quadratic in ``s``: ``a + 2 b s + c s^2``; take the larger root, or 0 when the
    decoding alone is already sharper than the target (no root in range).
    """
    hy, hd = _highpass(decoded), _highpass(detail)
    a, b, c = float((hy * hy).sum()), float((hy * hd).sum()), float((hd * hd).sum())
    disc = b * b - c * (a - target)
    if c <= 0.0 or disc < 0.0:
        return 0.0
    return float(min(max((-b + math.sqrt(disc)) / c, 0.0), MAX_DETAIL_SKIP))


def _resynthesise(
    image: np.ndarray,
    rng: np.random.Generator,
    upsample: Upsampler,
    make_stage: Callable[[], Upsampler] | None = None,
    multi_stage: float = 0.0,
    sharpness: tuple[float, float] | None = FAKE_SHARPNESS,
) -> np.ndarray:
    """Shared AutoGAN-style frame: down, generator-like up, sharpening, uint8.

    1. Odd sides are edge-padded and the image is downsampled with Lanczos antialiasing (the
       "latent" a generator would have to upsample): by 2, or, with probability
       ``multi_stage``, by 4.
    2. ``upsample`` (the family) maps the latent 2x up; for a /4 latent a second block made by
       ``make_stage`` (new random kernels, like a second generator layer) follows.
    3. With ``sharpness`` (the default), the fake is sharpened with its own fine detail until
       its high-frequency energy is a random ``sharpness`` multiple of the input's (see
       ``LEARNED_SHARPNESS``). With ``sharpness=None``, the original recipe: a random fraction
       ``DETAIL_SKIP`` of the input's true fine detail is added back (U-Net-like skips), which
       leaves the fakes at 0.33-0.44 of the input's high-frequency energy (0.20-0.31 for two
       stages): blur then separates the classes as much as the trace does.
    4. The result is cropped to the input shape, clipped and rounded to uint8.

    The random draws happen in the order of the original two-stage-free version (family
    kernels, then the skip), and the multi-stage draw comes last, so a single-stage fake is
    byte-identical to what the earlier ``synth`` families made from the same generator state.
    """
    skip = float(rng.uniform(*(DETAIL_SKIP if sharpness is None else sharpness)))
    stages = [upsample]
    if multi_stage > 0.0 and make_stage is not None and rng.random() < multi_stage:
        stages.append(make_stage())
    factor = 2 ** len(stages)
    height, width = image.shape[:2]
    padded = np.pad(image, ((0, -height % factor), (0, -width % factor), (0, 0)), mode="edge")
    low = _to_tensor(_downsample(padded, factor))
    with _single_thread():
        out = low
        for stage in stages:
            out = stage(out)
        if sharpness is not None:  # ``skip`` is the target sharpness ratio
            out = _sharpen_to(out, _to_tensor(padded), skip)
        elif skip > 0.0:
            x = _to_tensor(padded)
            clean = F.interpolate(low, scale_factor=factor, mode="bicubic", align_corners=False)
            out = out + skip * (x - clean)
    return _to_image(out, height, width)


# --------------------------------------------------------------------------------------------
# Fixed-kernel families: one random generator block each
# --------------------------------------------------------------------------------------------


def _transposed_block(rng: np.random.Generator, strength: float) -> Upsampler:
    """A random stride-2 transposed convolution with mismatched polyphase gains."""
    size = int(rng.choice([3, 4]))
    sigma = (0.6, 1.0) if size == 3 else (0.75, 1.2)
    kernel = _gaussian_kernel(rng, size, sigma, noise=0.05 * strength)
    gains = 1.0 + _phase_gains(rng, strength, spread=PHASE_GAIN_SPREAD)
    for p in range(2):
        for q in range(2):
            part = kernel[p::2, q::2]
            kernel[p::2, q::2] = part * (gains[p, q] / part.sum())
    weight = torch.from_numpy(kernel.astype(np.float32))[None, None].repeat(3, 1, 1, 1)
    # Input pixel m (padded index m+1) lands centred on output 2m + 2 + (size-1)/2; cropping
    # there aligns it with 2m + 0.5, where a half-pixel-correct 2x upsampler puts it.
    offset = math.floor(1.5 + (size - 1) / 2.0)

    def upsample(low: torch.Tensor) -> torch.Tensor:
        out_h, out_w = 2 * low.shape[2], 2 * low.shape[3]
        y = F.conv_transpose2d(
            F.pad(low, (1, 1, 1, 1), mode="replicate"), weight, stride=2, groups=3
        )
        return y[:, :, offset : offset + out_h, offset : offset + out_w]

    return upsample


def _nearest_block(rng: np.random.Generator, strength: float) -> Upsampler:
    """Nearest-neighbour 2x followed by a random narrow smoothing kernel."""
    size = int(rng.choice([3, 5]))
    widen = 1.0 / max(strength, 1e-3) ** 0.5
    kernel = _gaussian_kernel(rng, size, (0.45 * widen, 0.8 * widen), noise=0.05 * strength)

    def upsample(low: torch.Tensor) -> torch.Tensor:
        return _depthwise(F.interpolate(low, scale_factor=2, mode="nearest"), kernel)

    return upsample


def _bilinear_block(rng: np.random.Generator, strength: float) -> Upsampler:
    """Bilinear 2x followed by a random (often sharpening) 3x3 kernel."""
    identity = np.zeros((3, 3))
    identity[1, 1] = 1.0
    blur = _gaussian_kernel(rng, 3, (0.5, 1.0))
    amount = float(rng.uniform(0.3, 1.2)) * strength
    kernel = identity + amount * (identity - blur)
    kernel = kernel + 0.03 * strength * rng.normal(size=kernel.shape)
    kernel /= kernel.sum()

    def upsample(low: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False)
        return _depthwise(up, kernel)

    return upsample


def _pixel_shuffle_block(rng: np.random.Generator, strength: float) -> Upsampler:
    """Four random sub-pixel-offset kernels with mismatched gains, interleaved by pixel shuffle."""
    gains = 1.0 + _phase_gains(rng, strength, spread=PHASE_GAIN_SPREAD)
    phases = []
    for p in range(2):
        for q in range(2):
            center = (1.0 + (p - 0.5) / 2.0, 1.0 + (q - 0.5) / 2.0)
            kernel = _gaussian_kernel(rng, 3, (0.35, 0.8), center=center, noise=0.05 * strength)
            phases.append(kernel * gains[p, q])
    # pixel_shuffle reads, for colour c, channels 4c..4c+3 as phases (0,0), (0,1), (1,0), (1,1).
    weight = torch.from_numpy(np.stack(phases).astype(np.float32))[:, None].repeat(3, 1, 1, 1)

    def upsample(low: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(F.pad(low, (1, 1, 1, 1), mode="replicate"), weight, groups=3)
        return F.pixel_shuffle(y, 2)

    return upsample


def transposed_conv(
    image: np.ndarray,
    rng: np.random.Generator,
    strength: float = 1.0,
    multi_stage: float = MULTI_STAGE_P,
    sharpness: tuple[float, float] | None = FAKE_SHARPNESS,
) -> np.ndarray:
    """Fake family: stride-2 transposed convolution ("deconvolution") upsampling.

    A random smooth 3x3 or 4x4 kernel is split into its four polyphase parts (the taps that feed
    even/odd output rows and columns); each part is renormalised to a slightly different gain.
    This is the uneven-overlap checkerboard of Odena et al. (2016) that real deconvolution
    generators leave: a period-2 pattern and spectral peaks at the Nyquist frequency.

    Args:
        image: HxWx3 uint8 image.
        rng: Random generator for the kernel and phase gains.
        strength: Artifact strength (phase-gain mismatch and kernel noise scale with it).
        multi_stage: Probability of a /4 latent and two 2x stages (0 gives the original
            single-stage family exactly).
        sharpness: A range (default :data:`FAKE_SHARPNESS`): the fake is sharpened with its
            own detail to a random multiple of the input's high-frequency energy (see
            ``_resynthesise``); None keeps the original random skip of the input's detail.

    Returns:
        The fake, same shape and dtype as ``image``.
    """
    block = _transposed_block(rng, strength)
    stage = functools.partial(_transposed_block, rng, strength)
    return _resynthesise(image, rng, block, stage, multi_stage, sharpness)


def nearest_conv(
    image: np.ndarray,
    rng: np.random.Generator,
    strength: float = 1.0,
    multi_stage: float = MULTI_STAGE_P,
    sharpness: tuple[float, float] | None = FAKE_SHARPNESS,
) -> np.ndarray:
    """Fake family: nearest-neighbour 2x upsampling followed by a random smooth convolution.

    The "resize-convolution" generator block. The smoothing kernel is narrow enough
    (``sigma`` shrinks as ``strength`` grows) that the 2x2 blocks of the nearest-neighbour step
    are not fully removed: a texture-dependent period-2 trace.

    Args:
        image: HxWx3 uint8 image.
        rng: Random generator for the kernel.
        strength: Artifact strength (narrower kernels and more kernel noise when larger).
        multi_stage: Probability of a /4 latent and two 2x stages.
        sharpness: A range (default :data:`FAKE_SHARPNESS`): the fake is sharpened with its
            own detail to a random multiple of the input's high-frequency energy; None keeps
            the original random skip of the input's detail (fakes blurrier than reals).

    Returns:
        The fake, same shape and dtype as ``image``.
    """
    block = _nearest_block(rng, strength)
    stage = functools.partial(_nearest_block, rng, strength)
    return _resynthesise(image, rng, block, stage, multi_stage, sharpness)


def bilinear_conv(
    image: np.ndarray,
    rng: np.random.Generator,
    strength: float = 1.0,
    multi_stage: float = MULTI_STAGE_P,
    sharpness: tuple[float, float] | None = FAKE_SHARPNESS,
) -> np.ndarray:
    """Fake family: bilinear 2x upsampling followed by a random (often sharpening) convolution.

    A learned convolution after a fixed upsampler tends to sharpen, restoring some of the detail
    the interpolation removed, and in doing so amplifies the interpolation's spectral replicas.

    Args:
        image: HxWx3 uint8 image.
        rng: Random generator for the kernel.
        strength: Artifact strength (sharpening amount and kernel noise scale with it).
        multi_stage: Probability of a /4 latent and two 2x stages.
        sharpness: A range (default :data:`FAKE_SHARPNESS`): the fake is sharpened with its
            own detail to a random multiple of the input's high-frequency energy; None keeps
            the original random skip of the input's detail (fakes blurrier than reals).

    Returns:
        The fake, same shape and dtype as ``image``.
    """
    block = _bilinear_block(rng, strength)
    stage = functools.partial(_bilinear_block, rng, strength)
    return _resynthesise(image, rng, block, stage, multi_stage, sharpness)


def pixel_shuffle(
    image: np.ndarray,
    rng: np.random.Generator,
    strength: float = 1.0,
    multi_stage: float = MULTI_STAGE_P,
    sharpness: tuple[float, float] | None = FAKE_SHARPNESS,
) -> np.ndarray:
    """Fake family: sub-pixel convolution (ESPCN-style ``conv -> pixel_shuffle``).

    Four independent random smooth 3x3 kernels, each centred on its own sub-pixel offset
    (+-1/4 pixel), compute the four output phases, which are then interleaved with
    ``pixel_shuffle``. Independent widths and slightly different gains per phase give the
    period-2 trace of untied sub-pixel convolutions.

    Args:
        image: HxWx3 uint8 image.
        rng: Random generator for the kernels and phase gains.
        strength: Artifact strength (phase-gain mismatch and kernel noise scale with it).
        multi_stage: Probability of a /4 latent and two 2x stages.
        sharpness: A range (default :data:`FAKE_SHARPNESS`): the fake is sharpened with its
            own detail to a random multiple of the input's high-frequency energy; None keeps
            the original random skip of the input's detail (fakes blurrier than reals).

    Returns:
        The fake, same shape and dtype as ``image``.
    """
    block = _pixel_shuffle_block(rng, strength)
    stage = functools.partial(_pixel_shuffle_block, rng, strength)
    return _resynthesise(image, rng, block, stage, multi_stage, sharpness)


# --------------------------------------------------------------------------------------------
# Learned families: autoencoder round trips through a /4 latent
# --------------------------------------------------------------------------------------------


def _autoencode(
    image: np.ndarray, rng: np.random.Generator, name: str, strength: float
) -> np.ndarray:
    """Encode and decode ``image`` with learned autoencoder ``name``; shared frame of the family.

    1. The image is reflect-padded by a random 0-3 pixels at the top and left (so the decoder's
       period-4 grid does not always sit at the image origin) and to a multiple of 4 at the
       bottom and right.
    2. The autoencoder reconstructs it through its /4 latent (weights loaded once per process).
    3. The decoding is sharpened with its own fine detail (``_sharpen_to``) until its
       high-frequency energy is a random ``LEARNED_SHARPNESS`` multiple of the input's: a
       decoding blurrier than any real is a cheap shortcut, and sharpening amplifies the
       decoder's trace instead of burying it under the photo's true detail.
    4. ``strength`` blends between the input (0) and that fake (1): smaller is harder.
    """
    from deepfakenet.data.decoders import FACTOR, load_decoder

    height, width = image.shape[:2]
    top, left = (int(v) for v in rng.integers(0, FACTOR, size=2))
    sharpness = float(rng.uniform(*LEARNED_SHARPNESS))
    bottom = -(height + top) % FACTOR
    right = -(width + left) % FACTOR
    mode = "reflect" if min(height, width) > FACTOR else "edge"
    padded = np.pad(image, ((top, bottom), (left, right), (0, 0)), mode=mode)
    x = _to_tensor(padded)
    model = load_decoder(name)
    with _single_thread(), torch.no_grad():
        out = _sharpen_to(model(x), x, sharpness)
        if strength != 1.0:
            out = x + strength * (out - x)
    return _to_image(out[:, :, top:, left:], height, width)


def ae_transposed(image: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Learned family: autoencoder whose decoder upsamples x4 by two transposed convolutions.

    Args:
        image: HxWx3 uint8 image.
        rng: Random generator (grid offset and target sharpness).
        strength: Blend from the input (0) to the full decoding (1).

    Returns:
        The fake, same shape and dtype as ``image``.
    """
    return _autoencode(image, rng, "ae_transposed", strength)


def ae_resize_conv(
    image: np.ndarray, rng: np.random.Generator, strength: float = 1.0
) -> np.ndarray:
    """Learned family: autoencoder whose decoder upsamples by nearest 2x + conv, twice.

    The block of latent-diffusion VAE decoders.

    Args:
        image: HxWx3 uint8 image.
        rng: Random generator (grid offset and target sharpness).
        strength: Blend from the input (0) to the full decoding (1).

    Returns:
        The fake, same shape and dtype as ``image``.
    """
    return _autoencode(image, rng, "ae_resize_conv", strength)


def ae_pixel_shuffle(
    image: np.ndarray, rng: np.random.Generator, strength: float = 1.0
) -> np.ndarray:
    """Learned family: autoencoder whose decoder upsamples by conv + pixel shuffle, twice.

    Args:
        image: HxWx3 uint8 image.
        rng: Random generator (grid offset and target sharpness).
        strength: Blend from the input (0) to the full decoding (1).

    Returns:
        The fake, same shape and dtype as ``image``.
    """
    return _autoencode(image, rng, "ae_pixel_shuffle", strength)


FIXED_FAMILIES: tuple[str, ...] = (
    "transposed_conv",
    "nearest_conv",
    "bilinear_conv",
    "pixel_shuffle",
)
"""The hand-drawn-kernel (AutoGAN-style) families."""
LEARNED_FAMILIES: tuple[str, ...] = ("ae_transposed", "ae_resize_conv", "ae_pixel_shuffle")
"""The trained-autoencoder families (weights in ``decoder_weights/``)."""

FAKE_FAMILIES: dict[str, FakeFamily] = {
    "transposed_conv": transposed_conv,
    "nearest_conv": nearest_conv,
    "bilinear_conv": bilinear_conv,
    "pixel_shuffle": pixel_shuffle,
    "ae_transposed": ae_transposed,
    "ae_resize_conv": ae_resize_conv,
    "ae_pixel_shuffle": ae_pixel_shuffle,
}
"""Fake family name -> ``fn(image, rng, strength=1.0)`` returning a same-shape uint8 fake."""


# --------------------------------------------------------------------------------------------
# Post-processing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakePostConfig:
    """Probabilities and ranges of :func:`postprocess` (plain floats/lists for Hydra).

    The defaults mirror how often the data set's reals get each editing trace (the writer puts
    half of the reals through :class:`~deepfakenet.data.camera.CameraConfig`'s defaults:
    JPEG 0.5 x 0.7, double JPEG x 0.3, resize 0.5 x 0.3, sensor noise 0.5 x 0.8 x 0.5), so that
    none of JPEG, resizing or noise tells the classes apart. Change them together.

    Attributes:
        p_jpeg: JPEG compression.
        jpeg_quality: Range of the JPEG quality.
        jpeg_subsampling: Chroma subsamplings to draw from (0 4:4:4, 1 4:2:2, 2 4:2:0).
        p_double_jpeg: Given a JPEG, crop 0..``max_grid_offset`` pixels at the top/left and
            compress again (a re-uploaded fake).
        jpeg_quality_second: Range of the second JPEG's quality.
        max_grid_offset: Largest crop before the second JPEG, in pixels.
        p_resize: A resize before compression.
        resize_kernels: Kernels to draw from (keys of ``RESIZE_KERNELS``).
        resize_down: Range of a downscale factor.
        p_upscale: Given a resize, the probability that it enlarges instead.
        resize_up: Range of an upscale factor.
        p_noise: Additive Gaussian noise (before compression).
        noise_sigma: Range of its standard deviation, in 8-bit units.
    """

    p_jpeg: float = 0.35
    jpeg_quality: tuple[float, float] = (65.0, 98.0)
    jpeg_subsampling: tuple[int, ...] = (0, 1, 2)
    p_double_jpeg: float = 0.3
    jpeg_quality_second: tuple[float, float] = (65.0, 95.0)
    max_grid_offset: int = 7
    p_resize: float = 0.15
    resize_kernels: tuple[str, ...] = tuple(RESIZE_KERNELS)
    resize_down: tuple[float, float] = (0.5, 0.95)
    p_upscale: float = 0.2
    resize_up: tuple[float, float] = (1.05, 1.5)
    p_noise: float = 0.2
    noise_sigma: tuple[float, float] = (0.5, 3.0)

    def __post_init__(self) -> None:
        _normalise_config(self)
        unknown = set(self.resize_kernels) - set(RESIZE_KERNELS)
        if unknown:
            raise ValueError(f"unknown resize kernels {sorted(unknown)}")

    def input_side(self, side: int) -> int:
        """Smallest input side whose output is at least ``side`` whatever the draws."""
        return edited_input_side(self, side)


@overload
def postprocess(
    image: np.ndarray,
    rng: np.random.Generator,
    config: FakePostConfig | None = ...,
    describe: Literal[False] = ...,
) -> np.ndarray: ...
@overload
def postprocess(
    image: np.ndarray,
    rng: np.random.Generator,
    config: FakePostConfig | None = ...,
    *,
    describe: Literal[True],
) -> tuple[np.ndarray, str]: ...
def postprocess(
    image: np.ndarray,
    rng: np.random.Generator,
    config: FakePostConfig | None = None,
    describe: bool = False,
) -> np.ndarray | tuple[np.ndarray, str]:
    """Edit a generated fake the way fakes are shared: resize, noise, JPEG (maybe twice).

    Order: resize (random kernel and factor), additive Gaussian noise, JPEG (random quality
    and chroma subsampling), then optionally a crop of a few pixels and a second JPEG. Each step
    runs with its probability from ``config``; every draw comes from ``rng``.

    Shape: unchanged unless the resize or the crop before a second JPEG runs. Callers that
    need a fixed size start from :meth:`FakePostConfig.input_side` pixels and crop.

    Args:
        image: HxWx3 uint8 fake.
        rng: Random generator.
        config: Probabilities and ranges; ``None`` uses the defaults.
        describe: Also return a short description of the steps applied (``""`` for none),
            e.g. ``"resize=0.71/lanczos+jpeg=83/2"``, for the data set manifest.

    Returns:
        The edited image (uint8), or ``(image, description)`` when ``describe`` is true.
    """
    config = config or FakePostConfig()
    out = _check_image(image)
    steps: list[str] = []
    if rng.random() < config.p_resize:
        factor, kernel = draw_resize(
            rng, config.resize_kernels, config.resize_down, config.resize_up, config.p_upscale
        )
        out = resize(out, factor, kernel)
        steps.append(f"resize={factor:.2f}/{kernel}")
    if rng.random() < config.p_noise:
        sigma = float(rng.uniform(*config.noise_sigma))
        noisy = out.astype(np.float32) + sigma * rng.standard_normal(out.shape, np.float32)
        out = _to_uint8(noisy)
        steps.append(f"noise={sigma:.1f}")
    if rng.random() < config.p_jpeg:
        quality = round(float(rng.uniform(*config.jpeg_quality)))
        subsampling = int(rng.choice(config.jpeg_subsampling))
        out = jpeg_compress(out, quality, subsampling)
        steps.append(f"jpeg={quality}/{subsampling}")
        if rng.random() < config.p_double_jpeg:
            dy, dx = (int(v) for v in rng.integers(0, config.max_grid_offset + 1, size=2))
            if out.shape[0] > dy and out.shape[1] > dx:
                out = out[dy:, dx:]
            quality = round(float(rng.uniform(*config.jpeg_quality_second)))
            out = jpeg_compress(out, quality, int(rng.choice(config.jpeg_subsampling)))
            steps.append(f"crop={dy},{dx}+jpeg2={quality}")
    out = np.ascontiguousarray(out)
    return (out, "+".join(steps)) if describe else out
