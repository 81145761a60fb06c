"""How library errors become HTTP answers (BentoML exceptions carry the status code)."""

from __future__ import annotations

from http import HTTPStatus

import bentoml
from bentoml.exceptions import BentoMLException, InvalidArgument, NotFound

from deepfakenet.errors import ImageTooLargeError, NotFoundError


class PayloadTooLarge(InvalidArgument):
    """The upload breaks the byte or pixel limit (HTTP 413)."""

    error_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


def client_error(err: Exception) -> BentoMLException:
    """Map a library error to the HTTP error BentoML should answer with (413, 404, else 400)."""
    if isinstance(err, ImageTooLargeError):
        return PayloadTooLarge(str(err))
    if isinstance(err, NotFoundError):
        return NotFound(str(err))
    return InvalidArgument(str(err))


def client_host(ctx: bentoml.Context) -> str | None:
    """The peer address uvicorn saw (X-Forwarded-For is not trusted unless configured)."""
    client = ctx.request.client
    return client.host if client is not None else None
