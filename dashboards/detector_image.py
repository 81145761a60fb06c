"""The detector page's image flow: choose an image (or a bundled sample), explain it, show it.

One ``/explain`` call per distinct image per session: its answer is kept in the session, so the
reruns Streamlit makes on every click do not score (and record) the same image again. Importing
this module draws nothing.
"""

from __future__ import annotations

import hashlib
import logging

import streamlit as st
from detector_verdict import (
    feedback_form,
    sentence,
    show_heatmap,
    show_provenance,
    show_verdict,
)

from deepfakenet.display import outline_region, scaled_for_display, scored_region
from deepfakenet.errors import InvalidImageError
from deepfakenet.imaging import DecodeLimits, decode_image
from deepfakenet.samples import Sample, make_samples
from deepfakenet.service_client import (
    Explanation,
    ServiceClient,
    ServiceError,
    ServiceRejectedError,
)
from deepfakenet.settings import ServiceSettings

log = logging.getLogger("deepfakenet.dashboards.detector")

UPLOAD, SAMPLE = "Upload an image", "Try a bundled sample"
#: Extensions the uploader offers; the service decides what it accepts (by content, not name).
IMAGE_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"]
#: Session key of the last answer: ``(sha256 of the image, Explanation)``.
RESULT_KEY = "detector.result"


@st.cache_data(show_spinner="Generating sample images…")
def cached_samples() -> list[Sample]:
    """The bundled samples, generated once per process (a few seconds: they are synthesised)."""
    return make_samples()


def upload_limit_mb(max_bytes: int) -> int:
    """The uploader's limit in whole MB (Streamlit's unit), rounded up, at least 1."""
    return max(1, -(-max_bytes // (1024 * 1024)))


def choose_image(max_upload_bytes: int) -> tuple[bytes, str | None] | None:
    """The image to score and, for a sample, its true label; None while nothing is chosen."""
    source = st.radio("Image", [UPLOAD, SAMPLE], horizontal=True, key="detector.source")
    if source == UPLOAD:
        upload = st.file_uploader(
            "Image file",
            type=IMAGE_TYPES,
            key="detector.upload",
            max_upload_size=upload_limit_mb(max_upload_bytes),
            help="Nothing but the pixels is kept: no file name, no EXIF, no address.",
        )
        return (upload.getvalue(), None) if upload is not None else None
    samples = cached_samples()
    names = [s.name for s in samples]
    name = st.selectbox("Sample", names, key="detector.sample")
    sample = samples[names.index(name)]
    return sample.png, sample.label


def explain_once(client: ServiceClient, image: bytes) -> Explanation | None:
    """The service's explanation of ``image``, asked for once per distinct image per session."""
    digest = hashlib.sha256(image).hexdigest()
    cached = st.session_state.get(RESULT_KEY)
    if cached is not None and cached[0] == digest:
        return cached[1]
    try:
        with st.spinner("Scoring the image and computing Grad-CAM…"):
            result = client.explain(image)
    except ServiceRejectedError as err:
        st.error(f"The service could not score this image: {sentence(err.reason)}", icon="⚠️")
        return None
    except ServiceError as err:
        st.error(f"The detection service is unavailable. {sentence(err)}", icon="🚫")
        return None
    log.info("explained image %s… as prediction %s", digest[:12], result.prediction_id)
    st.session_state[RESULT_KEY] = (digest, result)
    return result


def show_images(
    image: bytes, result: Explanation, crop_size: int | None, limits: DecodeLimits
) -> None:
    """The original (scaled, scored region outlined) beside the Grad-CAM overlay (enlarged)."""
    original, heat = st.columns(2)
    try:
        decoded = decode_image(image, limits)
    except InvalidImageError as err:  # the service read it, but this process cannot show it
        original.warning(f"The image cannot be shown here: {err}")
    else:
        shown, factor = scaled_for_display(decoded.image)
        caption = f"Original: {decoded.width}x{decoded.height} {decoded.format}"
        if factor < 1:
            caption += f", shown at {factor:.0%}"
        if crop_size:
            box = scored_region(decoded.width, decoded.height, crop_size)
            shown = outline_region(shown, box, factor)
            side = box[2] - box[0]
            caption += f"; the outlined {side}x{side} px square is what the model scored"
        original.image(shown, caption=caption, width="stretch")
    show_heatmap(
        heat,
        result.heatmap_png,
        f"Grad-CAM of '{result.target}' ({result.layer}) over the scored crop, enlarged: "
        "warm areas pushed the model towards that class",
    )


def image_flow(client: ServiceClient, crop_size: int | None, limits: ServiceSettings) -> None:
    """Choose an image, explain it, show the verdict, its credentials, the images, the form."""
    chosen = choose_image(limits.max_upload_bytes)
    if chosen is None:
        st.info("Upload an image or pick a sample to see what the detector makes of it.")
        return
    image, truth = chosen
    result = explain_once(client, image)
    if result is None:
        return
    show_verdict(result, truth)
    show_provenance(result)
    show_images(image, result, crop_size, DecodeLimits(limits.max_upload_bytes, limits.max_pixels))
    feedback_form(client, result, truth, limits.max_comment_chars)
