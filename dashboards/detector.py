"""Detector page: upload an image or a video (or pick a sample), see the verdict and why.

Everything goes through the service over HTTP (``/model``, ``/explain``, ``/predict_video``,
``/feedback``); this page never loads the model. It only wires the page: the service banner,
then the image flow (:mod:`detector_image`) or the video flow (:mod:`detector_video`); both show
the verdict, the upload's content credentials and the feedback form the same way
(:mod:`detector_verdict`).
"""

from __future__ import annotations

import streamlit as st
from detector_image import image_flow
from detector_verdict import service_info
from detector_video import video_flow

from deepfakenet.service_client import ServiceClient
from deepfakenet.settings import DashboardSettings, ServiceSettings

IMAGE, VIDEO = "Image", "Video"


def main() -> None:
    """Render the page."""
    settings = DashboardSettings()
    limits = ServiceSettings()  # the service's own limits, read from the same variables
    client = ServiceClient.from_settings(settings)
    st.title("Is this image or video a deepfake?")
    info = service_info(client)
    if info is None:
        return
    media = st.radio("Check", [IMAGE, VIDEO], horizontal=True, key="detector.media")
    if media == VIDEO:
        video_flow(client, limits)
        return
    crop = info.get("input_size")
    image_flow(client, int(crop) if crop else None, limits)


main()
