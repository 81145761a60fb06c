"""Camera-pipeline simulation for the *real* class: the traces a camera or an editor leaves.

A real photograph at native resolution is not a clean signal: the sensor saw one colour per
pixel through a Bayer colour-filter array (CFA) and the other two were interpolated
(demosaiced), which leaves a period-2 correlation pattern between pixels, the same frequency
band as a generator's 2x upsampling. The bundled real photos carry none of it (they are
downscaled crops), so a detector trained on them learned "period-2 => fake" and flagged 76 % of
reals after an RGGB mosaic + bilinear demosaic. Adding the mosaic to *both* classes is no cure
either: it masks the generators' own traces (AUROC 0.29 on transposed-conv decoders). So the
camera pipeline here is applied to real crops only, and the detector has to learn the
difference between CFA interpolation and learned upsampling.

:func:`simulate_camera` draws one random pipeline per image: white-balance error, Bayer mosaic
(random pattern), optional sensor noise on the mosaic, a random demosaicing algorithm (OpenCV's
bilinear, edge-aware and VNG; Malvar 2004 and Menon 2007 from ``colour-demosaicing``), a tone
(gamma) change, in-camera sharpening, a camera JPEG, an edit (crop by a few pixels, which moves
the 8x8 JPEG grid and the CFA phase), a resize with a random kernel, and a second JPEG.

OpenCV naming trap: OpenCV's classic Bayer codes name the 2x2 block that starts at the
*second* row and column, so a sensor whose top-left pixel is red (RGGB) is
``COLOR_BayerBG2RGB``; recent OpenCV adds four-letter aliases (``COLOR_BayerRGGB2RGB``, equal to
``COLOR_BayerBG2RGB``) that use the usual convention. :func:`demosaic` takes the usual
convention and maps it to the classic codes, which every OpenCV 4.x/5.x has. OpenCV also copies
the outermost row and column from their neighbours instead of interpolating them; the mosaic is
therefore padded by a parity-preserving reflection first, so border pixels are demosaiced like
the rest and the sampled sites survive exactly.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, fields
from typing import Any, Literal, overload

import numpy as np
from PIL import Image

BAYER_PATTERNS: tuple[str, ...] = ("RGGB", "BGGR", "GRBG", "GBRG")
"""Bayer layouts, named by the colours of the top-left 2x2 block read row by row."""

DEMOSAIC_METHODS: tuple[str, ...] = ("bilinear", "edge_aware", "vng", "malvar2004", "menon2007")
"""Demosaicing algorithms: OpenCV's three, then two from ``colour-demosaicing``."""

RESIZE_KERNELS: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
"""Resampling kernels an editor or a web service may use, by name."""

# Classic OpenCV code name for each usual pattern name (see the module docstring).
_OPENCV_BAYER = {"RGGB": "BG", "BGGR": "RG", "GRBG": "GB", "GBRG": "GR"}
_OPENCV_SUFFIX = {"bilinear": "", "edge_aware": "_EA", "vng": "_VNG"}
_CHANNEL = {"R": 0, "G": 1, "B": 2}
_PAD = 4
"""Border (even, so the CFA phase is kept) added around a mosaic before demosaicing."""


def _check_pattern(pattern: str) -> str:
    """Return ``pattern`` upper-cased, or raise ``ValueError`` for an unknown layout."""
    upper = str(pattern).upper()
    if upper not in BAYER_PATTERNS:
        raise ValueError(f"unknown Bayer pattern {pattern!r}; expected one of {BAYER_PATTERNS}")
    return upper


def _cfa_channels(pattern: str) -> np.ndarray:
    """2x2 array of channel indices (0 R, 1 G, 2 B) sampled at each CFA phase."""
    letters = _check_pattern(pattern)
    return np.array([_CHANNEL[c] for c in letters]).reshape(2, 2)


