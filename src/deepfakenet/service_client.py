"""A small HTTP client of the DeepFakeNet service, for callers that must not load the model.

The detector dashboard talks to the service only through this module, so the page never sees an
``httpx`` exception or a raw error body: every failure becomes one of two named errors whose
message can be shown to a person as it is. :class:`ServiceUnavailableError` means "the service
is not there or broke" (connection refused, timeout, 5xx); :class:`ServiceRejectedError` means
"the service understood and said no" (4xx, with its reason).

Answers arrive as frozen dataclasses: :class:`Explanation` (``/explain``) and
:class:`VideoVerdict` (``/predict_video``). Both carry the upload's C2PA ``provenance`` as the
service sent it (a dict, or None from a service of an earlier release): it is evidence to show
beside the verdict, and :func:`deepfakenet.display.describe_provenance` words it.

The service answers every error as ``{"error": reason}``. Services of earlier releases also
answered ``[{"error": reason}]`` (BentoML's own 4xx) and ``{"detail": reason}`` (the FastAPI
routes); :func:`error_reason` still reads those, so the dashboard works against either.
"""

from __future__ import annotations

import base64
import logging
import mimetypes
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from deepfakenet.errors import DeepFakeNetError
from deepfakenet.security import redact

if TYPE_CHECKING:
    from deepfakenet.settings import DashboardSettings

log = logging.getLogger(__name__)


class ServiceError(DeepFakeNetError):
    """A call to the service did not produce an answer the caller can use."""


class ServiceUnavailableError(ServiceError):
    """The service is unreachable, too slow, or failed on its side (5xx)."""


class ServiceRejectedError(ServiceError):
    """The service refused the request (4xx); ``reason`` is its explanation.

    Attributes:
        status_code: The HTTP status, e.g. 400, 404, 413.
        reason: The service's own words, suitable to show to the person who sent the request.
    """

    def __init__(self, status_code: int, reason: str) -> None:
        super().__init__(f"the service refused the request ({status_code}): {reason}")
        self.status_code = status_code
        self.reason = reason


@dataclass(frozen=True)
class Explanation:
    """The answer of ``POST /explain``.

    Attributes:
        prediction_id: Id to send feedback for this prediction.
        label: ``real`` or ``fake``: the decision at the model's threshold.
        prob_fake: Calibrated probability of ``fake``.
        model_version: Registered model version that scored the image.
        target: Class whose logit Grad-CAM explains.
        heatmap_png: PNG bytes of the heat map over the centre crop the model scored.
        cam: Grad-CAM at the layer's resolution, values in ``[0, 1]``.
        layer: Backbone layer explained.
        provenance: The upload's C2PA content credentials (the service's ``provenance``
            object); None when the service did not send any.
    """

    prediction_id: str
    label: str
    prob_fake: float
    model_version: str
    target: str
    heatmap_png: bytes
    cam: list[list[float]]
    layer: str
    provenance: dict[str, Any] | None = None


@dataclass(frozen=True)
class FramePoint:
    """One scored frame of a clip: its time and its calibrated P(fake)."""

    t: float
    prob_fake: float


@dataclass(frozen=True)
class StrongestFrame:
    """The sampled frame with the highest P(fake) and its Grad-CAM.

    Attributes:
        index: Its position in :attr:`VideoVerdict.frames`.
        t: Its presentation time, in seconds.
        prob_fake: Its calibrated probability of ``fake``.
        heatmap_png: PNG bytes of the Grad-CAM of ``fake`` over the crop the model scored.
    """

    index: int
    t: float
    prob_fake: float
    heatmap_png: bytes


