"""The service's HTTP payloads, importable without a model store (the tests validate them alone).

:mod:`serving.service` builds its routes from these models, so BentoML derives the OpenAPI
document from them; :mod:`serving.openapi` then adds what BentoML cannot express (the one error
schema, every status a route answers, which request bodies are required).
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

if TYPE_CHECKING:
    import torch

#: Bounds of a preprocessed image's side (a crop is the model's input size, e.g. 64 or 224).
MIN_SIDE, MAX_SIDE = 8, 1024


class ErrorOut(BaseModel):
    """The body of every error response of the service (4xx and 5xx), whoever produced it."""

    model_config = ConfigDict(extra="forbid")

    error: str = Field(description="Why the request failed, in words a person can act on.")


class ProvenanceOut(BaseModel):
    """The upload's C2PA content credentials, read before decoding (:mod:`deepfakenet.provenance`).

    Evidence beside the verdict, never a part of it: the verdict is the pixel model's alone.
    """

    manifest_present: bool = Field(description="Whether the upload carries a C2PA manifest.")
    validation_state: Literal["Valid", "Trusted", "Invalid"] | None = Field(
        description="C2PA validation: Valid (intact, signed, signer not among the server's trust "
        "anchors), Trusted (also signed by a trusted authority), Invalid; null without a "
        "manifest."
    )
    failure_codes: list[str] = Field(description="C2PA validation failure codes, if any.")
    claim_generator: str | None = Field(description="What made the active manifest.")
    signer: str | None = Field(description="Who signed the active manifest.")
    digital_source_type: str | None = Field(
        description="Declared IPTC digital source type, e.g. trainedAlgorithmicMedia."
    )
    ai_generated_declared: bool = Field(
        description="The manifest declares the content made by a generative model."
    )
    capture_declared: bool = Field(description="The manifest declares a camera capture.")
    disagrees: bool = Field(
        description="The declaration contradicts the verdict: AI declared (valid signature) but "
        "judged real, or a trusted capture claim but judged fake."
    )


class PredictionOut(BaseModel):
    """The verdict on one image."""

    prediction_id: str = Field(description="Id to send feedback for this prediction.")
    label: Literal["real", "fake"] = Field(description="Decision at the model's threshold.")
    prob_fake: float = Field(ge=0, le=1, description="Calibrated probability of 'fake'.")
    model_version: str = Field(description="Registered model version that scored the image.")
    provenance: ProvenanceOut = Field(description="The upload's C2PA content credentials.")


class ExplanationOut(PredictionOut):
    """The verdict plus the Grad-CAM of the explained class."""

    target: Literal["real", "fake"] = Field(description="Class whose logit was explained.")
    heatmap_png: str = Field(description="Base64 PNG: the heat map over the scored crop.")
    cam: list[list[float]] = Field(description="Grad-CAM at the layer's resolution, in [0, 1].")
    layer: str = Field(description="Backbone layer explained.")


class FramePoint(BaseModel):
    """One sampled frame of a clip on the timeline."""

    t: float = Field(ge=0, description="Presentation time of the frame, in seconds.")
    prob_fake: float = Field(ge=0, le=1, description="Calibrated probability of 'fake'.")


class StrongestFrame(FramePoint):
    """The sampled frame with the highest P(fake), and where the model looked in it."""

    index: int = Field(ge=0, description="Position of the frame in ``frames``.")
    heatmap_png: str = Field(description="Base64 PNG: the Grad-CAM of 'fake' over its crop.")


class VideoPredictionOut(BaseModel):
    """The verdict on one clip: an aggregate of its sampled frames' verdicts."""

    prediction_id: str = Field(description="Id to send feedback for this clip.")
    label: Literal["real", "fake"] = Field(description="Decision on the clip's score.")
    prob_fake: float = Field(
        ge=0, le=1, description="The clip's score: the ``quantile`` of its frames' P(fake)."
    )
    threshold: float = Field(description="The clip is 'fake' when its score reaches this.")
    quantile: float = Field(description="Quantile of the frame scores that makes the clip's.")
    model_version: str = Field(description="Registered model version that scored the frames.")
    duration_s: float = Field(description="The clip's duration, in seconds.")
    width: int
    height: int
    sampled_fps: float = Field(description="Frames scored per second of video.")
    frames: list[FramePoint] = Field(description="The timeline: every scored frame, in order.")
    strongest: StrongestFrame
    provenance: ProvenanceOut = Field(description="The upload's C2PA content credentials.")


