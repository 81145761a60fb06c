"""The embedded default data set: real photo crops and AutoGAN-style fakes, generated offline.

A deepfake detector needs real and fake images, but this project must build, test and train
without downloading anything. The few colour photographs that ship inside installed packages
(scikit-image, matplotlib, scikit-learn) are the real pool; fakes are made from the same photos
the way AutoGAN (Zhang, Karaman & Chang, "Detecting and Simulating Artifacts in GAN Fake
Images", 2019) simulates GAN output without training a GAN: downsample by two, then upsample by
two through a generator-like path (transposed convolution, resize-convolution, sub-pixel
convolution). Those paths leave the period-2 checkerboard / spectral-peak traces real generators
leave, which is what a detector should learn.

The pool is tiny (sixteen photos from four sources), so diversity comes from random crops at
random scales and positions. Both classes are drawn from the same photos with the same crop
procedure, so content, colour and scale are not label cues; only the re-synthesis is.

Layout written by :func:`generate_dataset` (ImageFolder-style, one folder per class)::

    out_dir/real/<source>/<photo>_<index:06d>.png
    out_dir/fake/<family>/<photo>_<index:06d>.png

The second folder level carries the real source / fake family so that an evaluation protocol can
hold out one family or one source purely by path.

Example:
    ``python -m deepfakenet.data.synth --out data --n-real 1500 --n-fake 1500 --seed 0``
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

log = logging.getLogger(__name__)

REAL_LABEL = "real"
FAKE_LABEL = "fake"
_CLASS_IDS = {REAL_LABEL: 0, FAKE_LABEL: 1}
MIN_IMAGE_SIZE = 8
"""Smallest crop side accepted: below this a 2x down/up-sampling has nothing left to work on."""

PHASE_GAIN_SPREAD = 0.02
"""Largest relative gain offset between the 2x2 sub-pixel phases (at ``strength=1``)."""
DETAIL_SKIP = (0.0, 0.8)
"""Range of the fraction of the input's fine detail a fake keeps (see ``_resynthesise``)."""

MANIFEST_COLUMNS = ("path", "label", "source", "family", "photo", "width", "height")


# --------------------------------------------------------------------------------------------
# Real photos
# --------------------------------------------------------------------------------------------


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as a C-contiguous HxWx3 uint8 array (drops alpha, rejects grey)."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 colour photo, got shape {array.shape}")
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {array.dtype}")
    return np.ascontiguousarray(array[:, :, :3])


def _skimage(name: str) -> Callable[[], np.ndarray]:
    """Loader for a photo bundled with scikit-image (only names that need no pooch download)."""

    def load() -> np.ndarray:
        import skimage.data

        return _as_rgb_uint8(getattr(skimage.data, name)())

    return load


def _stereo_motorcycle(view: int) -> Callable[[], np.ndarray]:
    """Loader for one view of scikit-image's stereo pair (two different photographs)."""

    def load() -> np.ndarray:
        import skimage.data

        return _as_rgb_uint8(skimage.data.stereo_motorcycle()[view])

    return load


def _grace_hopper() -> np.ndarray:
    """Load matplotlib's bundled ``grace_hopper.jpg``."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    with Image.open(path) as img:
        return _as_rgb_uint8(np.asarray(img.convert("RGB")))


def _skimage_grey(name: str) -> Callable[[], np.ndarray]:
    """Loader for a greyscale photo bundled with scikit-image, replicated to three channels.

    A black-and-white camera is a genuinely different source: the detector must not learn that
    "colourless" means anything, so these photos join the pool (and fakes are made from them too).
    """

    def load() -> np.ndarray:
        import skimage.data

        grey = np.asarray(getattr(skimage.data, name)())
        if grey.ndim != 2 or grey.dtype != np.uint8:
            raise ValueError(f"expected a 2-D uint8 greyscale photo, got {grey.shape} {grey.dtype}")
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))

    return load


def _sklearn_sample(index: int) -> Callable[[], np.ndarray]:
    """Loader for one of scikit-learn's two bundled sample images (0: china, 1: flower)."""

    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_images

        return _as_rgb_uint8(load_sample_images().images[index])

    return load


