"""The service's OpenAPI document: BentoML's, corrected to describe what the service really does.

BentoML 1.4.40 generates ``/docs.json`` from the API signatures but has no hook to amend it, and
what it generates does not match the service: it documents a 400 body that no layer sends (BentoML
itself answers ``[{"error"}]`` or ``{"error", "detail": [...]}``), leaves out statuses the
routes answer (401, 404, 408, 413, 503, 504), makes request bodies optional, and publishes the
internal batch route. :func:`document_service` rewrites the document once; the upload guard
(:mod:`serving.guard`) serves the result and makes every error body match its one schema.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from typing import Any

from serving.schemas import ErrorOut

#: Name of the error schema in ``components.schemas``.
ERROR_SCHEMA = "Error"
#: Media types of the ``image`` part that the decoder opens (``deepfakenet.imaging``).
IMAGE_MEDIA_TYPES = "image/png, image/jpeg, image/webp, image/gif, image/bmp, image/tiff"
#: Media types of the ``video`` part: the containers ``deepfakenet.video`` accepts.
VIDEO_MEDIA_TYPES = "video/mp4, video/quicktime, video/x-matroska, video/webm, video/x-msvideo"

#: What each error status means, whichever route answers it.
_STATUS_TEXT = {
    400: "The request is malformed: a missing or unexpected field, a body that is not a proper "
    "multipart form or JSON object, an invalid value, an image or video that cannot be decoded, "
    "or a clip that breaks a limit (duration, frames, decode time).",
    401: "The route requires a bearer token (Authorization: Bearer <token>) and none or a wrong "
    "one was sent.",
    404: "No such resource (for feedback: no prediction with this id; for the admin route: "
    "reloading is not enabled on this server).",
    408: "The request body did not arrive within the server's read timeout.",
    409: "The registry's champion cannot be loaded.",
    413: "The request body, the decoded image or a video frame is over the server's limit.",
    500: "The server failed; the log has the details.",
    503: "The server is overloaded or not ready (requests waited longer than the batcher's "
    "latency budget).",
    504: "The request was not processed within the server's traffic timeout.",
}
_IMAGE = (400, 408, 413, 500, 503, 504)
#: Error statuses of each operation, beyond what a route shares with all (500).
_ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("post", "/predict"): _IMAGE,
    ("post", "/features"): _IMAGE,
    ("post", "/explain"): (400, 408, 413, 500, 504),
    ("post", "/predict_video"): _IMAGE,
    ("post", "/feedback"): (400, 404, 408, 413, 500, 504),
    ("get", "/model"): (500, 504),
    ("post", "/admin/reload"): (401, 404, 409, 500, 504),
    ("get", "/readyz"): (500, 503),
}
_REQUIRED_BODIES = ("/predict", "/features", "/explain", "/feedback", "/predict_video")
#: Multipart routes -> their one file part and its media types.
_MULTIPART_ROUTES = {
    "/predict": ("image", IMAGE_MEDIA_TYPES),
    "/features": ("image", IMAGE_MEDIA_TYPES),
    "/explain": ("image", IMAGE_MEDIA_TYPES),
    "/predict_video": ("video", VIDEO_MEDIA_TYPES),
}
#: BentoML's own error components and FastAPI's validation ones, replaced by the one schema.
_REPLACED_SCHEMAS = (
    "InvalidArgument",
    "NotFound",
    "InternalServerError",
    "HTTPValidationError",
    "ValidationError",
)


def _error_response(status: int) -> dict[str, Any]:
    return {
        "description": _STATUS_TEXT[status],
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}}
        },
    }


def document_service(
    spec: dict[str, Any],
    *,
    internal_routes: Iterable[str] = (),
    bearer_routes: Iterable[str] = (),
) -> dict[str, Any]:
    """A corrected copy of BentoML's OpenAPI document of the service.

    Args:
        spec: BentoML's document (``Service.openapi_spec.asdict()``).
        internal_routes: Routes answered only to the in-process client: left out.
        bearer_routes: Routes that require a bearer token (documented as a security scheme
            and a 401).

    Returns:
        The document: one error schema for every 4xx/5xx, every status each route answers,
        required request bodies, the file part's media types.
    """
    doc = copy.deepcopy(spec)
    paths: dict[str, Any] = doc.setdefault("paths", {})
    for route in internal_routes:
        paths.pop(route, None)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in _REPLACED_SCHEMAS:
        schemas.pop(name, None)
    schemas[ERROR_SCHEMA] = ErrorOut.model_json_schema()
    bearer = set(bearer_routes)
    if bearer:
        doc["components"].setdefault("securitySchemes", {})["bearerToken"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "The token the server is configured with.",
        }

    for path, item in paths.items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for status in [s for s in responses if str(s)[0] in "45"]:
                del responses[status]
            statuses = set(_ERRORS.get((method, path), (500,)))
            if path in bearer:
                statuses.add(401)
                operation["security"] = [{"bearerToken": []}]
            for status in sorted(statuses):
                responses[str(status)] = _error_response(status)
            body = operation.get("requestBody")
            if body is not None and path in _REQUIRED_BODIES:
                body["required"] = True
            if body is not None and path in _MULTIPART_ROUTES:
                form = body.get("content", {}).get("multipart/form-data")
                if form is not None:
                    form["schema"]["additionalProperties"] = False
                    field, media_types = _MULTIPART_ROUTES[path]
                    form["encoding"] = {field: {"contentType": media_types}}
    _drop_unreferenced_schemas(doc)
    return doc


def _refs(node: Any) -> Iterator[str]:
    """Names of the component schemas ``node`` refers to."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            yield ref.rsplit("/", 1)[1]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _drop_unreferenced_schemas(doc: dict[str, Any]) -> None:
    """Remove component schemas nothing refers to (the internal route's, BentoML's unused ones).

    BentoML also lists each API's input as a component with the invalid type ``file``; those
    are unreferenced (the request bodies are inline) and go too.
    """
    schemas = doc["components"]["schemas"]
    used: set[str] = set()
    todo = set(_refs(doc["paths"]))
    while todo:
        name = todo.pop()
        if name not in used and name in schemas:
            used.add(name)
            todo.update(_refs(schemas[name]))
    for name in [n for n in schemas if n not in used]:
        del schemas[name]
