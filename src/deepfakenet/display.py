"""Images prepared for a person to look at: scaled copies, the scored region, thumbnails.

Display never feeds the model: these helpers only decide what a dashboard shows. The one thing
they must get right is *where the model looked*: the service scores the centre crop of
:func:`deepfakenet.preprocessing.preprocess`, and :func:`scored_region` mirrors that crop in the
original image's coordinates so the page can outline it (the Grad-CAM covers that crop only).
"""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path

from PIL import Image, ImageDraw, UnidentifiedImageError

log = logging.getLogger(__name__)

#: Outline colour of the scored region (matches the warm end of the heat map's colormap).
OUTLINE_RGB = (255, 64, 32)


def scored_region(width: int, height: int, crop_size: int) -> tuple[int, int, int, int]:
    """The part of a ``width x height`` image the model scores, as ``(left, top, right, bottom)``.

    Evaluation preprocessing upscales only images whose shorter side is below ``crop_size`` and
    then takes the centre ``crop_size`` square. In original pixels that is a centred square of
    side ``min(crop_size, shorter side)``.

    Raises:
        ValueError: A non-positive size.
    """
    if width <= 0 or height <= 0 or crop_size <= 0:
        raise ValueError(f"sizes must be positive, got {width}x{height} and crop {crop_size}")
    side = min(crop_size, width, height)
    left = round((width - side) / 2)
    top = round((height - side) / 2)
    return left, top, left + side, top + side


def scaled_for_display(image: Image.Image, max_side: int = 1024) -> tuple[Image.Image, float]:
    """A copy no larger than ``max_side`` on its longer side, and the factor applied (<= 1).

    A browser would scale a large photo down anyway; doing it here keeps a 40-megapixel upload
    from being sent back to the browser at full size on every rerun.
    """
    longer = max(image.size)
    if longer <= max_side:
        return image.copy(), 1.0
    factor = max_side / longer
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.LANCZOS), factor


def outline_region(
    image: Image.Image, box: tuple[int, int, int, int], factor: float = 1.0
) -> Image.Image:
    """A copy of ``image`` with ``box`` (in original coordinates, scaled by ``factor``) outlined."""
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 200))
    left, top, right, bottom = (round(v * factor) for v in box)
    draw.rectangle((left, top, right - 1, bottom - 1), outline=OUTLINE_RGB, width=width)
    return out


def enlarged(png: bytes, min_side: int = 384) -> Image.Image:
    """Decode a small PNG (the service's heat map) and enlarge it by a whole factor.

    Nearest-neighbour keeps the crop's pixels visible as they were scored, instead of a blur
    that suggests detail the model never saw.

    Raises:
        ValueError: The bytes are not an image.
    """
    try:
        with Image.open(io.BytesIO(png)) as img:
            heat = img.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"the heat map is not a readable image: {err}") from err
    factor = max(1, -(-min_side // max(1, min(heat.size))))
    if factor == 1:
        return heat
    return heat.resize((heat.width * factor, heat.height * factor), Image.Resampling.NEAREST)


def thumbnail_data_uri(path: str | Path, side: int = 96) -> str | None:
    """A ``data:image/png;base64,...`` thumbnail of an archived image; None if it is gone.

    Archived images are purged after their retention period unless they received feedback,
    so a missing file is normal and not an error.
    """
    try:
        with Image.open(path) as img:
            thumb = img.convert("RGB")
            thumb.thumbnail((side, side), Image.Resampling.LANCZOS)
    except FileNotFoundError:
        return None
    except (UnidentifiedImageError, OSError) as err:
        log.warning("archived image %s is unreadable: %s", path, err)
        return None
    buffer = io.BytesIO()
    thumb.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
