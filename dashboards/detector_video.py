"""The detector page's video flow: upload a clip, score it, show its timeline and strongest frame.

One ``/predict_video`` call per distinct clip per session (kept in the session like the image
flow's answer), so reruns neither re-score nor re-record it. The clip goes to the service under a
neutral name that keeps only its extension (a hint for the container); the service reads the
bytes. Importing this module draws nothing.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from pathlib import PurePath

import streamlit as st
from detector_charts import timeline_chart
from detector_image import upload_limit_mb
from detector_verdict import (
    feedback_form,
    sentence,
    show_heatmap,
    show_provenance,
    show_verdict,
)

from deepfakenet.service_client import (
    ServiceClient,
    ServiceError,
    ServiceRejectedError,
    VideoVerdict,
)
from deepfakenet.settings import ServiceSettings

log = logging.getLogger("deepfakenet.dashboards.detector")

#: Extensions the uploader offers; the service decides what it accepts (by content, not name).
VIDEO_TYPES = ["mp4", "m4v", "mov", "webm", "mkv", "avi", "3gp"]  # what the service accepts
#: Session key of the last answer: ``(sha256 of the clip, VideoVerdict)``.
VIDEO_RESULT_KEY = "detector.video_result"


def neutral_name(name: str | None) -> str:
    """``clip`` with the upload's extension when it is a plain one, else ``clip.mp4``.

    The person's file name never leaves the page; only a short alphanumeric extension does.
    """
    suffix = PurePath(name or "").suffix.lower()
    return f"clip{suffix}" if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else "clip.mp4"


def choose_video(max_video_bytes: int) -> tuple[bytes, str] | None:
    """The clip to score and the neutral name to send it under; None while nothing is chosen."""
    upload = st.file_uploader(
        "Video file",
        type=VIDEO_TYPES,
        key="detector.video_upload",
        max_upload_size=upload_limit_mb(max_video_bytes),
        help="Sampled frames are scored; only the strongest frame is kept, no file name.",
    )
    return (upload.getvalue(), neutral_name(upload.name)) if upload is not None else None


def predict_video_once(client: ServiceClient, data: bytes, filename: str) -> VideoVerdict | None:
    """The service's verdict on the clip, asked for once per distinct clip per session."""
    digest = hashlib.sha256(data).hexdigest()
    cached = st.session_state.get(VIDEO_RESULT_KEY)
    if cached is not None and cached[0] == digest:
        return cached[1]
    try:
        with st.spinner("Sampling and scoring the clip's frames…"):
            result = client.predict_video(data, filename)
    except ServiceRejectedError as err:
        st.error(f"The service could not score this video: {sentence(err.reason)}", icon="⚠️")
        return None
    except ServiceError as err:
        st.error(f"The detection service is unavailable. {sentence(err)}", icon="🚫")
        return None
    log.info(
        "scored clip %s… (%d frames) as prediction %s",
        digest[:12],
        len(result.frames),
        result.prediction_id,
    )
    st.session_state[VIDEO_RESULT_KEY] = (digest, result)
    return result


def scoring_rule(result: VideoVerdict) -> str:
    """One sentence on how the clip's score was made from its frames."""
    frames = len(result.frames)
    return (
        f"{frames} frame{'s' if frames != 1 else ''} of a {result.duration_s:.1f} s "
        f"{result.width}x{result.height} clip, sampled at {result.sampled_fps:g} per second. "
        f"The clip's score is the {result.quantile:.0%} quantile of their P(fake); "
        f"it is fake from {result.threshold:.1%}."
    )


def show_timeline(data: bytes, result: VideoVerdict) -> None:
    """The per-frame timeline, then the clip (from the strongest frame) beside its heat map."""
    st.subheader("Timeline")
    st.caption(scoring_rule(result))
    st.altair_chart(timeline_chart(result), width="stretch")
    strongest = result.strongest
    player, heat = st.columns(2)
    player.video(data, start_time=math.floor(strongest.t))
    player.caption(f"The clip, from {math.floor(strongest.t)} s (the strongest frame's second)")
    show_heatmap(
        heat,
        strongest.heatmap_png,
        f"Strongest frame at {strongest.t:.2f} s (P(fake) {strongest.prob_fake:.1%}): "
        "Grad-CAM of 'fake' over the scored crop, enlarged; warm areas pushed the model "
        "towards fake",
    )


def video_flow(client: ServiceClient, limits: ServiceSettings) -> None:
    """Upload a clip, score it, show the verdict, its credentials, the timeline, the form."""
    chosen = choose_video(limits.max_video_bytes)
    if chosen is None:
        st.info("Upload a video to see its per-frame timeline and where the evidence is strongest.")
        return
    data, filename = chosen
    result = predict_video_once(client, data, filename)
    if result is None:
        return
    show_verdict(result)
    show_provenance(result)
    show_timeline(data, result)
    feedback_form(client, result, None, limits.max_comment_chars)
