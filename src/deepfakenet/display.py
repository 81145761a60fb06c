"""What a dashboard shows a person: scaled images, the scored region, thumbnails, credentials.

Display never feeds the model: these helpers only decide what a dashboard shows. The one thing
they must get right is *where the model looked*: the service scores the centre crop of
:func:`deepfakenet.preprocessing.preprocess`, and :func:`scored_region` mirrors that crop in the
original image's coordinates so the page can outline it (the Grad-CAM covers that crop only).

:func:`describe_provenance` words an upload's C2PA content credentials (the service's
``provenance`` object) for a person. Its one rule: only a ``Trusted`` state is called trusted; a
``Valid`` signature is "valid, signer not trusted", because anyone can make a valid signature.
"""

from __future__ import annotations

import base64
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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


#: How each C2PA validation state is named to a person. Never "trusted" for ``Valid``: a valid
#: signature proves the file is intact since signing, not who signed it.
STATE_WORDS: dict[str, str] = {
    "Trusted": "trusted signature",
    "Valid": "valid signature, signer not trusted",
    "Invalid": "invalid: the credentials failed validation",
}
#: Plain words for the IPTC digital source types a manifest may declare (short terms).
SOURCE_TYPE_WORDS: dict[str, str] = {
    "trainedAlgorithmicMedia": "made by a generative AI model",
    "compositeWithTrainedAlgorithmicMedia": "a composite with AI-generated parts",
    "algorithmicMedia": "computer-generated (not by a trained model)",
    "compositeSynthetic": "a composite of synthetic elements",
    "algorithmicallyEnhanced": "a capture enhanced by an algorithm",
    "digitalCapture": "a camera capture",
    "computationalCapture": "a computational camera capture",
    "compositeCapture": "a composite of captures",
    "screenCapture": "a screen capture",
    "negativeFilm": "scanned from a film negative",
    "positiveFilm": "scanned from a film positive",
    "print": "scanned from a print",
    "minorHumanEdits": "a capture with minor human edits",
    "humanEdits": "a capture with human edits",
    "digitalArt": "digital art made by a person",
    "virtualRecording": "a recording of a virtual scene",
    "dataDrivenMedia": "data-driven media",
}

Level = Literal["none", "info", "success", "warning"]


@dataclass(frozen=True)
class ProvenanceView:
    """An upload's content credentials in words, ready to lay out.

    Attributes:
        reported: Whether the service reported provenance at all (earlier releases did not).
        present: Whether the upload carries a C2PA manifest.
        headline: One sentence on the credentials.
        level: How to frame the headline: ``success`` (trusted), ``info`` (valid, untrusted,
            or none), ``warning`` (invalid), ``none`` (not reported).
        details: ``(label, value)`` rows: signature state, signer, claim generator, declared
            source, failure codes; only the fields that have a value.
        conflict: A warning sentence when the credentials contradict the verdict, else None.
    """

    reported: bool
    present: bool
    headline: str
    level: Level
    details: tuple[tuple[str, str], ...]
    conflict: str | None


def source_type_words(term: str) -> str:
    """``term`` (a short IPTC digital source type, or its full URI) with plain words beside it."""
    short = term.rstrip("/").rsplit("/", 1)[-1]
    words = SOURCE_TYPE_WORDS.get(short)
    return f"{short} ({words})" if words else short


def _text(value: object) -> str | None:
    """A non-empty string field, else None (the object comes over the network)."""
    return (value.strip() or None) if isinstance(value, str) else None


def describe_provenance(provenance: dict[str, Any] | None, label: str) -> ProvenanceView:
    """Word the service's ``provenance`` object beside a verdict of ``label``.

    Tolerant: fields missing or of the wrong type are left out rather than guessed, and an
    unknown validation state is shown as "not validated", never as trusted.

    Args:
        provenance: The object the service answered under ``provenance``, or None.
        label: The model's verdict on the same upload (``real`` or ``fake``), for the conflict
            sentence.
    """
    if not isinstance(provenance, dict):
        return ProvenanceView(
            reported=False,
            present=False,
            headline="The service did not report content credentials for this upload.",
            level="none",
            details=(),
            conflict=None,
        )
    if provenance.get("manifest_present") is not True:
        return ProvenanceView(
            reported=True,
            present=False,
            headline="No content credentials (C2PA manifest) in this file.",
            level="info",
            details=(),
            conflict=None,
        )
    state = provenance.get("validation_state")
    state_words = STATE_WORDS.get(state, "not validated") if isinstance(state, str) else None
    level: Level = "success" if state == "Trusted" else "warning" if state == "Invalid" else "info"
    details: list[tuple[str, str]] = [("Signature", state_words or "not validated")]
    for name, field in (("Signer", "signer"), ("Made with", "claim_generator")):
        if text := _text(provenance.get(field)):
            details.append((name, text))
    if source := _text(provenance.get("digital_source_type")):
        details.append(("Declared source", source_type_words(source)))
    codes = provenance.get("failure_codes")
    if isinstance(codes, list) and codes:
        details.append(("Failure codes", ", ".join(str(c) for c in codes)))
    claims = []
    if provenance.get("ai_generated_declared") is True:
        claims.append("declare AI-generated content")
    if provenance.get("capture_declared") is True:
        claims.append("declare a camera capture")
    said = f" that {' and '.join(claims)}" if claims else ""
    headline = f"Content credentials{said}: {state_words or 'not validated'}."
    return ProvenanceView(
        reported=True,
        present=True,
        headline=headline[0].upper() + headline[1:],
        level=level,
        details=tuple(details),
        conflict=_conflict(provenance, label),
    )


def _conflict(provenance: dict[str, Any], label: str) -> str | None:
    """The sentence for ``disagrees``: which declaration the verdict contradicts."""
    if provenance.get("disagrees") is not True:
        return None
    if provenance.get("ai_generated_declared") is True and label != "fake":
        claim = "declare this file AI-generated"
    elif provenance.get("capture_declared") is True and label == "fake":
        claim = "carry a trusted camera-capture claim"
    else:
        claim = "make a declaration"
    return (
        f"The content credentials contradict the verdict: they {claim}, but the model judged "
        f"it {label}. The verdict is the pixel model's alone; weigh the signed declaration "
        "(and who signed it) separately."
    )