REAL_SOURCES: dict[str, dict[str, Callable[[], np.ndarray]]] = {
    "skimage": {
        "astronaut": _skimage("astronaut"),
        "chelsea": _skimage("chelsea"),
        "coffee": _skimage("coffee"),
        "rocket": _skimage("rocket"),
        "motorcycle_left": _stereo_motorcycle(0),
        "motorcycle_right": _stereo_motorcycle(1),
        "hubble_deep_field": _skimage("hubble_deep_field"),
    },
    "matplotlib": {"grace_hopper": _grace_hopper},
    "sklearn": {"china": _sklearn_sample(0), "flower": _sklearn_sample(1)},
    "skimage_grey": {
        "camera": _skimage_grey("camera"),
        "moon": _skimage_grey("moon"),
        "coins": _skimage_grey("coins"),
        "grass": _skimage_grey("grass"),
        "gravel": _skimage_grey("gravel"),
        "brick": _skimage_grey("brick"),
    },
}
"""Source -> photo name -> loader returning an HxWx3 uint8 photo.

Only photographs that ship inside the installed wheels are listed; scikit-image images that are
fetched with pooch on first use (``lily``, ``skin``, ``kidney``, ...) are left out because they
fail offline. Non-photographs (``logo``, ``colorwheel``, ``page``, ``text``) and microscopy /
medical images (``immunohistochemistry``, ``retina``, ``cell``) are left out too, and ``cat``
duplicates ``chelsea``. ``skimage_grey`` holds scikit-image's black-and-white photographs
(replicated to RGB): a fourth source from a different kind of camera, so a leave-one-source-out
protocol has more than one colour pipeline to hold out. Photo names are unique across sources,
which lets :func:`photo_source` map a file name back to its source.
"""


def photo_source(photo: str) -> str | None:
    """The source a photo name belongs to, or None for a name the pool does not know.

    Files written by :func:`generate_dataset` are named ``<photo>_<index>.png`` in both classes,
    so this recovers which source a *fake* was made from (its folder names the family), which a
    leave-one-source-out protocol needs to keep that source's fakes out of training too.
    """
    for source, photos in REAL_SOURCES.items():
        if photo in photos:
            return source
    return None


@functools.cache
def load_photo(source: str, photo: str) -> np.ndarray:
    """Load (once) and return one real photo of the pool.

    Cached because every one of thousands of crops re-reads the same sixteen photos. The returned
    array is made read-only so no caller can corrupt the cache.

    Args:
        source: Key of :data:`REAL_SOURCES`.
        photo: Photo name within that source.

    Returns:
        The photo as an HxWx3 uint8 array (read-only).

    Raises:
        ValueError: If the source or photo is unknown.
    """
    try:
        loader = REAL_SOURCES[source][photo]
    except KeyError:
        raise ValueError(f"unknown photo {source}/{photo}") from None
    image = loader()
    image.setflags(write=False)
    return image


@functools.cache
def _photo_pil(source: str, photo: str) -> Image.Image:
    """PIL view of a cached photo, so resampling does not convert the array on every crop."""
    return Image.fromarray(load_photo(source, photo))


# --------------------------------------------------------------------------------------------
# Random crops (shared by both classes)
# --------------------------------------------------------------------------------------------