@dataclass(frozen=True)
class VideoVerdict:
    """The answer of ``POST /predict_video``: one verdict on a clip from its sampled frames.

    Attributes:
        prediction_id: Id to send feedback for this clip (as for an image).
        label: ``real`` or ``fake``: the clip's score judged at ``threshold``.
        prob_fake: The clip's score: the ``quantile`` of its frames' P(fake).
        threshold: The clip is ``fake`` when its score reaches this.
        quantile: Which quantile of the frame scores makes the clip's score.
        model_version: Registered model version that scored the frames.
        duration_s: The clip's duration in seconds.
        width: Frame width in pixels.
        height: Frame height in pixels.
        sampled_fps: Frames scored per second of video.
        frames: The timeline, in time order.
        strongest: The frame with the highest P(fake).
        provenance: The upload's C2PA content credentials; None when the service sent none.
    """

    prediction_id: str
    label: str
    prob_fake: float
    threshold: float
    quantile: float
    model_version: str
    duration_s: float
    width: int
    height: int
    sampled_fps: float
    frames: list[FramePoint]
    strongest: StrongestFrame
    provenance: dict[str, Any] | None = None


def error_reason(response: httpx.Response) -> str:
    """The reason of an error response in any of the service's body shapes, else its text."""
    try:
        body: Any = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]
    if isinstance(body, dict):
        for key in ("error", "detail", "message"):
            if isinstance(body.get(key), str):
                return body[key]
    return response.text.strip() or response.reason_phrase


def _provenance(body: dict[str, Any]) -> dict[str, Any] | None:
    """The answer's ``provenance`` object; None when absent or not an object."""
    value = body.get("provenance")
    return dict(value) if isinstance(value, dict) else None


