"""Detector page: upload an image (or pick a sample), see the verdict and where the model looked.

Everything goes through the service over HTTP (``/model``, ``/explain``, ``/feedback``); this
page never loads the model. One ``/explain`` call per image: its answer is kept in the session,
so the reruns Streamlit makes on every click do not score (and record) the same image again.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import streamlit as st

from deepfakenet.display import enlarged, outline_region, scaled_for_display, scored_region
from deepfakenet.errors import InvalidImageError
from deepfakenet.imaging import DecodeLimits, decode_image
from deepfakenet.labels import LABELS
from deepfakenet.samples import Sample, make_samples
from deepfakenet.service_client import (
    Explanation,
    ServiceClient,
    ServiceError,
    ServiceRejectedError,
)
from deepfakenet.settings import DashboardSettings, ServiceSettings

log = logging.getLogger("deepfakenet.dashboards.detector")

UPLOAD, SAMPLE = "Upload an image", "Try a bundled sample"
#: Extensions the uploader offers; the service decides what it accepts (by content, not name).
IMAGE_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"]
RESULT_KEY = "detector.result"


@st.cache_data(show_spinner="Generating sample images…")
def cached_samples() -> list[Sample]:
    """The bundled samples, generated once per process (a few seconds: they are synthesised)."""
    return make_samples()


def service_info(client: ServiceClient) -> dict[str, Any] | None:
    """Show which model answers, or say plainly that the service is not there."""
    try:
        info = client.model_info()
    except ServiceError as err:
        st.error(f"The detection service is unavailable. {_sentence(err)}", icon="🚫")
        st.button("Check again")
        return None
    alias = f" ({info['alias']})" if info.get("alias") else ""
    st.caption(
        f"Service {client.shown_url} · model {info.get('model_name', '?')} "
        f"v{info.get('model_version', '?')}{alias} · input {info.get('input_size', '?')} px"
    )
    return info


def choose_image(max_upload_bytes: int) -> tuple[bytes, str | None] | None:
    """The image to score and, for a sample, its true label; None while nothing is chosen."""
    source = st.radio("Image", [UPLOAD, SAMPLE], horizontal=True, key="detector.source")
    if source == UPLOAD:
        upload = st.file_uploader(
            "Image file",
            type=IMAGE_TYPES,
            key="detector.upload",
            max_upload_size=max(1, -(-max_upload_bytes // (1024 * 1024))),
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
        st.error(f"The service could not score this image: {_sentence(err.reason)}", icon="⚠️")
        return None
    except ServiceError as err:
        st.error(f"The detection service is unavailable. {_sentence(err)}", icon="🚫")
        return None
    log.info("explained image %s… as prediction %s", digest[:12], result.prediction_id)
    st.session_state[RESULT_KEY] = (digest, result)
    return result


def show_verdict(result: Explanation, truth: str | None) -> None:
    """The verdict, the probability and the model version, in one row."""
    verdict, probability, version = st.columns(3)
    verdict.metric("Verdict", result.label.upper(), border=True)
    probability.metric("Probability of fake", f"{result.prob_fake:.1%}", border=True)
    version.metric("Model version", f"v{result.model_version}", border=True)
    if truth is not None:
        right = "right" if truth == result.label else "wrong"
        st.caption(f"This sample is {truth}: the model is {right} about it.")


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
    try:
        overlay = enlarged(result.heatmap_png)
    except ValueError as err:
        heat.warning(str(err))
        return
    heat.image(
        overlay,
        caption=(
            f"Grad-CAM of '{result.target}' ({result.layer}) over the scored crop, enlarged: "
            "warm areas pushed the model towards that class"
        ),
        width="stretch",
    )


def feedback_form(
    client: ServiceClient, result: Explanation, truth: str | None, max_comment_chars: int
) -> None:
    """Ask whether the verdict is right; post the answer to ``/feedback`` and confirm it."""
    sent_key = f"detector.feedback.{result.prediction_id}"
    if sent_key in st.session_state:
        st.success(
            f"Thank you: your feedback was recorded (id {st.session_state[sent_key]}). "
            "It will be used when the model is next retrained.",
            icon="✅",
        )
        return
    other = next(label for label in LABELS if label != result.label)
    with st.form(f"detector.form.{result.prediction_id}"):
        st.subheader("Is this right?")
        true_label = st.radio(
            "Is the verdict right?",
            [result.label, other],
            index=None if truth is None else [result.label, other].index(truth),
            format_func=lambda label: (
                f"Yes, it is {label}" if label == result.label else f"No, it is {label}"
            ),
            key=f"detector.label.{result.prediction_id}",
        )
        comment = st.text_area(
            "Comment (optional)",
            max_chars=max_comment_chars,
            key=f"detector.comment.{result.prediction_id}",
        )
        submitted = st.form_submit_button("Send feedback", type="primary")
    if not submitted:
        return
    if true_label is None:
        st.warning("Choose whether the verdict is right before sending.")
        return
    try:
        feedback_id = client.feedback(result.prediction_id, true_label, comment.strip() or None)
    except ServiceRejectedError as err:
        st.error(f"The service did not accept the feedback: {_sentence(err.reason)}", icon="⚠️")
        return
    except ServiceError as err:
        st.error(f"The feedback could not be sent. {_sentence(err)}", icon="🚫")
        return
    st.session_state[sent_key] = feedback_id
    st.rerun()


def _sentence(text: object) -> str:
    """``text`` with a capital first letter and a final full stop, for a message box."""
    words = str(text).strip()
    if not words:
        return ""
    words = words[0].upper() + words[1:]
    return words if words.endswith((".", "!", "?")) else words + "."


def main() -> None:
    """Render the page."""
    settings = DashboardSettings()
    limits = ServiceSettings()  # the service's own limits, read from the same variables
    client = ServiceClient.from_settings(settings)
    st.title("Is this image a deepfake?")
    info = service_info(client)
    if info is None:
        return
    chosen = choose_image(limits.max_upload_bytes)
    if chosen is None:
        st.info("Upload an image or pick a sample to see what the detector makes of it.")
        return
    image, truth = chosen
    result = explain_once(client, image)
    if result is None:
        return
    show_verdict(result, truth)
    crop = info.get("input_size")
    decode_limits = DecodeLimits(limits.max_upload_bytes, limits.max_pixels)
    show_images(image, result, int(crop) if crop else None, decode_limits)
    feedback_form(client, result, truth, limits.max_comment_chars)


main()