def _color_jitter(image: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Apply a light random brightness / contrast / saturation change.

    A few percent only: enough that two crops of the same region are not pixel-identical,
    too little to move the colour statistics of the pool.
    """
    x = image.astype(np.float32)
    brightness, contrast, saturation = rng.uniform(1.0 - amount, 1.0 + amount, size=3)
    x *= brightness
    luma = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (x - luma.mean()) * contrast + luma.mean()
    luma = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (x - luma[..., None]) * saturation + luma[..., None]
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def random_photo_crop(
    source: str,
    photo: str,
    side: int,
    rng: np.random.Generator,
    scale_range: tuple[float, float] = (0.2, 1.0),
    jitter: float = 0.04,
) -> np.ndarray:
    """Draw one square crop of a photo at a random scale and position, like a camera would.

    The whole photo is (conceptually) downscaled by a random factor with Lanczos antialiasing and
    then cropped; PIL's ``resize(box=...)`` computes exactly that region without resampling the
    whole photo. A random horizontal flip and a light colour jitter follow. With a pool of sixteen
    photos, this is where all the diversity of the data set comes from.

    Args:
        source: Key of :data:`REAL_SOURCES`.
        photo: Photo name within that source.
        side: Crop side in pixels (after scaling).
        rng: Random generator; the crop depends on nothing else.
        scale_range: Range of the downscale factor. Raised per crop to the smallest factor that
            still fits ``side``, so small photos are never upscaled (upscaling would add
            interpolation traces to *real* images).
        jitter: Relative amount of brightness / contrast / saturation jitter.

    Returns:
        The crop, ``side x side x 3`` uint8.

    Raises:
        ValueError: If ``side`` does not fit in the photo at full resolution.
    """
    pil = _photo_pil(source, photo)
    width, height = pil.size
    needed = side / min(width, height)
    if needed > 1.0:
        raise ValueError(f"crop side {side} exceeds photo {source}/{photo} ({width}x{height})")
    lo, hi = scale_range
    lo = max(lo, needed)
    scale = float(rng.uniform(lo, hi)) if hi > lo else lo
    scaled_w, scaled_h = width * scale, height * scale
    x0 = float(rng.uniform(0.0, max(scaled_w - side, 0.0)))
    y0 = float(rng.uniform(0.0, max(scaled_h - side, 0.0)))
    box = (x0 / scale, y0 / scale, (x0 + side) / scale, (y0 + side) / scale)
    crop = np.asarray(pil.resize((side, side), Image.Resampling.LANCZOS, box=box))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return _color_jitter(crop, rng, jitter)


# --------------------------------------------------------------------------------------------
# Fake families: 2x downsample, then a generator-like 2x upsampling path
# --------------------------------------------------------------------------------------------


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


def _depthwise(x: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """Same-size depthwise conv of a 1x3xHxW tensor with one kernel (edge-replicate padding)."""
    pad = kernel.shape[0] // 2
    weight = torch.from_numpy(kernel.astype(np.float32))[None, None].repeat(3, 1, 1, 1)
    x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    return F.conv2d(x, weight, groups=3)


def _resynthesise(
    image: np.ndarray,
    rng: np.random.Generator,
    upsample: Callable[[torch.Tensor], torch.Tensor],
) -> np.ndarray:
    """Shared AutoGAN-style frame: 2x down, generator-like 2x up, partial detail skip, uint8.

    1. Odd sides are edge-padded to even and the image is downsampled 2x with Lanczos
       antialiasing (the "latent" a generator would have to upsample).
    2. ``upsample`` (the family) maps the 1x3xhxw half-size tensor to 1x3x2hx2w.
    3. A random fraction ``DETAIL_SKIP`` of the input's true fine detail (the input minus a
       clean bicubic up-down round trip) is added back, like the skip connections of U-Net /
       autoencoder generators that carry detail past the bottleneck. Without it every fake is
       visibly softer than every real and overall blur alone separates the classes; with it,
       sharpness overlaps and the period-2 upsampling traces are what is left to learn.
    4. The result is cropped to the input shape, clipped and rounded to uint8.
    """
    height, width = image.shape[:2]
    padded = np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    pil = Image.fromarray(padded)
    small = np.array(pil.resize((pil.width // 2, pil.height // 2), Image.Resampling.LANCZOS))
    low = _to_tensor(small)
    out = upsample(low)
    skip = float(rng.uniform(*DETAIL_SKIP))
    if skip > 0.0:
        clean = F.interpolate(low, scale_factor=2, mode="bicubic", align_corners=False)
        out = out + skip * (_to_tensor(padded) - clean)
    out = out[0, :, :height, :width].permute(1, 2, 0).mul(255.0).clamp_(0.0, 255.0)
    return np.rint(out.numpy()).astype(np.uint8)


def transposed_conv(
    image: np.ndarray, rng: np.random.Generator, strength: float = 1.0
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

    Returns:
        The fake, same shape and dtype as ``image``.
    """
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

    return _resynthesise(image, rng, upsample)