def cfa_channel_map(shape: tuple[int, int], pattern: str = "RGGB") -> np.ndarray:
    """HxW array of the channel index (0 R, 1 G, 2 B) each sensor pixel samples."""
    height, width = shape
    tile = _cfa_channels(pattern)
    reps = (math.ceil(height / 2), math.ceil(width / 2))
    return np.tile(tile, reps)[:height, :width]


def _check_image(image: np.ndarray) -> np.ndarray:
    """Validate an HxWx3 uint8 image."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 image, got {array.shape} {array.dtype}")
    return array


def bayer_mosaic(image: np.ndarray, pattern: str = "RGGB") -> np.ndarray:
    """Sample an RGB image through a Bayer colour-filter array: one colour per pixel.

    Args:
        image: HxWx3 uint8 RGB image (any H, W >= 1).
        pattern: Layout of the top-left 2x2 block, one of :data:`BAYER_PATTERNS`.

    Returns:
        The HxW uint8 mosaic (raw sensor image).
    """
    image = _check_image(image)
    channels = cfa_channel_map(image.shape[:2], pattern)
    return np.ascontiguousarray(np.take_along_axis(image, channels[..., None], axis=2)[..., 0])


def _demosaic_float(mosaic: np.ndarray, pattern: str, method: str) -> np.ndarray:
    """Demosaic an HxW mosaic (uint8 or float on the 0-255 scale) to HxWx3 float32."""
    if method in _OPENCV_SUFFIX:
        import cv2

        code = getattr(cv2, f"COLOR_Bayer{_OPENCV_BAYER[pattern]}2RGB{_OPENCV_SUFFIX[method]}")
        raw = np.clip(np.rint(mosaic), 0, 255).astype(np.uint8)
        return cv2.cvtColor(raw, code).astype(np.float32)
    if method == "malvar2004":
        from colour_demosaicing import demosaicing_CFA_Bayer_Malvar2004 as algorithm
    elif method == "menon2007":
        from colour_demosaicing import demosaicing_CFA_Bayer_Menon2007 as algorithm
    else:
        raise ValueError(f"unknown demosaic method {method!r}; expected one of {DEMOSAIC_METHODS}")
    return np.asarray(algorithm(mosaic.astype(np.float64) / 255.0, pattern), np.float32) * 255.0


def demosaic(mosaic: np.ndarray, pattern: str = "RGGB", method: str = "bilinear") -> np.ndarray:
    """Reconstruct an RGB image from a Bayer mosaic, like a camera's image processor.

    The mosaic is padded by a parity-preserving reflection (``np.pad(mode="reflect")`` with an
    even width keeps every pixel's CFA colour) so that borders are interpolated like the
    interior and odd sizes work with every method; the padding is cropped off again.

    Args:
        mosaic: HxW uint8 mosaic (see :func:`bayer_mosaic`).
        pattern: Layout of the top-left 2x2 block, one of :data:`BAYER_PATTERNS` (usual
            convention, not OpenCV's classic one).
        method: One of :data:`DEMOSAIC_METHODS`.

    Returns:
        HxWx3 uint8 RGB image.
    """
    array = np.asarray(mosaic)
    if array.ndim != 2 or array.dtype != np.uint8:
        raise ValueError(f"expected an HxW uint8 mosaic, got {array.shape} {array.dtype}")
    pattern = _check_pattern(pattern)
    if method not in DEMOSAIC_METHODS:
        raise ValueError(f"unknown demosaic method {method!r}; expected one of {DEMOSAIC_METHODS}")
    rgb = _demosaic_padded(array, pattern, method)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _demosaic_padded(mosaic: np.ndarray, pattern: str, method: str) -> np.ndarray:
    """Pad by reflection (keeping the CFA phase), demosaic, crop back; float32 output."""
    height, width = mosaic.shape
    # "reflect" mirrors about the edge pixel, a pattern of period 2 * (side - 1): an even
    # period, so every padded pixel keeps the CFA colour of its position (numpy reflects
    # repeatedly when the pad exceeds the side, which keeps that property).
    padded = np.pad(mosaic, _PAD, mode="reflect" if min(height, width) > 1 else "edge")
    rgb = _demosaic_float(padded, pattern, method)
    return rgb[_PAD : _PAD + height, _PAD : _PAD + width]


def mosaic_demosaic(
    image: np.ndarray, method: str = "bilinear", pattern: str = "RGGB"
) -> np.ndarray:
    """Re-sample an RGB image through a Bayer CFA and demosaic it back (same shape, uint8).

    What a camera does to a scene, applied to an image: used as an evaluation perturbation
    ("do reals with CFA traces stay real?") and in regression tests.
    """
    return demosaic(bayer_mosaic(image, pattern), pattern, method)


# --------------------------------------------------------------------------------------------
# Editing operations shared with the fake post-processing
# --------------------------------------------------------------------------------------------


def jpeg_compress(image: np.ndarray, quality: int, subsampling: int = 2) -> np.ndarray:
    """Round-trip an RGB uint8 image through an in-memory JPEG (PIL/libjpeg).

    Args:
        image: HxWx3 uint8 image.
        quality: libjpeg quality, 1-100.
        subsampling: Chroma subsampling: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0. The decoder's chroma
            upsampling is itself a 2x interpolation, so this matters for a period-2 detector.

    Returns:
        The decoded image, same shape, uint8.
    """
    buffer = io.BytesIO()
    Image.fromarray(_check_image(image)).save(
        buffer, format="JPEG", quality=int(quality), subsampling=int(subsampling)
    )
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB")).copy()


def resize(image: np.ndarray, factor: float, kernel: str = "bicubic") -> np.ndarray:
    """Resize an RGB uint8 image by ``factor`` with a named PIL kernel (sides rounded, >= 1).

    Args:
        image: HxWx3 uint8 image.
        factor: Scale factor; below 1 shrinks.
        kernel: A key of :data:`RESIZE_KERNELS`.

    Returns:
        The resized image, ``round(H * factor) x round(W * factor) x 3`` uint8.
    """
    if kernel not in RESIZE_KERNELS:
        raise ValueError(
            f"unknown resize kernel {kernel!r}; expected one of {list(RESIZE_KERNELS)}"
        )
    height, width = _check_image(image).shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return np.asarray(Image.fromarray(image).resize(size, RESIZE_KERNELS[kernel])).copy()


def draw_resize(
    rng: np.random.Generator,
    kernels: tuple[str, ...],
    down_range: tuple[float, float],
    up_range: tuple[float, float],
    p_upscale: float,
) -> tuple[float, str]:
    """Draw ``(factor, kernel)`` for one resize: a downscale unless a ``p_upscale`` draw hits."""
    kernel = str(kernels[int(rng.integers(len(kernels)))])
    span = up_range if rng.random() < p_upscale else down_range
    return float(rng.uniform(*span)), kernel


def _pair(value: object, name: str) -> tuple[float, float]:
    """A (low, high) float pair from a list/tuple (Hydra hands over ListConfig)."""
    values = tuple(float(v) for v in value)  # type: ignore[attr-defined]
    if len(values) != 2:
        raise ValueError(f"{name} must be a (low, high) pair, got {value}")
    low, high = values
    if low > high:
        raise ValueError(f"{name} must be (low, high) with low <= high, got {value}")
    return low, high


def _normalise_config(config: object) -> None:
    """Turn Hydra's lists into tuples on a frozen dataclass and validate its values.

    Dispatches on the field's annotation: ``p_*`` floats must lie in [0, 1];
    ``tuple[float, float]`` is a (low, high) range; ``tuple[str, ...]`` and
    ``tuple[float, ...]`` become tuples of that type.
    """
    for field in fields(config):  # type: ignore[arg-type]
        value = getattr(config, field.name)
        kind = str(field.type)
        if field.name.startswith("p_"):
            value = float(value)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{field.name} must be a probability in [0, 1], got {value}")
        elif kind == "tuple[float, float]":
            value = _pair(value, field.name)
        elif kind == "tuple[str, ...]":
            value = tuple(str(v) for v in value)
            if not value:
                raise ValueError(f"{field.name} must not be empty")
        elif kind == "tuple[float, ...]":
            value = tuple(float(v) for v in value)
        elif kind == "tuple[int, ...]":
            value = tuple(int(v) for v in value)
            if not value:
                raise ValueError(f"{field.name} must not be empty")
        elif kind == "int":
            value = int(value)
        object.__setattr__(config, field.name, value)


# --------------------------------------------------------------------------------------------
# Random camera pipeline
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraConfig:
    """Probabilities and ranges of :func:`simulate_camera` (plain floats/lists for Hydra).

    Every ``p_*`` is the probability that a step runs; every 2-element field is a uniform
    ``(low, high)`` range. Defaults are light: the aim is traces, not visible damage.

    Attributes:
        p_mosaic: Bayer mosaic + demosaic at all. Below 1 so that "no CFA trace" (a real photo
            downscaled since it was taken) is not a fake cue either.
        patterns: Bayer layouts to draw from.
        demosaic_methods: Demosaicing algorithms to draw from (see :data:`DEMOSAIC_METHODS`).
        demosaic_weights: Relative draw weights of ``demosaic_methods`` (empty: uniform).
        p_noise: Sensor noise on the mosaic (requires the mosaic step).
        shot_gain: Shot-noise variance per unit signal, in 8-bit units (variance = gain * DN).
        read_sigma: Read-noise standard deviation, in 8-bit units.
        p_color: White-balance gains (before the mosaic) and a tone-curve gamma (after it).
        wb_gain: Range of each channel's gain.
        gamma: Range of the gamma exponent.
        p_sharpen: In-camera unsharp masking.
        sharpen_sigma: Range of the unsharp mask's Gaussian radius (pixels).
        sharpen_amount: Range of the unsharp mask's amount.
        p_jpeg: Camera JPEG.
        jpeg_quality: Range of the camera JPEG quality.
        jpeg_subsampling: Chroma subsamplings to draw from (0 4:4:4, 1 4:2:2, 2 4:2:0).
        p_double_jpeg: Given a camera JPEG, an edit: crop by 0..``max_grid_offset`` pixels at
            the top and left (misaligning the first JPEG's 8x8 grid) and save again.
        jpeg_quality_second: Range of the second JPEG's quality.
        max_grid_offset: Largest crop of the edit, in pixels.
        p_resize: A resize (after the camera JPEG and the edit crop, before a second JPEG).
        resize_kernels: Kernels to draw from (keys of :data:`RESIZE_KERNELS`).
        resize_down: Range of a downscale factor.
        p_upscale: Given a resize, the probability that it enlarges instead.
        resize_up: Range of an upscale factor.
    """

    p_mosaic: float = 0.8
    patterns: tuple[str, ...] = BAYER_PATTERNS
    demosaic_methods: tuple[str, ...] = DEMOSAIC_METHODS
    demosaic_weights: tuple[float, ...] = ()
    p_noise: float = 0.5
    shot_gain: tuple[float, float] = (0.01, 0.25)
    read_sigma: tuple[float, float] = (0.3, 2.0)
    p_color: float = 0.5
    wb_gain: tuple[float, float] = (0.95, 1.05)
    gamma: tuple[float, float] = (0.9, 1.1)
    p_sharpen: float = 0.4
    sharpen_sigma: tuple[float, float] = (0.5, 1.5)
    sharpen_amount: tuple[float, float] = (0.2, 1.0)
    p_jpeg: float = 0.7
    jpeg_quality: tuple[float, float] = (75.0, 98.0)
    jpeg_subsampling: tuple[int, ...] = (0, 1, 2)
    p_double_jpeg: float = 0.3
    jpeg_quality_second: tuple[float, float] = (65.0, 95.0)
    max_grid_offset: int = 7
    p_resize: float = 0.3
    resize_kernels: tuple[str, ...] = tuple(RESIZE_KERNELS)
    resize_down: tuple[float, float] = (0.5, 0.95)
    p_upscale: float = 0.2
    resize_up: tuple[float, float] = (1.05, 1.5)

    def __post_init__(self) -> None:
        _normalise_config(self)
        patterns = tuple(_check_pattern(p) for p in self.patterns)
        object.__setattr__(self, "patterns", patterns)
        unknown = set(self.demosaic_methods) - set(DEMOSAIC_METHODS)
        if unknown:
            raise ValueError(f"unknown demosaic methods {sorted(unknown)}")
        if self.demosaic_weights and len(self.demosaic_weights) != len(self.demosaic_methods):
            raise ValueError("demosaic_weights must match demosaic_methods in length")
        unknown = set(self.resize_kernels) - set(RESIZE_KERNELS)
        if unknown:
            raise ValueError(f"unknown resize kernels {sorted(unknown)}")

    def input_side(self, side: int) -> int:
        """Smallest input side whose output is at least ``side`` whatever the draws.

        :func:`simulate_camera` may crop up to ``max_grid_offset`` pixels and then downscale by
        ``resize_down[0]``; a caller that needs ``side`` pixels draws a crop this large and
        crops the output back to ``side``.
        """
        return edited_input_side(self, side)


def edited_input_side(config: Any, side: int) -> int:
    """Smallest input side an edit (a grid-offset crop, then a downscale) still leaves ``side``.

    Shared by :class:`CameraConfig` and the fakes' post-processing config, which have the same
    ``p_resize``, ``resize_down``, ``p_jpeg``, ``p_double_jpeg`` and ``max_grid_offset`` fields.
    """
    shrink = config.resize_down[0] if config.p_resize > 0 else 1.0
    offset = config.max_grid_offset if config.p_jpeg > 0 and config.p_double_jpeg > 0 else 0
    return math.ceil((side + 1) / min(shrink, 1.0)) + offset


def _sensor_noise(mosaic: np.ndarray, rng: np.random.Generator, config: CameraConfig) -> np.ndarray:
    """Signal-dependent sensor noise (shot + read) on an HxW float mosaic, 8-bit units."""
    gain = float(rng.uniform(*config.shot_gain))
    read = float(rng.uniform(*config.read_sigma))
    sigma = np.sqrt(gain * np.clip(mosaic, 0.0, None) + read**2)
    return mosaic + sigma * rng.standard_normal(mosaic.shape).astype(np.float32)


def _unsharp(image: np.ndarray, sigma: float, amount: float) -> np.ndarray:
    """Unsharp mask of an HxWx3 float32 image: ``x + amount * (x - gaussian(x, sigma))``."""
    import cv2

    blurred = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
    return image + amount * (image - blurred)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Clip and round a float image to uint8."""
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


@overload
def simulate_camera(
    image: np.ndarray,
    rng: np.random.Generator,
    config: CameraConfig | None = ...,
    describe: Literal[False] = ...,
) -> np.ndarray: ...
@overload
def simulate_camera(
    image: np.ndarray,
    rng: np.random.Generator,
    config: CameraConfig | None = ...,
    *,
    describe: Literal[True],
) -> tuple[np.ndarray, str]: ...
def simulate_camera(
    image: np.ndarray,
    rng: np.random.Generator,
    config: CameraConfig | None = None,
    describe: bool = False,
) -> np.ndarray | tuple[np.ndarray, str]:
    """Pass a real crop through a random camera and editing pipeline.

    Steps, each with its probability from ``config``: white-balance gains; Bayer mosaic with a
    random layout, sensor noise on the mosaic, demosaicing with a random algorithm; tone gamma;
    unsharp masking; camera JPEG (random quality and chroma subsampling); an edit that crops
    0..``max_grid_offset`` pixels at the top/left (moving the 8x8 JPEG grid); a resize with a
    random kernel (mostly down); the edit's second JPEG. All draws come from ``rng``, so a seed
    fixes the output.

    Shape: unchanged unless the edit crop or the resize runs; then the output is smaller
    (crop, downscale) or larger (upscale). Callers that need a fixed size draw an input of
    :meth:`CameraConfig.input_side` pixels and crop the output.

    Args:
        image: HxWx3 uint8 RGB crop of a real photo (at least 2x2).
        rng: Random generator.
        config: Probabilities and ranges; ``None`` uses the defaults.
        describe: Also return a short description of the steps applied (``""`` for none),
            e.g. ``"mosaic=GRBG/vng+noise+jpeg=91/1"``, for the data set manifest.

    Returns:
        HxWx3 uint8 RGB image (see Shape), or ``(image, description)`` when ``describe``.
    """
    config = config or CameraConfig()
    x = _check_image(image).astype(np.float32)
    steps: list[str] = []
    gamma = 1.0
    if rng.random() < config.p_color:
        x = x * rng.uniform(*config.wb_gain, size=3).astype(np.float32)
        gamma = float(rng.uniform(*config.gamma))
        steps.append(f"wb+gamma={gamma:.2f}")
    if rng.random() < config.p_mosaic:
        pattern = str(config.patterns[int(rng.integers(len(config.patterns)))])
        weights = np.asarray(config.demosaic_weights or [1.0] * len(config.demosaic_methods))
        method = str(rng.choice(config.demosaic_methods, p=weights / weights.sum()))
        mosaic = bayer_mosaic(_to_uint8(x), pattern).astype(np.float32)
        steps.append(f"mosaic={pattern}/{method}")
        if rng.random() < config.p_noise:
            mosaic = _sensor_noise(mosaic, rng, config)
            steps.append("noise")
        x = _demosaic_padded(_to_uint8(mosaic), pattern, method)
    if gamma != 1.0:
        x = 255.0 * (np.clip(x, 0.0, 255.0) / 255.0) ** gamma
    if rng.random() < config.p_sharpen:
        sigma = float(rng.uniform(*config.sharpen_sigma))
        amount = float(rng.uniform(*config.sharpen_amount))
        x = _unsharp(np.ascontiguousarray(x, dtype=np.float32), sigma, amount)
        steps.append(f"sharpen={sigma:.1f}/{amount:.2f}")
    out = _to_uint8(x)
    second_quality = None
    if rng.random() < config.p_jpeg:
        quality = round(float(rng.uniform(*config.jpeg_quality)))
        subsampling = int(rng.choice(config.jpeg_subsampling))
        out = jpeg_compress(out, quality, subsampling)
        steps.append(f"jpeg={quality}/{subsampling}")
        if rng.random() < config.p_double_jpeg:
            dy, dx = (int(v) for v in rng.integers(0, config.max_grid_offset + 1, size=2))
            if out.shape[0] > dy and out.shape[1] > dx:
                out = out[dy:, dx:]
            second_quality = round(float(rng.uniform(*config.jpeg_quality_second)))
            steps.append(f"crop={dy},{dx}")
    if rng.random() < config.p_resize:
        factor, kernel = draw_resize(
            rng, config.resize_kernels, config.resize_down, config.resize_up, config.p_upscale
        )
        out = resize(out, factor, kernel)
        steps.append(f"resize={factor:.2f}/{kernel}")
    if second_quality is not None:
        out = jpeg_compress(out, second_quality, int(rng.choice(config.jpeg_subsampling)))
        steps.append(f"jpeg2={second_quality}")
    out = np.ascontiguousarray(out)
    return (out, "+".join(steps)) if describe else out
