"""The service's HTTP payloads, importable without a model store (the tests validate them alone).

:mod:`serving.service` builds its routes from these models, so BentoML derives the OpenAPI
document from them; :mod:`serving.openapi` then adds what BentoML cannot express (the one error
schema, every status a route answers, which request bodies are required).
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

if TYPE_CHECKING:
    import torch

#: Bounds of a preprocessed image's side (a crop is the model's input size, e.g. 64 or 224).
MIN_SIDE, MAX_SIDE = 8, 1024


class ErrorOut(BaseModel):
    """The body of every error response of the service (4xx and 5xx), whoever produced it."""

    model_config = ConfigDict(extra="forbid")

    error: str = Field(description="Why the request failed, in words a person can act on.")


class PredictionOut(BaseModel):
    """The verdict on one image."""

    prediction_id: str = Field(description="Id to send feedback for this prediction.")
    label: Literal["real", "fake"] = Field(description="Decision at the model's threshold.")
    prob_fake: float = Field(ge=0, le=1, description="Calibrated probability of 'fake'.")
    model_version: str = Field(description="Registered model version that scored the image.")


class ExplanationOut(PredictionOut):
    """The verdict plus the Grad-CAM of the explained class."""

    target: Literal["real", "fake"] = Field(description="Class whose logit was explained.")
    heatmap_png: str = Field(description="Base64 PNG: the heat map over the scored crop.")
    cam: list[list[float]] = Field(description="Grad-CAM at the layer's resolution, in [0, 1].")
    layer: str = Field(description="Backbone layer explained.")


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


class ScoreItem(BaseModel):
    """One preprocessed image for the internal batch scorer (float32 CHW, base64).

    Validated completely here, base64 included, before the batcher merges it with other
    requests' items: a malformed item is refused on its own (400) instead of failing the whole
    batch and every innocent request in it. The decoded bytes are kept, so validation costs no
    second decode when the batch is scored.
    """

    tensor: str
    shape: tuple[Literal[3], int, int]
    _raw: bytes | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _consistent(self) -> ScoreItem:
        _, height, width = self.shape
        if not (MIN_SIDE <= height <= MAX_SIDE and MIN_SIDE <= width <= MAX_SIDE):
            raise ValueError(f"image sides must be within [{MIN_SIDE}, {MAX_SIDE}] pixels")
        if len(self.tensor) != 16 * height * width:  # base64 of 3*h*w float32 = 12*h*w bytes
            raise ValueError("tensor does not hold 3 x height x width float32 values")
        try:
            self._raw = base64.b64decode(self.tensor, validate=True)
        except (binascii.Error, ValueError) as err:
            raise ValueError(f"tensor is not valid base64: {err}") from err
        if len(self._raw) != 12 * height * width:  # padding can shorten a right-length text
            raise ValueError("tensor does not hold 3 x height x width float32 values")
        return self

    def to_tensor(self) -> torch.Tensor:
        """The CHW float32 tensor."""
        import torch

        raw = self._raw if self._raw is not None else base64.b64decode(self.tensor, validate=True)
        return torch.frombuffer(bytearray(raw), dtype=torch.float32).view(self.shape)

    @classmethod
    def from_tensor(cls, tensor: torch.Tensor) -> ScoreItem:
        """Pack a CHW float32 tensor (trusted: built here, so not validated again)."""
        import torch

        raw = tensor.to(torch.float32).contiguous().numpy().tobytes()
        shape: Any = tuple(tensor.shape)
        return cls.model_construct(tensor=base64.b64encode(raw).decode("ascii"), shape=shape)


class ScoreResult(BaseModel):
    """What the batch scorer returns per item."""

    prob_fake: float
    label: str
    threshold: float
    model_version: str
    features: str  # base64 of 512 float32