class ServiceClient:
    """Calls ``/model``, ``/explain``, ``/predict_video`` and ``/feedback`` of a running service.

    Each call opens its own short-lived connection: a dashboard makes a handful of calls per
    interaction, and nothing is left open between Streamlit reruns.

    Args:
        base_url: The service's base URL, e.g. ``http://127.0.0.1:3000``.
        timeout_s: Longest wait for one call.
        transport: An ``httpx`` transport to use instead of the network (tests).
        feedback_token: Bearer token sent with ``/feedback`` (a service started with
            ``DEEPFAKENET_FEEDBACK_TOKEN`` answers 401 without it); None sends none.
    """

    def __init__(
        self,
        base_url: str,
        timeout_s: float = 120.0,
        transport: httpx.BaseTransport | None = None,
        feedback_token: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        #: The URL as messages and logs show it (a password in it hidden).
        self.shown_url = redact(self.base_url)
        self.timeout_s = timeout_s
        self._transport = transport
        self._feedback_token = feedback_token or None

    def __repr__(self) -> str:
        token = "***" if self._feedback_token else None
        return f"ServiceClient({self.shown_url!r}, feedback_token={token})"

    @classmethod
    def from_settings(
        cls, settings: DashboardSettings, transport: httpx.BaseTransport | None = None
    ) -> ServiceClient:
        """The client the dashboard settings describe: URL, timeout and feedback token."""
        token = settings.feedback_token.get_secret_value() if settings.feedback_token else None
        return cls(
            settings.service_url,
            settings.service_timeout_s,
            transport=transport,
            feedback_token=token,
        )

    def model_info(self) -> dict[str, Any]:
        """``GET /model``: the model being served (version, alias, input size, ...)."""
        return dict(self._request("GET", "/model"))

    def explain(self, image: bytes, target: str = "predicted") -> Explanation:
        """``POST /explain``: score one image and return the verdict with its Grad-CAM.

        The bytes go as the multipart file field ``image`` with a neutral content type and
        file name: the service decodes the bytes itself and keeps neither.

        Raises:
            ServiceUnavailableError: The service cannot be reached or failed.
            ServiceRejectedError: The service refused the image (not an image, too large, ...).
        """
        body = self._request(
            "POST",
            "/explain",
            files={"image": ("upload", image, "application/octet-stream")},
            data={"target": target},
        )
        try:
            return Explanation(
                prediction_id=str(body["prediction_id"]),
                label=str(body["label"]),
                prob_fake=float(body["prob_fake"]),
                model_version=str(body["model_version"]),
                target=str(body["target"]),
                heatmap_png=base64.b64decode(body["heatmap_png"]),
                cam=[[float(v) for v in row] for row in body["cam"]],
                layer=str(body["layer"]),
                provenance=_provenance(body),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise self._unusable("/explain", err) from err

    def predict_video(self, data: bytes, filename: str = "clip.mp4") -> VideoVerdict:
        """``POST /predict_video``: score a clip's sampled frames; the verdict and its timeline.

        The bytes go as the multipart file field ``video``. Only the extension of ``filename``
        is meant to travel (callers pass a neutral name such as ``clip.webm``): it and the
        content type guessed from it are hints for the container; the service reads the bytes.

        Raises:
            ServiceUnavailableError: The service cannot be reached, failed, or answered without
                a usable result.
            ServiceRejectedError: The service refused the clip (not a video, too long, too
                large, no frames, ...; ``reason`` says which), or it has no such route (404: a
                service of an earlier release).
        """
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        body = self._request(
            "POST", "/predict_video", files={"video": (filename, data, content_type)}
        )
        try:
            strongest = body["strongest"]
            return VideoVerdict(
                prediction_id=str(body["prediction_id"]),
                label=str(body["label"]),
                prob_fake=float(body["prob_fake"]),
                threshold=float(body["threshold"]),
                quantile=float(body["quantile"]),
                model_version=str(body["model_version"]),
                duration_s=float(body["duration_s"]),
                width=int(body["width"]),
                height=int(body["height"]),
                sampled_fps=float(body["sampled_fps"]),
                frames=[FramePoint(float(f["t"]), float(f["prob_fake"])) for f in body["frames"]],
                strongest=StrongestFrame(
                    index=int(strongest["index"]),
                    t=float(strongest["t"]),
                    prob_fake=float(strongest["prob_fake"]),
                    heatmap_png=base64.b64decode(strongest["heatmap_png"]),
                ),
                provenance=_provenance(body),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise self._unusable("/predict_video", err) from err

    def feedback(self, prediction_id: str, label: str, comment: str | None = None) -> str:
        """``POST /feedback``: store a person's label for a prediction; return the feedback id.

        Raises:
            ServiceUnavailableError: The service cannot be reached or failed.
            ServiceRejectedError: Unknown prediction (404), bad label or comment too long (400),
                missing or wrong feedback token (401).
        """
        payload: dict[str, Any] = {"prediction_id": prediction_id, "label": label}
        if comment:
            payload["comment"] = comment
        headers = {}
        if self._feedback_token:
            headers["Authorization"] = f"Bearer {self._feedback_token}"
        body = self._request("POST", "/feedback", json=payload, headers=headers)
        if not isinstance(body, dict) or "feedback_id" not in body:
            raise ServiceUnavailableError(
                f"the service at {self.shown_url} answered /feedback without a feedback id"
            )
        return str(body["feedback_id"])

    def _unusable(self, path: str, err: Exception) -> ServiceUnavailableError:
        """The error for a 2xx answer whose body lacks what the route promises."""
        return ServiceUnavailableError(
            f"the service at {self.shown_url} answered {path} without a usable result "
            f"({err!r}); is it a DeepFakeNet service of a matching version?"
        )

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request; return the JSON body of a 2xx or raise a named error."""
        url = f"{self.base_url}{path}"
        try:
            with httpx.Client(timeout=self.timeout_s, transport=self._transport) as client:
                response = client.request(method, url, **kwargs)
        except httpx.TimeoutException as err:
            raise ServiceUnavailableError(
                f"the service at {self.shown_url} did not answer {path} within {self.timeout_s:g} s"
            ) from err
        except httpx.HTTPError as err:
            raise ServiceUnavailableError(
                f"the service at {self.shown_url} is not reachable ({type(err).__name__}); "
                "is it running? Start it with `make serve`"
            ) from err
        log.debug("%s %s%s -> %d", method, self.shown_url, path, response.status_code)
        if 400 <= response.status_code < 500:
            raise ServiceRejectedError(response.status_code, error_reason(response))
        if response.status_code >= 300:
            raise ServiceUnavailableError(
                f"the service at {self.shown_url} failed on {path} "
                f"({response.status_code}): {error_reason(response)}"
            )
        try:
            return response.json()
        except ValueError as err:
            raise ServiceUnavailableError(
                f"the service at {self.shown_url} answered {path} with a body that is not JSON"
            ) from err
