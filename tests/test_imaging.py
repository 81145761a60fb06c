import io

import numpy as np
import pytest
from PIL import Image

from deepfakenet.errors import ImageTooLargeError, InvalidImageError
from deepfakenet.imaging import DecodeLimits, decode_image


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


RGB = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    ("img", "fmt"),
    [
        (RGB, "PNG"),
        (RGB, "JPEG"),
        (RGB.convert("RGBA"), "PNG"),
        (RGB.convert("L"), "PNG"),
        (RGB.convert("P"), "GIF"),
        (RGB.convert("CMYK"), "JPEG"),
        (RGB.convert("CMYK"), "TIFF"),
        (Image.fromarray((np.arange(600).reshape(20, 30) * 100).astype(np.uint16)), "PNG"),
    ],
)
def test_any_mode_becomes_rgb(img, fmt):
    decoded = decode_image(_encode(img, fmt))
    assert decoded.image.mode == "RGB"
    assert (decoded.width, decoded.height) == (30, 20)
    assert decoded.format == fmt


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    decoded = decode_image(_encode(RGB, "JPEG", exif=exif))
    assert (decoded.width, decoded.height) == (20, 30)


def test_animated_image_uses_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    decoded = decode_image(buf.getvalue())
    assert decoded.image.getpixel((0, 0))[0] > 200


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (b"hello, not an image", "not an image"),
        (_encode(RGB, "PNG")[:60], "truncated|corrupt"),
        (_encode(RGB, "JPEG")[:200], "truncated|corrupt"),
    ],
)
def test_bad_bytes_raise_clear_errors(data, match):
    with pytest.raises(InvalidImageError, match=match):
        decode_image(data)


def test_limits_refuse_bombs_before_decoding():
    big = _encode(Image.new("RGB", (400, 300)), "PNG")
    with pytest.raises(ImageTooLargeError, match="pixels"):
        decode_image(big, DecodeLimits(max_pixels=100_000))
    with pytest.raises(ImageTooLargeError, match="bytes"):
        decode_image(big, DecodeLimits(max_bytes=100))
