"""What the detector page shows for any verdict, image or video.

The service banner, the verdict row, the upload's content credentials beside it, and the
feedback form. Each takes the service's answer (an :class:`~deepfakenet.service_client.Explanation`
or a :class:`~deepfakenet.service_client.VideoVerdict`, both a :class:`Verdict`), so the image
and the video flow show them the same way and feedback on a clip works exactly as on an image.
Importing this module draws nothing.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import pandas as pd
import streamlit as st

from deepfakenet.display import describe_provenance, enlarged
from deepfakenet.labels import LABELS
from deepfakenet.service_client import ServiceClient, ServiceError, ServiceRejectedError

log = logging.getLogger("deepfakenet.dashboards.detector")


class Verdict(Protocol):
    """What every service answer the page shows has: the verdict and its credentials."""

    @property
    def prediction_id(self) -> str:
        """Id to send feedback for."""

    @property
    def label(self) -> str:
        """``real`` or ``fake``."""

    @property
    def prob_fake(self) -> float:
        """Calibrated probability of ``fake`` (a clip's score for a video)."""

    @property
    def model_version(self) -> str:
        """Registered model version that scored the upload."""

    @property
    def provenance(self) -> dict[str, Any] | None:
        """The upload's C2PA content credentials as the service reported them."""


def sentence(text: object) -> str:
    """``text`` with a capital first letter and a final full stop, for a message box."""
    words = str(text).strip()
    if not words:
        return ""
    words = words[0].upper() + words[1:]
    return words if words.endswith((".", "!", "?")) else words + "."


def service_info(client: ServiceClient) -> dict[str, Any] | None:
    """Show which model answers, or say plainly that the service is not there."""
    try:
        info = client.model_info()
    except ServiceError as err:
        st.error(f"The detection service is unavailable. {sentence(err)}", icon="🚫")
        st.button("Check again")
        return None
    alias = f" ({info['alias']})" if info.get("alias") else ""
    st.caption(
        f"Service {client.shown_url} · model {info.get('model_name', '?')} "
        f"v{info.get('model_version', '?')}{alias} · input {info.get('input_size', '?')} px"
    )
    return info


def show_verdict(result: Verdict, truth: str | None = None) -> None:
    """The verdict, the probability and the model version, in one row."""
    verdict, probability, version = st.columns(3)
    verdict.metric("Verdict", result.label.upper(), border=True)
    probability.metric("Probability of fake", f"{result.prob_fake:.1%}", border=True)
    version.metric("Model version", f"v{result.model_version}", border=True)
    if truth is not None:
        right = "right" if truth == result.label else "wrong"
        st.caption(f"This sample is {truth}: the model is {right} about it.")


def show_provenance(result: Verdict) -> None:
    """The upload's C2PA content credentials beside the verdict, and any contradiction.

    Field values come from the upload's own manifest (untrusted text), so they are shown in a
    table, never as Markdown. Only a ``Trusted`` state is called trusted
    (:func:`deepfakenet.display.describe_provenance`).
    """
    view = describe_provenance(result.provenance, result.label)
    with st.container(border=True):
        st.markdown("**Content credentials (C2PA)**")
        if view.level == "success":
            st.success(view.headline, icon="🔏")
        elif view.level == "warning":
            st.warning(view.headline, icon="⚠️")
        elif view.level == "info":
            st.info(view.headline, icon=":material/info:")
        else:
            st.caption(view.headline)
        if view.details:
            st.dataframe(
                pd.DataFrame(view.details, columns=["credential", "value"]),
                hide_index=True,
                width="stretch",
            )
        if view.conflict:
            st.warning(view.conflict, icon="❗")
    if view.conflict:
        log.info("prediction %s: the credentials contradict the verdict", result.prediction_id)


def feedback_form(
    client: ServiceClient, result: Verdict, truth: str | None, max_comment_chars: int
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
        st.error(f"The service did not accept the feedback: {sentence(err.reason)}", icon="⚠️")
        return
    except ServiceError as err:
        st.error(f"The feedback could not be sent. {sentence(err)}", icon="🚫")
        return
    st.session_state[sent_key] = feedback_id
    st.rerun()


def show_heatmap(column: Any, heatmap_png: str, caption: str) -> None:
    """A Grad-CAM overlay (the service's base64 PNG), enlarged, in ``column``.

    A warning instead when the PNG cannot be read.
    """
    try:
        overlay = enlarged(heatmap_png)
    except ValueError as err:
        column.warning(str(err))
        return
    column.image(overlay, caption=caption, width="stretch")
