"""Safe decoding of untrusted image bytes and files: the one decoder for uploads and data trees.

Everything that turns bytes into pixels goes through :func:`decode_image`, so training data,
evaluation data and HTTP uploads obey the same limits and the same mode conversions.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from deepfakenet.errors import ImageTooLargeError, InvalidImageError

log = logging.getLogger(__name__)

#: Extensions the data tree scanner picks up; anything Pillow can decode works through bytes.
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)


@dataclass(frozen=True)
class DecodeLimits:
    """Limits for untrusted input; a decompression bomb is refused before pixels are allocated.

    Attributes:
        max_bytes: Largest accepted encoded size.
        max_pixels: Largest accepted ``width * height`` (checked from the header, before decoding).
    """

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image plus the facts about the upload worth storing (never EXIF or a file name)."""

    image: Image.Image
    format: str
    width: int
    height: int


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode (RGBA, P, CMYK, 16-bit, grayscale) to 8-bit RGB.

    Alpha is composited on white rather than dropped so that transparent regions do not turn
    into arbitrary colour. 16/32-bit and float images are rescaled to 8 bits by their range.
    """
    if img.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        img = Image.fromarray(((arr - lo) * scale).round().astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in {"RGBA", "LA", "PA"}:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


def decode_image(data: bytes, limits: DecodeLimits | None = None) -> DecodedImage:
    """Decode untrusted bytes into an RGB image, or raise :class:`InvalidImageError`.

    The first frame of animated images is used, EXIF orientation is applied (then the metadata
    is dropped), and truncated files are refused rather than silently zero-padded.

    Args:
        data: The encoded image.
        limits: Byte and pixel limits; defaults to :class:`DecodeLimits`.

    Returns:
        The decoded image with its original format and size.
    """
    limits = limits or DecodeLimits()
    if not data:
        raise InvalidImageError("empty body: no image bytes were sent")
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(
            f"image is {len(data)} bytes, over the limit of {limits.max_bytes} bytes"
        )
    try:
        with warnings.catch_warnings():
            # Pillow warns (and would raise past 2x its own limit) on bombs; we check ourselves.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > limits.max_pixels:
                raise ImageTooLargeError(
                    f"image is {width}x{height} = {width * height} pixels, over the limit of "
                    f"{limits.max_pixels} pixels"
                )
            fmt = (img.format or "unknown").upper()
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = _to_rgb(img)
    except InvalidImageError:
        raise
    except UnidentifiedImageError as err:
        raise InvalidImageError("not an image: the bytes are in no format Pillow can read") from err
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(f"image refused as a decompression bomb: {err}") from err
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        # Truncated or corrupt streams surface as OSError ("image file is truncated") et al.
        raise InvalidImageError(f"corrupt or truncated image: {err}") from err
    # Nothing of the upload travels on with the pixels: EXIF, ICC profile, comments, text chunks.
    rgb.info = {}
    return DecodedImage(image=rgb, format=fmt, width=rgb.width, height=rgb.height)


def load_image_file(path: str | Path, limits: DecodeLimits | None = None) -> Image.Image:
    """Read and decode an image file through the same checks as an upload."""
    return decode_image(Path(path).read_bytes(), limits).image