def nearest_conv(image: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Fake family: nearest-neighbour 2x upsampling followed by a random smooth convolution.

    The "resize-convolution" generator block. The smoothing kernel is narrow enough
    (``sigma`` shrinks as ``strength`` grows) that the 2x2 blocks of the nearest-neighbour step
    are not fully removed: a texture-dependent period-2 trace.

    Args:
        image: HxWx3 uint8 image.
        rng: Random generator for the kernel.
        strength: Artifact strength (narrower kernels and more kernel noise when larger).

    Returns:
        The fake, same shape and dtype as ``image``.
    """
    size = int(rng.choice([3, 5]))
    widen = 1.0 / max(strength, 1e-3) ** 0.5
    kernel = _gaussian_kernel(rng, size, (0.45 * widen, 0.8 * widen), noise=0.05 * strength)

    def upsample(low: torch.Tensor) -> torch.Tensor:
        return _depthwise(F.interpolate(low, scale_factor=2, mode="nearest"), kernel)

    return _resynthesise(image, rng, upsample)


def bilinear_conv(image: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Fake family: bilinear 2x upsampling followed by a random (often sharpening) convolution.

    A learned convolution after a fixed upsampler tends to sharpen, restoring some of the detail
    the interpolation removed, and in doing so amplifies the interpolation's spectral replicas.

    Args:
        image: HxWx3 uint8 image.
        rng: Random generator for the kernel.
        strength: Artifact strength (sharpening amount and kernel noise scale with it).

    Returns:
        The fake, same shape and dtype as ``image``.
    """
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

    return _resynthesise(image, rng, upsample)


def pixel_shuffle(image: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Fake family: sub-pixel convolution (ESPCN-style ``conv -> pixel_shuffle``).

    Four independent random smooth 3x3 kernels, each centred on its own sub-pixel offset
    (+-1/4 pixel), compute the four output phases, which are then interleaved with
    ``pixel_shuffle``. Independent widths and slightly different gains per phase give the
    period-2 trace of untied sub-pixel convolutions.

    Args:
        image: HxWx3 uint8 image.
        rng: Random generator for the kernels and phase gains.
        strength: Artifact strength (phase-gain mismatch and kernel noise scale with it).

    Returns:
        The fake, same shape and dtype as ``image``.
    """
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

    return _resynthesise(image, rng, upsample)


FAKE_FAMILIES: dict[str, FakeFamily] = {
    "transposed_conv": transposed_conv,
    "nearest_conv": nearest_conv,
    "bilinear_conv": bilinear_conv,
    "pixel_shuffle": pixel_shuffle,
}
"""Fake family name -> ``fn(image, rng, strength=1.0)`` returning a same-shape uint8 fake."""


# --------------------------------------------------------------------------------------------
# Data set generation
# --------------------------------------------------------------------------------------------


def _select(requested: Sequence[str] | None, available: Sequence[str], what: str) -> list[str]:
    """Validate a subset of names, keeping the caller's order and dropping duplicates."""
    if requested is None:
        return list(available)
    if isinstance(requested, str):
        requested = [requested]
    chosen = list(dict.fromkeys(requested))
    unknown = [name for name in chosen if name not in available]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; available: {sorted(available)}")
    if not chosen:
        raise ValueError(f"at least one {what} is required")
    return chosen


def _photo_cycle(sources: Sequence[str]) -> list[tuple[str, str]]:
    """All (source, photo) pairs of the selected sources, interleaved source by source.

    Interleaving (``skimage/a, matplotlib/a, sklearn/a, skimage/b, ...``) means any run of
    ``len(sources)`` consecutive images already covers every source, while over a full cycle
    every photo is used equally often.
    """
    lists = [[(source, photo) for photo in REAL_SOURCES[source]] for source in sources]
    cycle: list[tuple[str, str]] = []
    for rank in range(max(len(photos) for photos in lists)):
        cycle.extend(photos[rank] for photos in lists if rank < len(photos))
    return cycle


def _existing_images(out_dir: Path) -> list[Path]:
    """Image files already present in the class folders of ``out_dir``."""
    found: list[Path] = []
    for label in (REAL_LABEL, FAKE_LABEL):
        folder = out_dir / label
        if folder.is_dir():
            found.extend(p for p in folder.rglob("*.png") if p.is_file())
    return found


def _validate(
    n_real: int,
    n_fake: int,
    min_size: int,
    max_size: int,
    scale_range: tuple[float, float],
    strength: float,
    cycle: Sequence[tuple[str, str]],
) -> None:
    """Raise ``ValueError`` on arguments that cannot produce the requested data set."""
    for name, value in (("n_real", n_real), ("n_fake", n_fake)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if n_real + n_fake == 0:
        raise ValueError("n_real + n_fake must be positive")
    if not MIN_IMAGE_SIZE <= min_size <= max_size:
        raise ValueError(
            f"need {MIN_IMAGE_SIZE} <= min_size <= max_size, got min_size={min_size}, "
            f"max_size={max_size}"
        )
    lo, hi = scale_range
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"scale_range must satisfy 0 < low <= high <= 1, got {scale_range}")
    if not strength > 0.0:
        raise ValueError(f"artifact_strength must be positive, got {strength}")
    smallest = min(min(load_photo(s, p).shape[:2]) for s, p in cycle)
    if max_size > smallest:
        raise ValueError(
            f"max_size={max_size} exceeds the short side ({smallest} px) of the smallest "
            "selected photo; real crops are never upscaled"
        )


def _render_one(
    label: str,
    index: int,
    seed: int,
    min_size: int,
    max_size: int,
    scale_range: tuple[float, float],
    strength: float,
    cycle: Sequence[tuple[str, str]],
    families: Sequence[str],
) -> tuple[np.ndarray, str, str, str]:
    """Produce image ``index`` of class ``label``; depends only on its own arguments.

    Returns:
        ``(pixels, source, photo, family)`` with ``family == ""`` for reals.
    """
    rng = np.random.default_rng([seed, _CLASS_IDS[label], index])
    if label == REAL_LABEL:
        source, photo = cycle[index % len(cycle)]
        family = ""
    else:
        # Families cycle fastest; photos advance once per full family cycle so that every
        # family sees every photo (a plain ``index % len(cycle)`` would pair families and
        # photos whenever the two counts share a factor).
        family = families[index % len(families)]
        source, photo = cycle[(index // len(families)) % len(cycle)]
    side = int(rng.integers(min_size, max_size + 1))
    pixels = random_photo_crop(source, photo, side, rng, scale_range)
    if label == FAKE_LABEL:
        pixels = FAKE_FAMILIES[family](pixels, rng, strength=strength)
    return pixels, source, photo, family


def generate_dataset(
    out_dir: str | Path,
    n_real: int,
    n_fake: int,
    min_size: int = 64,
    max_size: int = 128,
    seed: int = 0,
    sources: Sequence[str] | None = None,
    families: Sequence[str] | None = None,
    scale_range: tuple[float, float] = (0.2, 1.0),
    overwrite: bool = False,
    artifact_strength: float = 1.0,
    progress: bool = True,
) -> pd.DataFrame:
    """Write the synthetic real/fake data set as PNG files in an ImageFolder-style tree.

    Every image ``i`` of a class draws from its own ``np.random.default_rng([seed, class_id,
    i])``, so the output does not depend on generation order or worker count, and the same
    arguments give byte-identical files. Reals cycle through the photos of the selected sources
    (interleaved by source); fakes cycle through the selected families and, per family cycle,
    through the photos. Files are lossless PNG for both classes: compression and other
    augmentations belong to the training pipeline, applied to both classes alike.

    Args:
        out_dir: Root folder; ``real/<source>/`` and ``fake/<family>/`` are created below it.
        n_real: Number of real crops.
        n_fake: Number of fake images.
        min_size: Smallest square side, in pixels.
        max_size: Largest square side, in pixels (at most the smallest photo's short side).
        seed: Base seed.
        sources: Subset of :data:`REAL_SOURCES` to draw photos from; ``None`` means all.
            Fakes are made from the same photos.
        families: Subset of :data:`FAKE_FAMILIES`; ``None`` means all.
        scale_range: Range of the random downscale factor applied to a photo before cropping.
        overwrite: Delete PNG files already in ``out_dir/real`` and ``out_dir/fake`` instead of
            refusing to run.
        artifact_strength: Multiplier for the strength of the upsampling artifacts (1.0 is the
            default tuning; smaller makes the task harder).
        progress: Show a progress bar.

    Returns:
        One row per written file with columns ``path`` (POSIX, relative to ``out_dir``),
        ``label`` (``"real"``/``"fake"``), ``source``, ``family`` (``""`` for reals), ``photo``,
        ``width`` and ``height``; reals first, each class in index order.

    Raises:
        ValueError: On an unknown source or family, bad counts, sizes, scale range or strength.
        FileExistsError: If ``out_dir`` already holds images and ``overwrite`` is false.
    """
    out_dir = Path(out_dir)
    chosen_sources = _select(sources, list(REAL_SOURCES), "source")
    chosen_families = _select(families, list(FAKE_FAMILIES), "family")
    cycle = _photo_cycle(chosen_sources)
    _validate(n_real, n_fake, min_size, max_size, scale_range, artifact_strength, cycle)

    existing = _existing_images(out_dir)
    if existing:
        if not overwrite:
            raise FileExistsError(
                f"{out_dir} already contains {len(existing)} images; pass overwrite=True "
                "(--overwrite) to replace them"
            )
        log.info("Removing %d existing images from %s", len(existing), out_dir)
        for path in existing:
            path.unlink()

    log.info(
        "Generating %d real + %d fake images (%d-%d px, seed %d) in %s; sources=%s families=%s",
        n_real,
        n_fake,
        min_size,
        max_size,
        seed,
        out_dir,
        chosen_sources,
        chosen_families,
    )
    jobs = [(REAL_LABEL, i) for i in range(n_real)] + [(FAKE_LABEL, i) for i in range(n_fake)]
    rows: list[dict[str, object]] = []
    made_dirs: set[Path] = set()
    start = time.perf_counter()
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    # Intra-op threads only add synchronisation overhead on images this small (measured: 3.5x
    # slower with 2 threads than with 1), so run single-threaded and restore the setting after.
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with Progress(*columns, disable=not progress, transient=True) as bar:
            task = bar.add_task("synthesising", total=len(jobs))
            for label, index in jobs:
                pixels, source, photo, family = _render_one(
                    label,
                    index,
                    seed,
                    min_size,
                    max_size,
                    scale_range,
                    artifact_strength,
                    cycle,
                    chosen_families,
                )
                group = source if label == REAL_LABEL else family
                relative = Path(label) / group / f"{photo}_{index:06d}.png"
                target = out_dir / relative
                if target.parent not in made_dirs:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    made_dirs.add(target.parent)
                Image.fromarray(pixels).save(target, format="PNG")
                rows.append(
                    {
                        "path": relative.as_posix(),
                        "label": label,
                        "source": source,
                        "family": family,
                        "photo": photo,
                        "width": int(pixels.shape[1]),
                        "height": int(pixels.shape[0]),
                    }
                )
                bar.advance(task)
    finally:
        torch.set_num_threads(torch_threads)
    elapsed = time.perf_counter() - start
    log.info("Wrote %d images to %s in %.1f s", len(rows), out_dir, elapsed)
    return pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line of :func:`main`."""
    parser = argparse.ArgumentParser(
        prog="python -m deepfakenet.data.synth",
        description="Generate the offline real/fake data set (AutoGAN-style fakes).",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--n-real", type=int, default=1500, help="number of real images")
    parser.add_argument("--n-fake", type=int, default=1500, help="number of fake images")
    parser.add_argument("--min-size", type=int, default=192, help="smallest image side (px)")
    parser.add_argument("--max-size", type=int, default=288, help="largest image side (px)")
    parser.add_argument("--seed", type=int, default=0, help="base random seed")
    parser.add_argument(
        "--sources", nargs="+", default=None, choices=list(REAL_SOURCES), help="real sources"
    )
    parser.add_argument(
        "--families", nargs="+", default=None, choices=list(FAKE_FAMILIES), help="fake families"
    )
    parser.add_argument(
        "--scale-range",
        nargs=2,
        type=float,
        default=(0.2, 1.0),
        metavar=("LOW", "HIGH"),
        help="range of the photo downscale factor before cropping",
    )
    parser.add_argument(
        "--artifact-strength", type=float, default=1.0, help="upsampling artifact multiplier"
    )
    parser.add_argument("--manifest", type=Path, default=None, help="also write a CSV manifest")
    parser.add_argument("--overwrite", action="store_true", help="replace existing images")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--log-level", default="INFO", help="logging level")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns a process exit status.

    Args:
        argv: Arguments (without the program name); ``None`` reads ``sys.argv``.

    Returns:
        0 on success, 2 on invalid arguments or an already populated output folder.
    """
    args = _parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        manifest = generate_dataset(
            args.out,
            n_real=args.n_real,
            n_fake=args.n_fake,
            min_size=args.min_size,
            max_size=args.max_size,
            seed=args.seed,
            sources=args.sources,
            families=args.families,
            scale_range=(args.scale_range[0], args.scale_range[1]),
            overwrite=args.overwrite,
            artifact_strength=args.artifact_strength,
            progress=not args.no_progress,
        )
    except (ValueError, FileExistsError) as exc:
        log.error("%s", exc)
        return 2
    if args.manifest is not None:
        args.manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.to_csv(args.manifest, index=False)
        log.info("Manifest written to %s", args.manifest)
    counts = manifest.groupby(["label", "family", "source"]).size()
    log.info("Images per label/family/source:\n%s", counts.to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