class FeaturesOut(BaseModel):
    """The 512-d penultimate-layer vector of one image."""

    prediction_id: str
    features: list[float]
    model_version: str


class FeedbackOut(BaseModel):
    """Where the feedback was stored."""

    feedback_id: str


class ModelOut(BaseModel):
    """The model being served."""

    model_name: str
    model_version: str
    alias: str
    run_id: str
    data_version: str
    source: str
    loaded_at: str
    input_size: int
    threshold: float
    temperature: float
    logit_bias: float
    backend: str = Field(description="What scores: torch, onnx (fp32) or onnx-int8.")
    requested: str = Field(description="The DEEPFAKENET_BACKEND setting.")
    note: str = Field(description="Why the backend differs from the one requested, if it does.")
    int8_parity: dict[str, Any] | None = Field(
        description="The version's int8 parity check on its test split (None: never run)."
    )
    onnx_parity: dict[str, Any] | None = Field(
        description="The fp32 ONNX export's check against torch (None: never run)."
    )
    threads: int | None = Field(description="Intra-op threads of the backend.")
    registry: Literal["off", "ok", "failing"] = Field(
        default="off",
        description="Whether the champion watcher reaches the MLflow registry: off (not "
        "configured), ok, or failing (the model served stays until it answers again).",
    )
    registry_failing_since: str | None = Field(
        default=None, description="When the registry stopped answering (ISO 8601, UTC)."
    )


class ScoreItem(BaseModel):
    """One image's evaluation crop for the internal batch scorer: uint8 CHW pixels, base64.

    The crop is what :func:`deepfakenet.preprocessing.crop` returns; the scorer normalises the
    whole batch at once (:func:`deepfakenet.preprocessing.normalize`). Pixels travel as uint8,
    a quarter of the float32 tensor. Validated completely here, base64 included, before the
    batcher merges it with other requests' items: a malformed item is refused on its own (400)
    instead of failing the whole batch and every innocent request in it. The decoded bytes are
    kept, so validation costs no second decode when the batch is scored.
    """

    pixels: str
    shape: tuple[Literal[3], int, int]
    _raw: bytes | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _consistent(self) -> ScoreItem:
        _, height, width = self.shape
        if not (MIN_SIDE <= height <= MAX_SIDE and MIN_SIDE <= width <= MAX_SIDE):
            raise ValueError(f"image sides must be within [{MIN_SIDE}, {MAX_SIDE}] pixels")
        if len(self.pixels) != 4 * height * width:  # base64 of 3*h*w bytes
            raise ValueError("pixels do not hold 3 x height x width bytes")
        try:
            self._raw = base64.b64decode(self.pixels, validate=True)
        except (binascii.Error, ValueError) as err:
            raise ValueError(f"pixels are not valid base64: {err}") from err
        if len(self._raw) != 3 * height * width:  # padding can shorten a right-length text
            raise ValueError("pixels do not hold 3 x height x width bytes")
        return self

    def to_array(self) -> np.ndarray:
        """The CHW uint8 crop."""
        raw = self._raw if self._raw is not None else base64.b64decode(self.pixels, validate=True)
        return np.frombuffer(raw, dtype=np.uint8).reshape(self.shape)

    @classmethod
    def from_crop(cls, crop: torch.Tensor) -> ScoreItem:
        """Pack a CHW uint8 crop (trusted: built here, so not validated again)."""
        raw = crop.contiguous().numpy().tobytes()
        shape: Any = tuple(crop.shape)
        return cls.model_construct(pixels=base64.b64encode(raw).decode("ascii"), shape=shape)


class ScoreResult(BaseModel):
    """What the batch scorer returns per item."""

    prob_fake: float
    label: str
    threshold: float
    model_version: str
    features: str  # base64 of 512 float32
