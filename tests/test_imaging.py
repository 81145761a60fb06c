import io
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from deepfakenet.errors import ImageTooLargeError, InvalidImageError
from deepfakenet.imaging import ALLOWED_FORMATS, IMAGE_EXTENSIONS, DecodeLimits, decode_image


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


# ----------------------------------------------------------------------------- format allow-list


@pytest.mark.parametrize("fmt", ["PCX", "ICO", "TGA", "PPM", "EPS", "SGI", "DDS"])
def test_formats_outside_the_allow_list_are_refused(fmt):
    data = _encode(RGB, fmt)
    assert Image.open(io.BytesIO(data)).format == fmt, "Pillow itself would decode it"
    with pytest.raises(InvalidImageError) as refused:
        decode_image(data)
    message = str(refused.value)
    assert message.startswith("not an image in an accepted format")
    for allowed in ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"):
        assert allowed in message


@pytest.mark.parametrize("fmt", ALLOWED_FORMATS)
def test_every_allowed_format_decodes(fmt):
    decoded = decode_image(_encode(RGB, fmt))
    assert decoded.format == fmt and (decoded.width, decoded.height) == (30, 20)


def test_the_data_scanner_picks_up_exactly_the_allowed_formats():
    registered = Image.registered_extensions()
    assert {registered[ext] for ext in IMAGE_EXTENSIONS} == set(ALLOWED_FORMATS)


# ----------------------------------------------------------------------------- wide modes


def _gradient16(width: int, height: int) -> np.ndarray:
    return (np.arange(width * height, dtype=np.uint32).reshape(height, width) % 65536).astype(
        np.uint16
    )


def test_16_bit_decoding_needs_no_full_size_float_copy():
    side = 2048  # 4 MP; the service accepts up to 40 MP
    data = _encode(Image.fromarray(_gradient16(side, side)), "PNG", compress_level=1)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        decoded = decode_image(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoded.image.mode == "RGB" and decoded.width == side
    # numpy's arrays are traced; Pillow's own pixel buffers are not. Rescaling through float64
    # took 24 bytes per pixel at its peak (96 MB here); bands of rows take a fixed ~2 MB.
    assert peak < side * side, f"{peak / side / side:.2f} bytes per pixel"


def test_16_bit_is_rescaled_by_its_range():
    pixels = _gradient16(300, 200)[:, :] // 4 + 1000  # range 1000..17383
    decoded = decode_image(_encode(Image.fromarray(pixels), "PNG"))
    expected = np.round((pixels - pixels.min()) * (255.0 / np.ptp(pixels))).astype(np.uint8)
    got = np.asarray(decoded.image)
    assert np.array_equal(got[..., 0], got[..., 2])
    assert np.abs(got[..., 0].astype(int) - expected).max() <= 1
    assert got.min() == 0 and got.max() == 255


def test_float_images_ignore_non_finite_pixels():
    pixels = np.linspace(-1.0, 3.0, 40 * 30, dtype=np.float32).reshape(30, 40)
    pixels[0, 0], pixels[0, 1], pixels[0, 2] = np.nan, np.inf, -np.inf
    decoded = decode_image(_encode(Image.fromarray(pixels, mode="F"), "TIFF"))
    grey = np.asarray(decoded.image)[..., 0]
    assert grey[0, :3].tolist() == [0, 0, 0], "NaN and infinities become the low end"
    assert grey[-1, -1] == 255 and grey[0, 3] <= 1, "the finite range spans 0..255"
