"""Safe decoding of untrusted image bytes and files: the one decoder for uploads and data trees.

Everything that turns bytes into pixels goes through :func:`decode_image`, so training data,
evaluation data and HTTP uploads obey the same limits, the same format allow-list and the same
mode conversions: a model never trains on a format the service would refuse to score.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from deepfakenet.errors import ImageTooLargeError, InvalidImageError

log = logging.getLogger(__name__)

#: The only Pillow formats the decoder opens (`Image.open(..., formats=...)`). Every other plugin
#: stays unreachable from untrusted bytes: EPS (which hands the file to Ghostscript where it is
#: installed), PSD, PCX, TGA, ICO, the many rarely fuzzed legacy formats. An MPO (a camera's
#: multi-picture JPEG) is opened by the JPEG plugin and reported as ``MPO``.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")

#: Extensions the data tree scanner picks up: those of :data:`ALLOWED_FORMATS`, nothing else.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})

#: Modes with more than 8 bits per sample, rescaled to 8 bits by their range.
WIDE_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
#: Pixels of a wide-mode image converted per step: the float32 working copy of one step is the
#: only transient array, so a 40 MP 16-bit upload costs about a megabyte beyond its pixels
#: (a float64 copy of the whole image would be 320 MB, several times over).
CHUNK_PIXELS = 1 << 17


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


def _row_chunks(img: Image.Image) -> Iterator[tuple[int, np.ndarray]]:
    """``(top row, float32 pixels)`` of consecutive bands of about :data:`CHUNK_PIXELS`."""
    rows = max(1, CHUNK_PIXELS // max(1, img.width))
    for top in range(0, img.height, rows):
        band = img.crop((0, top, img.width, min(img.height, top + rows)))
        yield top, np.array(band, dtype=np.float32)  # a writable copy, whatever the mode


def _wide_to_l(img: Image.Image) -> Image.Image:
    """Rescale a 16/32-bit integer or float image to 8-bit ``L`` by its range, band by band.

    Two passes over bands of rows (the range, then the scaled pixels), so that memory beyond
    the decoded image and the 8-bit result stays bounded by :data:`CHUNK_PIXELS` whatever the
    image size. Non-finite floats (NaN, inf) are left out of the range and become 0.
    """
    lo, hi = np.inf, -np.inf
    for _, chunk in _row_chunks(img):
        finite = chunk if img.mode != "F" else chunk[np.isfinite(chunk)]
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    if lo > hi:  # no finite pixel at all
        lo = hi = 0.0
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    out = Image.new("L", img.size)
    for top, chunk in _row_chunks(img):
        if img.mode == "F":
            chunk[~np.isfinite(chunk)] = lo
        chunk -= np.float32(lo)
        chunk *= np.float32(scale)
        np.rint(chunk, out=chunk)
        np.clip(chunk, 0, 255, out=chunk)
        out.paste(Image.fromarray(chunk.astype(np.uint8)), (0, top))
    return out


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode (RGBA, P, CMYK, 16-bit, grayscale) to 8-bit RGB.

    Alpha is composited on white rather than dropped so that transparent regions do not turn
    into arbitrary colour. 16/32-bit and float images are rescaled to 8 bits by their range
    (:func:`_wide_to_l`), in bounded memory.
    """
    if img.mode in WIDE_MODES:
        img = _wide_to_l(img)
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
            img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
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
        raise InvalidImageError(
            "not an image in an accepted format: the bytes are none of "
            f"{', '.join(ALLOWED_FORMATS)}"
        ) from err
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
